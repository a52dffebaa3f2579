"""End to end for the tied models: TMS and power-model studies through the same stages (real DVC, MLflow,
Lightning) on tiny params in a temp git repo."""

import json

import pytest
from e2e import all_runs, make_repo, ran, sh

pytestmark = pytest.mark.slow

TINY = {
    "defaults": {"worlds": {}, "studies": {}, "saes": {}},
    "tracking": {"experiment": "monosem-test"},
    "saes": {},
    "worlds": {
        "tiny_tms": {"n_features": 6, "d_embed": 6, "eps": 1.0, "task": "tms", "importance_decay": 0.8, "n_eval": 256,
                     "seed": 3},
        "tiny_gauss": {"n_features": 10, "d_embed": 10, "eps": 1.0, "task": "tms", "values": "gaussian",
                       "n_eval": 512, "seed": 4},
    },
    "studies": {
        "TMS1": {"world": "tiny_tms", "model": {"kind": "tms_relu", "neurons": 2},
                 "train": {"steps": 64, "batch_size": 64, "lr": 0.01, "optimizer": "adamw", "weight_decay": 0.01,
                           "log_points": 8},
                 "sweep": {"data.eps": [1.0, 0.3, 0.1]}, "seeds": [0, 1]},
        "TMS3": {"world": "tiny_tms", "model": {"kind": "tms_hidden", "neurons": 3},
                 "train": {"steps": 64, "batch_size": 64, "lr": 0.01, "optimizer": "adamw", "log_points": 8},
                 "sweep": {"data.eps": [1.0, 0.1]}, "seeds": [0, 1]},
        "BOUNDS": {"world": "tiny_gauss", "model": {"kind": "power", "neurons": 2, "power": 3},
                   "train": {"steps": 64, "batch_size": 64, "lr": 0.01, "optimizer": "adamw", "log_points": 8},
                   "sweep": {"model.neurons": [2], "data.eps": [0.02, 0.05, 0.125, 0.3, 0.6]}, "seeds": [0]},
    },
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = make_repo(tmp_path_factory.mktemp("tms"), TINY)
    return repo, sh("dvc repro", repo).stdout


def test_tied_models_run_through_every_stage_with_their_metrics_figures_and_claims(repo):
    repo, out = repo
    assert ran(out) == {"generate@tiny_tms", "generate@tiny_gauss", "report"} | {
        f"{stage}@{study}" for stage in ("train", "measure") for study in TINY["studies"]}
    tms1 = json.loads((repo / "results/TMS1/measured.json").read_text())
    assert tms1["kind"] == "tms_relu" and set(tms1["points"]) == {"eps=1", "eps=0.3", "eps=0.1"}
    row = tms1["instances"]["eps=0.1,seed=0"]
    assert row["density"] == 0.1 and row["dims_per_feature"] == pytest.approx(2 / row["features_learned"])
    assert row["sum_dimensionality"] <= 2 + 1e-4
    feats = tms1["features"]["eps=0.1,seed=0"]
    assert len(feats["norm"]) == len(feats["dimensionality"]) == 6
    for fig in ("matrices.png", "norms.png", "dims_per_feature.png", "feature_dims.png"):
        assert (repo / f"results/TMS1/interp/{fig}").stat().st_size > 10_000
    assert (repo / "results/TMS3/interp/neurons.png").exists()
    tms3 = json.loads((repo / "results/TMS3/measured.json").read_text())["instances"]
    assert all({"lecomte_poly", "weight_share_mean", "n_mono"} <= set(r) for r in tms3.values())
    bounds = json.loads((repo / "results/BOUNDS/measured.json").read_text())["instances"]
    for r in bounds.values():
        assert r["gain_total"] == pytest.approx(r["density"] * 10)  # p·n·μ₂, Gaussian μ₂ = 1
        assert r["gain"] <= r["gain_total"] * 1.5
    assert (repo / "results/BOUNDS/interp/bounds.png").stat().st_size > 10_000
    features = (repo / "results/TMS1/interp/features.csv").read_text().splitlines()
    assert features[0].startswith("label,point,seed,density,feature,importance,norm") and len(features) == 1 + 6 * 6
    claims = {c["id"]: c for c in json.loads((repo / "reports/claims.json").read_text())}
    for cid in ("dims_per_feature_sticky", "sparsity_more_superposition", "gain_within_bounds", "gain_slopes"):
        assert claims[cid]["holds"] in (True, False), claims[cid]
    assert claims["feature_dims_cluster"]["holds"] is None  # TMS2 not run
    assert claims["lr_same_loss_different_mono"]["holds"] is None  # the paper's studies not run either
    report = (repo / "reports/report.md").read_text()
    assert "## TMS1" in report and "figures/TMS1-matrices.png" in report and "figures/BOUNDS-bounds.png" in report
    assert "| TMS3 | tms | tms_hidden |" in report
    # DVC's metrics: each kind's headline per density, the seed mean matching measured.json's
    for study, headline, points in (("TMS1", "dims_per_feature", 3), ("TMS3", "mono_per_neuron", 2), ("BOUNDS", "gain", 5)):
        dvc = json.loads((repo / f"results/{study}/points.json").read_text())
        assert dvc["headline"]["metric"] == headline and len(dvc) == 1 + points
        best = json.loads((repo / f"results/{study}/metrics.json").read_text())
        assert best == {"best": {headline: dvc["headline"]["best"]}}
        measured = json.loads((repo / f"results/{study}/measured.json").read_text())["points"]
        assert all(s[headline] == pytest.approx(measured[p][headline], rel=1e-3) for p, s in dvc.items() if p != "headline")
    assert (repo / "results/BOUNDS/sweep.csv").read_text().splitlines()[1].endswith(",data.eps,gain L̃")


def test_every_tied_model_is_a_finished_mlflow_run_with_final_geometry(repo):
    repo, _ = repo
    runs = all_runs(repo)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 6 + 4 + 5 and all(r.info.status == "FINISHED" for r in runs)
    power = [r for r in children if r.data.tags["dvc.stage"] == "train@BOUNDS"]
    assert all({"final.gain", "final.dims_per_feature", "final.gain_order_upper", "loss"} <= set(r.data.metrics)
               for r in power)
