"""The generated profiles (profiles/make.py): each follows its rule from params.yaml and is up to date, and the
scale ladder's judgement along the rungs, by hand-made cases and by a real `dvc repro` of a tiny ladder."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import yaml
from e2e import TINY, make_repo, ran, sh

from monosem.analysis.stats import FAILS, HOLDS, UNSURE
from monosem.claims import evaluate
from monosem.claims.ladder import ladder, margin, rungs
from monosem.params import load_params, parse_params

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("make_profiles", ROOT / "profiles" / "make.py")
make = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make)
sys.path.insert(0, str(Path(__file__).parent))
from test_claims import study  # noqa: E402


def test_the_generated_profiles_are_up_to_date_with_params_yaml():
    out = sh(f"{sys.executable} profiles/make.py --check", ROOT, check=False)
    assert out.returncode == 0, out.stderr


def test_the_regime_profile_is_the_default_plus_the_calibration():
    default, regime = load_params(ROOT / "params.yaml"), load_params(ROOT / "profiles" / "regime.yaml")
    assert not [n for n in default.studies if n.startswith("CAL")]
    assert set(regime.studies) - set(default.studies) == {"CAL_S", "CAL_L"}
    assert all(regime.studies[n] == s for n, s in default.studies.items())
    assert len(regime.studies["CAL_S"].instances()) + len(regime.studies["CAL_L"].instances()) == 180


def test_the_ladder_scales_every_table1_study_by_the_rule():
    default, lad = load_params(ROOT / "params.yaml"), load_params(ROOT / "profiles" / "ladder.yaml")
    assert set(lad.studies) == {f"{s}_n{n}" for s in make.TABLE1 for n in (64, 128, 256)}
    for name in make.TABLE1:
        base, base_world = default.studies[name], default.worlds[default.studies[name].world]
        for n, steps in ((64, 2**11), (128, 2**12), (256, 2**13)):
            s = lad.studies[f"{name}_n{n}"]
            w = lad.worlds[s.world]
            assert (w.n_features, w.d_embed, w.eps, w.distribution, w.task) == (
                n, n // 4, base_world.eps, base_world.distribution, base_world.task)
            assert s.train.steps == steps and s.train.t_max == 512 and len(s.seeds) >= max(3, len(base.seeds))
            for a, b in zip(s.instances(), base.instances()):  # same sweep points, same seeds
                assert (a.train.lr, a.train.bias_decay, a.train.bias_offset, a.train.l1, a.data.eps, a.seed) == (
                    b.train.lr, b.train.bias_decay, b.train.bias_offset, b.train.l1, b.data.eps, b.seed)
                assert a.model.neurons == b.model.neurons * n // 128  # k/N fixed
                assert a.model.neurons * a.train.batch_size == b.model.neurons * b.train.batch_size  # B·k fixed


def test_margin_is_how_far_the_effect_lies_inside_the_criterion():
    assert margin(0.3, [0.0, None]) == pytest.approx(0.3)  # above 0
    assert margin(1.1, [None, 1.05]) == pytest.approx(-0.05)  # below 1.05: 0.05 outside
    assert margin(0.5, [0.25, 0.75]) == pytest.approx(0.25) and margin(0.2, [0.25, 0.75]) == pytest.approx(-0.05)
    assert margin(None, [0.0, None]) is None and margin(float("nan"), [0.0, None]) is None


def _rg1(gain: float, seeds: int = 4) -> dict:
    return study([{"sweep.train.l1": v, "seed": s, "mono_per_feature": 0.2 + (gain if v else 0) + 0.01 * (s % 2)}
                  for v in (0.0, 0.01) for s in range(seeds)])


@pytest.mark.parametrize("gains, first, trend", [
    ((-0.1, 0.05, 0.2), 128, "toward, monotonic"),  # the L1 gain appears with size
    ((0.2, 0.1, -0.1), 64, "away, monotonic"),
    ((0.0, 0.2, 0.1), 128, "toward")])  # up, then down: larger at the top than at the bottom, not monotonic
def test_the_ladder_finds_the_smallest_rung_holding_and_the_trend(gains, first, trend):
    studies = {f"RG1_n{n}": _rg1(g) for n, g in zip((64, 128, 256), gains)}
    assert list(rungs(studies)) == [64, 128, 256] and set(rungs(studies)[64]) == {"RG1"}
    rows = {r["id"]: r for r in ladder({n: evaluate(s) for n, s in rungs(studies).items()})}
    assert set(rows) == {"lr_same_loss_different_mono", "bias_trick_more_mono_no_loss_cost", "mono_negative_bias",
                         "width_raises_mono", "density_lowers_mono", "bias_scales_sqrt_eps", "l1_raises_mono",
                         "other_tasks"}  # the Table 1 claims, whether or not their studies ran
    l1 = rows["l1_raises_mono"]
    assert l1["smallest_holding"] == first and l1["trend"] == trend
    assert [l1["rungs"][n]["verdict"] for n in ("64", "128", "256")] == [
        HOLDS if g > 0.02 else FAILS if g < -0.02 else UNSURE for g in gains]
    assert l1["rungs"]["256"]["margins"]["effect"][0] == pytest.approx(l1["rungs"]["256"]["effect"])
    assert rows["other_tasks"]["trend"] == "n/a" and rows["other_tasks"]["smallest_holding"] is None


@pytest.mark.slow
def test_a_tiny_ladder_and_calibration_run_through_dvc_to_the_report(tmp_path):
    """The ladder rule and the regime rule applied to the tiny params (rungs N 4, 8, 16 around the tiny N 8,
    and one calibration study): every stage runs, the report judges the Table 1 claims at each rung."""
    tiny = yaml.safe_load(TINY.read_text())
    tiny["saes"] = {}
    params = make.ladder(tiny, rungs={4: 32, 8: 64, 16: 128}, base_n=8, names=["LR1", "LR3"])
    params = make.regime(params, {"worlds": {"cal": tiny["worlds"]["tiny"]}, "studies": {"CAL_T": {
        "world": "cal", "model": {"neurons": 16}, "train": {"steps": 64, "batch_size": 32, "lr": 0.01, "t_max": 8},
        "sweep": {"train.bias_offset,train.bias_decay": [[0.0, 0.0], [-1.0, 0.5]], "train.steps": [32, 64]},
        "seeds": [0, 1, 2]}}})
    params["tracking"] = tiny["tracking"]
    parse_params(params)
    repo = make_repo(tmp_path, params)
    sh("dvc repro", repo)
    rows = {r["id"]: r for r in json.loads((repo / "reports/ladder.json").read_text())}
    trick = rows["bias_trick_more_mono_no_loss_cost"]
    assert set(trick["rungs"]) == {"4", "8", "16"} and all(r["verdict"] for r in trick["rungs"].values())
    assert trick["rungs"]["8"]["effect"] is not None and trick["trend"] in (
        "toward", "away", "mixed", "toward, monotonic", "away, monotonic", "n/a")
    report = (repo / "reports/report.md").read_text()
    assert "## The scale ladder" in report and "## The bias trick's regime" in report
    assert (repo / "reports/figures/ladder.png").stat().st_size > 10_000
    assert (repo / "reports/figures/regime.png").stat().st_size > 10_000


def test_the_seed_rule_asks_for_the_seeds_that_decide_each_part_with_margin():
    spec = importlib.util.spec_from_file_location("seeds", ROOT / "profiles" / "seeds.py")
    seeds = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(seeds)
    # h = 0.1 at 3 seeds, effect 0.2 above 0: 3·(0.2/0.2)² = 3; effect 0.1: 3·(0.2/0.1)² = 12
    assert seeds.needed(0.2, [0.1, 0.3], [0.0, None]) == 3 and seeds.needed(0.1, [0.0, 0.2], [0.0, None]) == 12
    assert seeds.needed(1.0, [0.9, 1.1], [None, 1.05]) == 3 * 4 ** 2  # 0.05 from the bound 1.05
    assert seeds.needed(0.5, [float("nan"), 0.6], [0.0, None]) == seeds.HIGH
    claims = [{"id": "bias_trick_more_mono_no_loss_cost", "family": "paper", "studies": ["LR1", "LR3"],
               "effect": {"LR3.mono_gain": 0.112, "LR3.loss_ratio": 0.9},
               "ci95": {"LR3.mono_gain": [0.003, 0.231], "LR3.loss_ratio": [0.85, 0.95]},
               "target": {"LR3.mono_gain": [0.0, None], "LR3.loss_ratio": [None, 1.05]}},
              {"id": "l1_raises_mono", "family": "paper", "studies": ["RG1"], "effect": 0.5, "ci95": [0.4, 0.6],
               "target": [0.0, None]},
              {"id": "density_mono", "family": "paper", "studies": ["E1"], "effect": 0.1, "ci95": [0.0, 0.2],
               "target": [0.0, None]},
              {"id": "noise_bias_tracks_sigma", "family": "interventions", "studies": ["NOISE"], "effect": None}]
    got = seeds.rule(claims)
    # 3·(2·0.114/0.112)² = 12.4, clipped to the cap 4, raised to claims 1-2's floor 5, shared by the pair
    assert got["LR3"][0] == got["LR1"][0] == 5
    assert got["E1"][0] == seeds.HIGH == 4  # asks 12, clipped to the cap
    assert got["RG1"][0] == 3 and "NOISE" not in got


def test_the_paper_smoke_profile_is_the_paper_profile_but_for_its_steps():
    paper, smoke = load_params(ROOT / "profiles" / "paper.yaml"), load_params(ROOT / "profiles" / "paper-smoke.yaml")
    assert paper.worlds == smoke.worlds and paper.runtime == smoke.runtime and set(paper.studies) == set(smoke.studies)
    for name, st in paper.studies.items():
        cut = st.model_copy(update={"train": st.train.model_copy(update={"steps": make.SMOKE_STEPS}),
                                    "sweep": {k: ([make.SMOKE_STEPS] if k == "train.steps" else v)
                                              for k, v in st.sweep.items()}})
        assert smoke.studies[name] == cut, name
    for name, sae in paper.saes.items():
        assert smoke.saes[name] == sae.model_copy(update={"train": sae.train.model_copy(
            update={"steps": make.SMOKE_STEPS})}), name


def test_a_paper_shaped_study_runs_every_stage_kind_to_the_report(tmp_path):
    """The paper profile cut to one model and two SAE architectures at its own shapes (N 512, m 64, k 1024,
    B 8192, 8192 held-out samples, 2048 SAE latents on the 1024-wide hidden layer), 2 steps each: every stage
    kind runs through `dvc repro` to the report and the explorer, and records its cost."""
    params = yaml.safe_load((ROOT / "profiles" / "paper-smoke.yaml").read_text())
    lr1 = params["studies"]["LR1"] | {"seeds": [0], "sweep": {"train.lr": [0.003]}}
    lr1["train"] = lr1["train"] | {"steps": 2}
    sae = params["saes"]["SAE_HIDDEN"]
    sae = sae | {"architectures": {"relu": sae["architectures"]["relu"][:1], "topk": sae["architectures"]["topk"][:1]},
                 "seeds": [0], "train": sae["train"] | {"steps": 2}}
    params |= {"worlds": {"uniform": params["worlds"]["uniform"]}, "studies": {"LR1": lr1},
               "saes": {"SAE_HIDDEN": sae}}
    parse_params(params)
    repo = make_repo(tmp_path, params)
    out = sh("dvc repro", repo)
    log = out.stdout + out.stderr
    assert ran(log) == {"generate@uniform", "train@LR1", "measure@LR1", "sae@SAE_HIDDEN",
                               "report"}
    measured = json.loads((repo / "results/LR1/measured.json").read_text())
    assert measured["n_features"] == 512 and len(measured["instances"]) == 1
    costs = [json.loads(line) for line in (repo / ".monosem/stages.jsonl").read_text().splitlines()]
    assert {c["stage"] for c in costs} == ran(log)
    assert (repo / "reports/explorer/index.html").exists() and "## LR1" in (repo / "reports/report.md").read_text()
