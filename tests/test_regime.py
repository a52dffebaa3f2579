"""The bias trick's calibration: cells, their effect and interval, and the figure."""

import pytest

from monosem.analysis import regime
from monosem.plots.regime import regime_plot


def rows(mono_plain, mono_trick, steps=(1024, 2048), seeds=(0, 1, 2)):
    out = []
    for s in steps:
        for seed in seeds:
            out.append({"seed": seed, "diverged_at": None, "sweep.train.steps": s, "sweep.train.bias_offset": 0.0,
                        "sweep.train.bias_decay": 0.0, "mono_per_feature": mono_plain[seed], "loss": 1.0})
            out.append({"seed": seed, "diverged_at": "", "sweep.train.steps": s, "sweep.train.bias_offset": -1.0,
                        "sweep.train.bias_decay": 0.3, "mono_per_feature": mono_trick[seed], "loss": 1.1})
    return out


def test_a_cell_pairs_the_trick_with_the_plain_model_by_seed():
    cells = regime.cells(rows([0.1, 0.2, 0.3], [0.5, 0.5, 0.9]), lr=0.01, steps=4096, batch=128, size="N 8")
    assert [c["steps"] for c in cells] == [1024, 2048]
    c = cells[0]
    assert c["delta"] == pytest.approx((0.4 + 0.3 + 0.6) / 3) and c["loss_ratio"] == pytest.approx(1.1)
    assert 0.3 <= c["delta_lo"] <= c["delta"] <= c["delta_hi"] <= 0.6 + 1e-12  # within the paired differences
    assert c["E"] == pytest.approx(0.3 * 0.01 * 1024 / 2) and c["R"] == pytest.approx(0.01 * 1024 / 2)
    assert (c["batch"], c["d"], c["seeds"]) == (128, 0.3, 3)


def test_a_diverged_instance_leaves_its_seed_out(tmp_path):
    data = rows([0.1, 0.2, 0.3], [0.5, 0.5, 0.9], steps=(1024,))
    data[1]["diverged_at"] = 17  # the trick's seed 0
    (cell,) = regime.cells(data, lr=0.01, steps=4096, batch=128, size="N 8")
    assert cell["seeds"] == 2 and cell["delta"] == pytest.approx((0.3 + 0.6) / 2)
    regime_plot([cell], tmp_path / "regime.png")
    assert (tmp_path / "regime.png").stat().st_size > 10_000
