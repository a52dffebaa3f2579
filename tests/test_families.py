"""A new model kind is one file: a family defined and registered outside the library, named in
MONOSEM_PLUGINS, passes through every stage of a real `dvc repro`; without it the kind is refused."""

import json

import pytest
from e2e import make_repo, ran, sh, tiny

pytestmark = pytest.mark.slow

PLUGIN = '''
from monosem.toy.families import Decoder, register


class Renamed(Decoder):
    """The paper's decoder under a kind of its own, with its own description and DVC headline."""

    kinds = ("test_decoder",)
    dvc_metrics = (("loss",), ("diverged",), "loss")

    def describe(self, cfg):
        return f"test decoder of {cfg.neurons} neurons"


register(Renamed())
'''


def test_a_family_in_one_file_passes_through_every_stage(tmp_path):
    def edit(params):
        params["studies"]["LR1"]["model"]["kind"] = "test_decoder"

    (tmp_path / "repo").mkdir()
    repo = make_repo(tmp_path / "repo", tiny(["LR1"], edit))
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "test_family.py").write_text(PLUGIN)
    refused = sh("dvc repro", repo, check=False)
    assert refused.returncode != 0 and "model kind 'test_decoder'" in refused.stdout + refused.stderr

    out = sh("dvc repro", repo, env={"MONOSEM_PLUGINS": "test_family", "PYTHONPATH": str(tmp_path / "plugins")})
    assert {"train@LR1", "measure@LR1", "report"} <= ran(out.stdout + out.stderr)
    measured = json.loads((repo / "results/LR1/measured.json").read_text())
    assert measured["kind"] == "test_decoder" and len(measured["instances"]) == 4
    assert json.loads((repo / "results/LR1/points.json").read_text())["headline"]["metric"] == "loss"
    assert list(json.loads((repo / "results/LR1/metrics.json").read_text())["best"]) == ["loss"]
    assert len(json.loads((repo / "results/LR1/interp/summary.json").read_text())) == 4
    assert "test decoder of 16 neurons" in (repo / "reports/report.md").read_text()
