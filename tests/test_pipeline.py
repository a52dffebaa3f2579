"""End to end: real `dvc repro` on tiny params in a temp git repo, real MLflow store, real Lightning."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def sh(cmd, cwd, check=True):
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                        "DVC_NO_ANALYTICS": "true", "MLFLOW_DISABLE_TELEMETRY": "true"}
    for var in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_STAGE", "DVC_EXP_NAME"):
        env.pop(var, None)
    out = subprocess.run(cmd, cwd=cwd, env=env, shell=True, capture_output=True, text=True)
    if check and out.returncode != 0:
        raise AssertionError(f"{cmd} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


def ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("e2e")
    for name in ("dvc.yaml", ".gitignore", "pipeline", "src", ".dvc"):
        src = ROOT / name
        (shutil.copytree(src, repo / name, ignore=shutil.ignore_patterns("tmp", "cache", "__pycache__"))
         if src.is_dir() else shutil.copy(src, repo / name))
    shutil.copy(ROOT / "tests" / "tiny_params.yaml", repo / "params.yaml")
    sh("git init -q && git add -A && git -c user.name=t -c user.email=t@t commit -qm init", repo)
    first = sh("dvc repro", repo)
    return repo, first.stdout


def client(repo):
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    exp = c.get_experiment_by_name("monosem-test")
    return c, exp


def all_runs(repo):
    c, exp = client(repo)
    return c.search_runs([exp.experiment_id], max_results=1000)


def test_repro_produces_every_output(repo):
    repo, out = repo
    assert ran(out) == {"generate@tiny", "generate@tiny_abs", "report"} | {
        f"{stage}@{study}" for stage in ("train", "measure", "interpret") for study in ("LR1", "LR3", "LR5", "NOISE", "K1")}
    assert (repo / "data/worlds/tiny/world.safetensors").exists()
    for study in ("LR1", "LR3"):
        metrics = json.loads((repo / f"results/{study}/metrics.json").read_text())
        assert set(metrics["points"]) == {"lr=0.003", "lr=0.03"}
        assert len(metrics["instances"]) == 4
        assert all(-1 <= r["mono_scale_vs_frac_mono_spearman"] <= 1 for r in metrics["instances"].values()
                   if r["mono_scale_vs_frac_mono_spearman"] is not None)
        for fig in ("training.png", "sfa.png", "bias.png", "mono_sweep.png"):
            assert (repo / f"results/{study}/interp/{fig}").stat().st_size > 10_000
        assert len(list((repo / f"results/{study}/interp/neurons").glob("*.csv"))) == 4
    for kind in ("decomposition", "spectrum", "instances"):
        assert len(list((repo / f"results/LR3/interp/{kind}").glob("*.png"))) == 2  # first seed of each point
    summary = json.loads((repo / "results/LR5/interp/summary.json").read_text())
    assert len(summary) == 2 and all("abs_features_pair" in s and "poly_r2_rank_m" in s for s in summary.values())
    claims = json.loads((repo / "reports/claims.json").read_text())
    assert {c["id"] for c in claims} >= {"lr_same_loss_different_mono", "bias_trick_more_mono_no_loss_cost",
                                         "poly_linear_low_rank_plus_offset", "mono_thresholded_per_feature"}
    assert all(set(c) >= {"claim", "holds", "evidence"} and c["holds"] in (True, False, None) for c in claims)
    report = (repo / "reports/report.md").read_text()
    assert "## LR1" in report and "figures/LR1-training.png" in report and (repo / "reports/figures/LR1-sfa.png").exists()
    assert "## The residual polysemantic neurons" in report and "ReLU(v)/ReLU(−v) pair" in report
    assert (repo / "reports/figures/LR5-decomposition.png").exists()
    noise = json.loads((repo / "results/NOISE/metrics.json").read_text())["instances"]
    assert all((r["noise_change_poly"] is None) == (r["sweep.train.noise_std"] == 0) for r in noise.values()
               if r["n_poly"] > 0)
    assert (repo / "results/NOISE/interp/noise.png").stat().st_size > 10_000
    assert next(c for c in claims if c["id"] == "noise_bias_tracks_sigma")["holds"] in (True, False)
    assert "## Beyond the paper" in report and "figures/NOISE-noise.png" in report
    widths = json.loads((repo / "results/K1/metrics.json").read_text())
    assert list(widths["points"]) == ["neurons=8,batch_size=64,eps=0.125", "neurons=8,batch_size=64,eps=0.25",
                                      "neurons=16,batch_size=32,eps=0.125", "neurons=16,batch_size=32,eps=0.25"]
    weights = (repo / "models/K1/weights.safetensors")
    from safetensors import safe_open
    with safe_open(weights, "pt") as fh:
        assert fh.get_slice("neurons=8,batch_size=64,eps=0.125,seed=0/W1").get_shape() == [8, 4]
    assert (repo / "results/K1/interp/mono_sweep.png").exists()
    assert next(c for c in claims if c["id"] == "width_raises_mono")["evidence"].startswith("K1: Spearman")
    assert "| K1 | decoder | relu | uniform | Var | Var |" in report  # the study table names what is swept
    assert "peak #mono/#features in training |" in report and " @ 2^" in report
    shown = sh("dvc metrics show --json", repo).stdout
    assert "mono_per_feature" in shown


def test_one_mlflow_run_per_model_under_a_parent_with_metrics_and_figures(repo):
    repo, _ = repo
    c, _ = client(repo)
    runs = all_runs(repo)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 5 and len(children) == 22
    assert all(r.info.status == "FINISHED" for r in runs)
    manifest = json.loads((repo / "models/LR1/instances.json").read_text())
    ids = {e["run_id"] for e in manifest["instances"]}
    assert ids <= {r.info.run_id for r in children}
    run = c.get_run(manifest["instances"][0]["run_id"])
    assert run.data.tags["mlflow.parentRunId"] == manifest["parent_run_id"]
    assert run.data.params["train.lr"] == "0.003" and run.data.params["world.eps"] == "0.25"
    assert run.data.params["seed"] == "0" and run.data.params["sweep.train.lr"] == "0.003"
    for tag in ("dvc.stage", "dvc.exp_name", "dvc.baseline_rev", "git.commit", "monosem.input_hash"):
        assert tag in run.data.tags
    assert run.data.tags["dvc.stage"] == "train@LR1"
    assert {"loss", "mono_per_feature", "mean_bias", "final.loss", "final.mono_per_feature",
            "interp.poly_r2_rank_m", "interp.n_mono_at_0.99"} <= set(run.data.metrics)
    assert len(c.get_metric_history(run.info.run_id, "loss")) >= 8
    artifacts = {a.path for kind in ("table", "figure", "decomposition", "spectrum", "summary")
                 for a in c.list_artifacts(run.info.run_id, f"interp/{kind}")}
    label = manifest["instances"][0]["label"]
    assert {f"interp/table/{label}.csv", f"interp/decomposition/{label}.png", f"interp/spectrum/{label}.png",
            f"interp/figure/{label}.png", f"interp/summary/{label}.json"} == artifacts
    assert [a.path for a in c.list_artifacts(run.info.run_id, "model")] == ["model/model.safetensors"]
    exp = client(repo)[1]
    assert exp.tags.get("mlflow.experimentKind") == "custom_model_development"


def test_editing_one_study_reruns_only_that_study_and_the_report(repo):
    repo, _ = repo
    before = len(all_runs(repo))
    assert "up to date" in sh("dvc repro", repo).stdout  # nothing changed: nothing runs, no new runs
    assert len(all_runs(repo)) == before
    lr1_metrics = (repo / "results/LR1/metrics.json").read_bytes()

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["studies"]["LR3"]["train"]["steps"] = 48
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = sh("dvc repro", repo).stdout
    assert ran(out) == {"train@LR3", "measure@LR3", "interpret@LR3", "report"}
    assert (repo / "results/LR1/metrics.json").read_bytes() == lr1_metrics
    assert len(all_runs(repo)) == before + 1 + 4  # a new parent and one run per LR3 instance


def test_editing_a_world_reruns_it_and_only_the_studies_trained_on_it(repo):
    repo, _ = repo
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["worlds"]["tiny_abs"]["seed"] = 7
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = sh("dvc repro", repo).stdout
    assert ran(out) == {"generate@tiny_abs", "train@LR5", "measure@LR5", "interpret@LR5", "report"}


def test_a_diverging_instance_is_flagged_and_every_stage_still_completes(repo):
    repo, _ = repo
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["studies"]["LR1"]["sweep"]["train.lr"] = [0.003, 1e30]
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("dvc repro", repo)
    metrics = json.loads((repo / "results/LR1/metrics.json").read_text())
    assert metrics["points"]["lr=1e+30"]["diverged"] == 2 and metrics["points"]["lr=0.003"]["diverged"] == 0
    manifest = json.loads((repo / "models/LR1/instances.json").read_text())
    c, _ = client(repo)
    status = {e["label"]: c.get_run(e["run_id"]).info.status for e in manifest["instances"]}
    assert status == {"lr=0.003,seed=0": "FINISHED", "lr=0.003,seed=1": "FINISHED",
                      "lr=1e+30,seed=0": "FAILED", "lr=1e+30,seed=1": "FAILED"}
    assert "(2 diverged)" in (repo / "reports/report.md").read_text()


def test_bad_param_stops_before_training_with_one_line_and_no_running_runs(repo):
    repo, _ = repo
    before = len(all_runs(repo))
    lr3 = (repo / "models/LR3/weights.safetensors").read_bytes()
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["studies"]["LR1"]["train"]["lr"] = -1
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = sh("dvc repro train@LR1", repo, check=False)
    assert out.returncode != 0
    assert "error: params.yaml: studies.LR1.train.lr = -1: Input should be greater than 0" in out.stderr
    runs = all_runs(repo)
    assert len(runs) == before and not [r for r in runs if r.info.status == "RUNNING"]
    assert (repo / "models/LR3/weights.safetensors").read_bytes() == lr3


def test_sigterm_during_training_marks_runs_killed_and_writes_no_manifest(repo):
    import signal
    import time

    repo, _ = repo
    params = yaml.safe_load((ROOT / "tests" / "tiny_params.yaml").read_text())
    params["studies"]["LR1"]["train"]["steps"] = 200_000
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.rmtree(repo / "models" / "LR1", ignore_errors=True)
    before = {r.info.run_id for r in all_runs(repo)}
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen([sys.executable, "pipeline/train.py", "LR1"], cwd=repo, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until training has started: all 5 runs exist
        if len({r.info.run_id for r in all_runs(repo)} - before) == 5:
            break
        time.sleep(0.5)
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) != 0
    new = [r for r in all_runs(repo) if r.info.run_id not in before]
    assert len(new) == 5 and all(r.info.status == "KILLED" for r in new)
    assert not (repo / "models/LR1/instances.json").exists()
