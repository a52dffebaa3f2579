"""Reliability end to end (issue: hardening): determinism, an unreachable tracking server, parallel
queued experiments, interruption and resuming, on a tiny two-study pipeline in a temp git repo."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from e2e import all_runs, client, make_repo, sh, tiny, write_params

pytestmark = pytest.mark.slow
STUDIES = ("LR1", "LR3")


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = make_repo(tmp_path_factory.mktemp("reliability"), tiny(STUDIES))
    sh("dvc repro", repo)
    return repo, None


def tiny_params(repo, edit=None):
    write_params(repo, tiny(STUDIES, edit))


def test_same_params_and_seeds_give_bit_identical_metrics_and_a_new_seed_changes_them(repo):
    repo, _ = repo
    first = (repo / "results/LR1/measured.json").read_bytes()
    sh("dvc repro -f -s train@LR1 && dvc repro -f -s measure@LR1", repo)  # trained and measured again
    assert (repo / "results/LR1/measured.json").read_bytes() == first
    tiny_params(repo, lambda p: p["studies"]["LR1"].update(seeds=[0, 7]))
    sh("dvc repro measure@LR1", repo)
    before = json.loads(first)["instances"]
    after = json.loads((repo / "results/LR1/measured.json").read_text())["instances"]
    for lr in ("0.003", "0.03"):  # seed 0 keeps its numbers; seed 7 is not seed 1
        assert after[f"lr={lr},seed=0"]["loss"] == pytest.approx(before[f"lr={lr},seed=0"]["loss"], rel=1e-5)
        assert after[f"lr={lr},seed=7"]["loss"] != pytest.approx(before[f"lr={lr},seed=1"]["loss"], rel=1e-3)


def test_an_unreachable_tracking_server_fails_stages_fast_and_writes_nothing(repo):
    repo, _ = repo  # LR1 trained and measured (by the test before, or the fixture)
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                        "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}  # nothing listens on the discard port
    metrics = (repo / "results/LR1/measured.json").read_bytes()
    report = (repo / "reports/report.md").read_bytes()
    out = subprocess.run([sys.executable, "pipeline/report.py"], cwd=repo, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 1 and out.stderr.strip().splitlines()[-1].startswith("error: tracking store http://127.0.0.1:9 ")
    assert (repo / "reports/report.md").read_bytes() == report
    shutil.rmtree(repo / "results/LR1/interp", ignore_errors=True)
    for stage in ("measure", "train"):
        if stage == "train":
            shutil.rmtree(repo / "models/LR1")
        start = time.time()
        out = subprocess.run([sys.executable, f"pipeline/{stage}.py", "LR1"], cwd=repo, env=env,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 1 and time.time() - start < 60, (stage, out.stderr[-2000:])
        assert out.stderr.strip().splitlines()[-1].startswith("error: tracking store http://127.0.0.1:9 "), stage
    assert (repo / "results/LR1/measured.json").read_bytes() == metrics  # untouched: the store is checked first
    assert not (repo / "results/LR1/interp").exists() and not (repo / "models/LR1").exists()
    sh("dvc repro", repo)  # and it recovers (here from DVC's run cache)
    assert (repo / "models/LR1/instances.json").exists() and (repo / "results/LR1/interp/summary.json").exists()


def test_queued_experiments_run_two_at_a_time_and_log_into_the_root_store(repo):
    repo, _ = repo
    tiny_params(repo)
    sh("dvc repro && git add -A && git -c user.name=t -c user.email=t@t commit -qm baseline", repo)
    names = ["decay-low", "decay-high"]
    for name, decay in zip(names, (1.0, 3.0)):
        sh(f"dvc exp run --queue -n {name} -S studies.LR3.train.bias_decay={decay}", repo)
    sh("dvc queue start -j 2", repo)
    deadline = time.time() + 480
    while time.time() < deadline:
        status = sh("dvc queue status", repo).stdout
        if not re.search(r"\b(Queued|Running)\b", status):
            break
        time.sleep(3)
    sh("dvc queue stop", repo, check=False)
    assert status.count("Success") == 2, status
    runs = all_runs(repo)
    for name in names:
        mine = [r for r in runs if r.data.tags.get("dvc.exp_name") == name]
        assert len(mine) == 1 + 4 + 1 and all(r.info.status == "FINISHED" for r in mine), name  # LR3, the report
        assert {r.data.tags["dvc.stage"] for r in mine} == {"train@LR3", "report"}
    assert not list(repo.glob(".dvc/tmp/exps/**/mlflow.db"))  # nothing was logged to a temporary copy


def test_sigterm_during_training_marks_runs_killed_and_writes_no_manifest(repo):
    repo, _ = repo
    tiny_params(repo, lambda p: p["studies"]["LR1"]["train"].update(steps=200_000))
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


def test_an_interrupted_training_stage_resumes_from_its_checkpoint_to_the_same_result(repo):
    repo, _ = repo

    def long(resume):
        def edit(p):
            p["studies"]["LR1"]["train"]["steps"] = 4000
            p["runtime"] = {"checkpoint_every": 128, "resume": resume}
        return edit

    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    train = [sys.executable, "pipeline/train.py", "LR1"]
    tiny_params(repo, long(resume=False))
    subprocess.run(train, cwd=repo, env=env, check=True, capture_output=True)  # uninterrupted
    weights, curves = (repo / "models/LR1/weights.safetensors").read_bytes(), (repo / "models/LR1/curves.csv").read_text()
    assert not (repo / "models/LR1/checkpoint").exists()  # removed once the outputs are complete

    shutil.rmtree(repo / "models/LR1")
    ckpt = repo / "models/LR1/checkpoint/group0.safetensors"
    proc = subprocess.Popen(train, cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) != 0 and ckpt.exists()
    assert not (repo / "models/LR1/weights.safetensors").exists()

    tiny_params(repo, long(resume=True))
    out = subprocess.run(train, cwd=repo, env=env, check=True, capture_output=True, text=True)
    assert "resumed at step" in out.stdout
    assert (repo / "models/LR1/weights.safetensors").read_bytes() == weights
    assert (repo / "models/LR1/curves.csv").read_text() == curves
    manifest = json.loads((repo / "models/LR1/instances.json").read_text())
    c, _ = client(repo)
    run = c.get_run(manifest["instances"][0]["run_id"])
    assert 0 < int(run.data.tags["monosem.resumed_at_step"]) <= 4000 and run.info.status == "FINISHED"
    assert len(c.get_metric_history(run.info.run_id, "loss")) == len(curves.splitlines()) // 4  # every point, once


def test_ddp_on_two_cpu_processes_matches_one_process_and_only_rank_0_logs(repo):
    """Data parallel (Lightning's `ddp`, gloo): each rank trains a slice of every batch, gradients averaged;
    metrics agree with one process to rel 1e-4 (float sums in another order), and only rank 0 creates runs."""
    repo, _ = repo
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    results = {}
    for devices in (1, 2):
        tiny_params(repo, lambda p: p.update(runtime={"devices": devices, "strategy": "ddp" if devices > 1 else "auto"}))
        before = len(all_runs(repo))
        for stage in ("train", "measure"):
            out = subprocess.run([sys.executable, f"pipeline/{stage}.py", "LR1"], cwd=repo, env=env,
                                 capture_output=True, text=True, timeout=300)
            assert out.returncode == 0, out.stderr[-3000:]
            if stage == "train":  # Lightning says how many processes it started
                assert ("distributed_backend=gloo" in out.stdout + out.stderr) == (devices == 2)
        assert len(all_runs(repo)) == before + 1 + 4  # one parent, one run per instance: rank 0 alone
        results[devices] = json.loads((repo / "results/LR1/measured.json").read_text())["instances"]
    for label, one in results[1].items():
        two = results[2][label]
        for key in ("loss", "mono_per_feature", "mono_per_neuron", "bias_mean_live", "mono_scale_mean"):
            assert two[key] == pytest.approx(one[key], rel=1e-4, abs=1e-6), (label, key)
