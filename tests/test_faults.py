"""Faults a user will hit, each performed for real on a reproduced tiny checkout (README: Reliability): a
copied checkout (`cp -a`), a training stage killed by SIGKILL, impossible sizes, infinity, a 1-wide world, a
read-only store, a stage failing before its tracker answered, a missing world; `make repro` validates before
DVC deletes anything."""

import contextlib
import hashlib
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from e2e import ROOT, all_runs, client, make_repo, sh, tiny, write_params

pytestmark = pytest.mark.slow
ENV = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
ENV.pop("MLFLOW_TRACKING_URI", None)


def params(edit=None) -> dict:
    """LR1 and a 1-wide world (N = m = 1) with a study on it; no SAEs (not what these tests are about)."""
    def base(p):
        p["saes"] = {}
        p["worlds"]["one"] = {"n_features": 1, "d_embed": 1, "eps": 0.5, "n_eval": 64, "seed": 2}
        p["studies"]["W1"] = {"world": "one", "model": {"neurons": 4},
                              "train": {"steps": 64, "batch_size": 16, "lr": 0.01, "t_max": 8, "log_points": 4},
                              "seeds": [0]}
        if edit:
            edit(p)
    return tiny(["LR1"], base)


def make(target: str) -> str:
    return f"make {target} VENV={sys.prefix}"


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = make_repo(tmp_path_factory.mktemp("faults"), params())
    for name in ("Makefile", "pyproject.toml", "requirements.lock"):  # copy2: older than the environment's setup
        shutil.copy2(ROOT / name, repo / name)                         # stamp, so `make` installs nothing
    out = sh(make("repro"), repo)
    assert "valid; every stage fits in memory" in out.stdout
    return repo


def stage(repo, name: str, study: str = "LR1", **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, f"pipeline/{name}.py", study], cwd=repo, env=ENV, capture_output=True,
                          text=True, timeout=600, **kw)


def digest(*paths: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def outputs(repo: Path) -> dict[str, str]:
    return digest(*(repo / p for p in ("data/worlds/tiny/world.safetensors", "models/LR1/weights.safetensors",
                                       "results/LR1/metrics.json", "results/W1/metrics.json", "reports/report.md")))


def test_a_one_wide_world_runs_through_every_stage(repo):
    from safetensors import safe_open

    with safe_open(repo / "data/worlds/one/world.safetensors", "pt") as fh:
        assert fh.get_slice("P").get_shape() == [1, 1] and fh.get_slice("probes").get_shape() == [1, 1]
    assert (repo / "results/W1/interp/summary.json").exists()
    assert "## W1" in (repo / "reports/report.md").read_text()


def test_make_repro_refuses_a_bad_value_in_one_line_before_dvc_deletes_anything(repo):
    before, runs = outputs(repo), len(all_runs(repo))
    cases = [(lambda p: p["studies"]["LR1"]["train"].update(lr=math.inf),
              "studies.LR1.train.lr = inf: Input should be a finite number"),
             (lambda p: p["studies"]["LR1"]["model"].update(neurons=100_000_000),
              "studies.LR1.model.neurons = 100000000: train@LR1 needs about "),
             (lambda p: p["worlds"]["tiny"].update(n_eval=1_000_000_000),
              "worlds.tiny.n_eval = 1000000000: generate@tiny needs about "),
             (lambda p: p["studies"]["LR1"].update(world="nosuch"),
              "studies.LR1.world = 'nosuch': no such world; allowed: ['one', 'tiny']"),
             (lambda p: p["defaults"].pop("saes"), "defaults.saes missing: dvc.yaml's stages depend on them")]
    try:
        for edit, message in cases:
            write_params(repo, params(edit))
            out = sh(make("repro"), repo, check=False)
            errors = [line for line in out.stderr.splitlines() if "error" in line.lower() or "Traceback" in line]
            assert out.returncode != 0 and errors[0].startswith(f"error: params.yaml: {message}"), out.stderr
            assert "Running stage" not in out.stdout and "Traceback" not in out.stderr
        # The stage itself refuses too (`dvc repro` without make), before it creates a run.
        write_params(repo, params(lambda p: p["studies"]["LR1"]["model"].update(neurons=100_000_000)))
        out = stage(repo, "train")
        assert out.returncode == 2 and out.stderr.strip().startswith(
            "error: params.yaml: studies.LR1.model.neurons = 100000000: train@LR1 needs about"), out.stderr
        assert "more than the" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    finally:
        write_params(repo, params())
    assert outputs(repo) == before and len(all_runs(repo)) == runs
    assert "Data and pipelines are up to date" in sh("dvc status", repo).stdout


def test_a_copied_checkout_writes_its_artifacts_into_itself(repo, tmp_path):
    copy = tmp_path / "copy of checkout"
    subprocess.run(["cp", "-a", str(repo), str(copy)], check=True)
    original = sorted(p.relative_to(repo) for p in (repo / "mlartifacts").rglob("*"))
    original_db = digest(repo / "mlflow.db")
    out = stage(copy, "train")
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"tracking: this checkout's MLflow store was copied or moved from {repo}" in out.stderr
    c, exp = client(copy)
    assert exp.artifact_location == (copy / "mlartifacts").as_uri()
    runs = all_runs(copy)
    assert all(r.info.artifact_uri.startswith((copy / "mlartifacts").as_uri() + "/") for r in runs)
    new = {r.info.run_id for r in runs} - {r.info.run_id for r in all_runs(repo)}
    assert len(new) == 5
    for run_id in new - {r.info.run_id for r in runs if "mlflow.parentRunId" not in r.data.tags}:
        assert [a.path for a in c.list_artifacts(run_id, "model")] == ["model/model.safetensors"]
        assert list((copy / "mlartifacts").glob(f"{run_id}/artifacts/model/model.safetensors"))
    assert sorted(p.relative_to(repo) for p in (repo / "mlartifacts").rglob("*")) == original  # nothing written there
    assert digest(repo / "mlflow.db") == original_db


def _wait(condition, timeout=180, what=""):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if result := condition():
            return result
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _start_long_training(repo) -> tuple[subprocess.Popen, list]:
    """train@LR1 at 500k steps, in a session of its own, once it has created its 5 runs and is training."""
    known = {r.info.run_id for r in all_runs(repo)}
    proc = subprocess.Popen([sys.executable, "pipeline/train.py", "LR1"], cwd=repo, env=ENV, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def created():
        new = [r for r in all_runs(repo) if r.info.run_id not in known]
        return new if len(new) == 5 else None

    runs = _wait(created, what="the stage's 5 runs")
    time.sleep(2)  # training
    assert proc.poll() is None and {r.info.status for r in runs} == {"RUNNING"}
    return proc, runs


def _statuses(repo, runs) -> dict[str, tuple[str, str]]:
    """Each run's status and failure note, now."""
    c, _ = client(repo)
    now = [c.get_run(r.info.run_id) for r in runs]
    return {r.info.run_id: (r.info.status, r.data.tags.get("monosem.failure", "")) for r in now}


def test_a_sigkilled_training_stage_leaves_no_run_running(repo):
    write_params(repo, params(lambda p: p["studies"]["LR1"]["train"].update(steps=500_000)))
    try:
        # The stage alone (as the OOM killer takes the largest process): its worker ends the runs at once.
        proc, runs = _start_long_training(repo)
        for r in runs:
            assert r.data.tags["monosem.pid"] == str(proc.pid) and r.data.tags["monosem.stage"] == "train@LR1"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        def ended():
            now = _statuses(repo, runs)
            return now if {status for status, _ in now.values()} == {"KILLED"} else None

        done = _wait(ended, what="the worker to end the runs")
        assert all(f"its process ({proc.pid} on " in note for _, note in done.values())

        # The stage and its worker together (a killed process group, a crash): the next run of the stage ends them.
        proc, runs = _start_long_training(repo)
        group = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        psutil.wait_procs(group, timeout=30)
        assert {v[0] for v in _statuses(repo, runs).values()} == {"RUNNING"}
    finally:
        write_params(repo, params())
    out = stage(repo, "train")
    assert out.returncode == 0, out.stderr[-3000:]
    after = _statuses(repo, runs)
    assert {v[0] for v in after.values()} == {"KILLED"}
    assert all(f"its process ({proc.pid} on " in note and "ended by the next train@LR1" in note
               for _, note in after.values())
    assert not [r for r in all_runs(repo) if r.info.status == "RUNNING"]


@contextlib.contextmanager
def unwritable(path: Path):
    """`path` made unwritable even for root: immutable (chattr +i), or else a read-only bind mount of the file
    onto itself; skipped where neither is allowed (not root, a file system without the attribute)."""
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0:
        undo = ["chattr", "-i", str(path)]
    elif subprocess.run(f"mount --bind '{path}' '{path}' && mount -o remount,ro,bind '{path}'", shell=True,
                        capture_output=True).returncode == 0:
        undo = ["umount", str(path)]
    else:
        pytest.skip("cannot make a file unwritable here: chattr +i and a read-only bind mount both need root "
                    "(and chattr a file system with the immutable attribute)")
    try:
        yield
    finally:
        subprocess.run(undo, check=True)


def test_a_read_only_store_fails_first_in_one_line_that_names_its_log(repo):
    before, log = outputs(repo), repo / ".monosem" / "tracking.log"
    expected = (f"error: tracking store sqlite:///{repo / 'mlflow.db'} is not writable: OperationalError: attempt to "
                f"write a readonly database (details: {log})")
    with unwritable(repo / "mlflow.db"):
        out = stage(repo, "measure")
        assert out.returncode == 1 and out.stderr.strip() == expected, out.stderr
        out = sh(make("repro"), repo, check=False)
        assert out.returncode != 0 and expected in out.stderr.splitlines() and "Running stage" not in out.stdout
    assert "Traceback" in log.read_text() and "attempt to write a readonly database" in log.read_text()
    assert outputs(repo) == before


def test_a_stage_failing_before_its_tracker_answered_prints_one_line_and_its_worker_nothing(repo):
    manifest, log = repo / "models/LR1/instances.json", repo / ".monosem" / "tracking.log"
    logged = log.read_text() if log.exists() else ""
    manifest.rename(manifest.with_suffix(".moved"))
    try:
        out = stage(repo, "measure")
        workers = [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"]
                   and any("tracking_worker.py" in a for a in p.info["cmdline"]) and str(log) in p.info["cmdline"]]
        psutil.wait_procs(workers, timeout=60)
    finally:
        manifest.with_suffix(".moved").rename(manifest)
    assert out.returncode == 1 and out.stderr.strip() == (
        "error: models/LR1/instances.json: missing (run the stage that makes it: `dvc repro`)")
    added = (log.read_text() if log.exists() else "")[len(logged):]
    assert "BrokenPipeError" not in added and "Traceback" not in added, added
