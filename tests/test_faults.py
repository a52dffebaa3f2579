"""Faults a user will hit, each performed for real on a reproduced tiny checkout (README: Reliability): a
copied checkout (`cp -a`), a training stage killed by SIGKILL, impossible sizes, infinity, a 1-wide world, a
read-only store, a stage failing before its tracker answered, a missing world; `make repro` validates before
DVC deletes anything. Then the fault table of docs/reliability.md (issue 33): `dvc repro` alone killed by SIGTERM
or SIGKILL while a stage trains, Ctrl-Z and fg of its job, a full disk, and the umask."""

import contextlib
import errno
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
    assert "valid; every stage fits in memory" in out.stdout and "projected: " in out.stdout
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


def test_make_repro_projects_only_what_will_run_and_stops_above_its_limit_before_any_work(repo):
    before, runs = outputs(repo), len(all_runs(repo))
    out = sh(make("repro"), repo)  # up to date: nothing to run
    assert "projected: 0 s for 0 stages" in out.stdout
    try:
        write_params(repo, params(lambda p: p["studies"]["W1"]["train"].update(steps=10 ** 7)))  # ~3 h of steps
        out = sh(make("repro LIMIT=60"), repo, check=False)
        # W1's train and measure, and the report; not LR1's, nor the worlds'
        assert "for 3 stages" in out.stdout and "train        1 stage " in out.stdout, out.stdout
        errors = [line for line in out.stderr.splitlines() if line.startswith("error")]
        assert out.returncode != 0 and len(errors) == 1 and errors[0].startswith("error: projected ")
        assert "above the limit of 1 h 00 min" in errors[0] and "LIMIT=0" in errors[0]
        assert "Running stage" not in out.stdout and "Traceback" not in out.stderr
    finally:
        write_params(repo, params())
    assert outputs(repo) == before and len(all_runs(repo)) == runs


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


def _wait(condition, timeout=180, what="", every=0.5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if result := condition():
            return result
        time.sleep(every)
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


# --- the fault table (issue 33) ---------------------------------------------------------------------------------

DVC = str(Path(sys.executable).parent / "dvc")
STAGE_OUTPUTS = ("weights.safetensors", "instances.json", "curves.csv")


def _gone(procs: list[psutil.Process]) -> bool:
    """Whether every process has ended (a zombie has: only its exit status is left for its parent)."""
    def ended(p):
        try:
            return not p.is_running() or p.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True
    return all(ended(p) for p in procs)


@contextlib.contextmanager
def dvc_training(repo: Path, log: Path, steps: int, shell: str = "/bin/sh", umask: int = -1,
                 until: str = "steps of batch", then: float = 1.0):
    """`dvc repro -f -s train@LR1` at `steps` steps, started as a shell starts a job (a process group, here a
    session, of its own) with DVC's output and the stage's in `log`; yields (dvc, its descendants, the stage's 5
    runs) once the stage is training: its runs exist, `until` is in the log (by default the line the stage prints
    as it starts Lightning's fit) and `then` seconds have passed. DVC runs the command through `$SHELL -c`: bash
    execs it, so the stage is DVC's child; dash (/bin/sh on Debian) stays between them. Afterwards whatever is
    left of the job is killed and LR1's params and outputs are restored (from DVC's run cache)."""
    write_params(repo, params(lambda p: p["studies"]["LR1"]["train"].update(steps=steps)))
    known = {r.info.run_id for r in all_runs(repo)}
    env = ENV | {"SHELL": shell, "DVC_NO_ANALYTICS": "true", "MLFLOW_DISABLE_TELEMETRY": "true"}
    for var in ("DVC_ROOT", "DVC_STAGE", "DVC_EXP_NAME"):
        env.pop(var, None)
    procs: list[psutil.Process] = []
    try:
        with open(log, "w") as out:
            dvc = subprocess.Popen([DVC, "repro", "-f", "-s", "train@LR1"], cwd=repo, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True, umask=umask)

        def created():
            assert dvc.poll() is None, log.read_text()[-3000:]
            new = [r for r in all_runs(repo) if r.info.run_id not in known]
            return new if len(new) == 5 else None

        def training():
            assert dvc.poll() is None, log.read_text()[-3000:]
            return until in log.read_text()

        runs = _wait(created, what="train@LR1's runs under dvc repro")
        _wait(training, every=0.05, what=f"{until!r} in the log of dvc repro")
        time.sleep(then)
        procs = psutil.Process(dvc.pid).children(recursive=True)  # the shell (dash), the stage, its MLflow worker
        assert any("pipeline/train.py" in p.cmdline() for p in procs)
        yield dvc, procs, runs
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(dvc.pid, signal.SIGKILL)  # what is left of the job: nothing, unless a test failed
        dvc.wait()
        psutil.wait_procs(procs, timeout=30)
        write_params(repo, params())
        sh("dvc repro -s train@LR1", repo)


@pytest.mark.parametrize("signum,shell", [(signal.SIGTERM, "/bin/sh"), (signal.SIGKILL, "/bin/bash")],
                         ids=["SIGTERM-dash", "SIGKILL-bash"])
def test_a_killed_dvc_repro_ends_its_training_stage_with_its_runs_killed_and_no_output(repo, tmp_path, signum, shell):
    """`kill` (SIGTERM: a CI runner that signals only the process it started) or `kill -9` of the `dvc repro`
    process alone, not its group, while train@LR1 trains 500k steps: within 30 s of DVC's exit the stage has ended
    (its shell and MLflow worker too), having written none of its outputs, and its runs are KILLED. Under dash the
    stage's parent is the shell, which outlives DVC (the stage's watchdog thread sees DVC go); under bash it is
    DVC (the kernel's parent-death signal)."""
    models, log = repo / "models/LR1", tmp_path / "dvc.log"
    with dvc_training(repo, log, steps=500_000, shell=shell) as (dvc, procs, runs):
        os.kill(dvc.pid, signum)
        assert dvc.wait(timeout=30) == -signum
        _wait(lambda: _gone(procs), timeout=30, what="the stage, its shell and its worker to end")
        assert {status for status, _ in _statuses(repo, runs).values()} == {"KILLED"}
        written = os.listdir(models) if models.exists() else []  # DVC removed the old outputs before the stage
        assert not written, f"outputs written after DVC ended: {written}"
        assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


def test_ctrl_z_and_fg_of_dvc_repro_freeze_the_stage_and_it_then_finishes(repo, tmp_path):
    """SIGSTOP then SIGCONT to the `dvc repro` job's process group (Ctrl-Z, fg) once train@LR1 has trained a
    tenth of its 4,000 steps (a few seconds unloaded, 15 s on a busy machine): the stage uses no CPU while stopped
    (3 s), then finishes; its runs end FINISHED, and its outputs, written under umask 022, are 0644."""
    log = tmp_path / "dvc.log"
    with dvc_training(repo, log, steps=4000, umask=0o022, until="(10%)", then=0) as (dvc, procs, runs):
        stage = next(p for p in procs if "pipeline/train.py" in p.cmdline())  # not dash's `sh -c "python …"`
        os.killpg(dvc.pid, signal.SIGSTOP)
        try:
            time.sleep(0.3)
            assert "(100%)" not in log.read_text()  # stopped while training
            assert stage.status() == psutil.STATUS_STOPPED
            frozen = stage.cpu_times()
            time.sleep(3)
            assert stage.cpu_times()[:2] == frozen[:2] and stage.status() == psutil.STATUS_STOPPED
        finally:
            os.killpg(dvc.pid, signal.SIGCONT)
        assert dvc.wait(timeout=300) == 0, log.read_text()[-3000:]
        assert "step 4000/4000 (100%)" in log.read_text()
        assert {status for status, _ in _statuses(repo, runs).values()} == {"FINISHED"}
        for name in STAGE_OUTPUTS:
            assert (repo / "models/LR1" / name).stat().st_mode & 0o777 == 0o644, name


@contextlib.contextmanager
def full_tmpfs(mount: Path, keep: Path | None = None):
    """A 512 kB tmpfs at `mount`, with a copy of `keep`'s files in `mount/<its name>`, then filled to the last
    byte; skipped, with the reason, where mounting is not allowed (it needs root)."""
    mount.mkdir()
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)], capture_output=True,
                         text=True)
    if out.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (it needs root): {out.stderr.strip()}")
    try:
        if keep is not None:
            shutil.copytree(keep, mount / keep.name)
        with open(mount / "filler", "wb", buffering=0) as fh, pytest.raises(OSError) as full:
            while True:
                fh.write(b"\0" * 4096)
        assert full.value.errno == errno.ENOSPC
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_fails_the_stage_in_one_line_naming_the_file_and_the_device(repo, tmp_path):
    """train@LR1 with models/LR1 on a full tmpfs: one line (besides Lightning's two about accelerators) naming
    the file and the device, exit 1, the previous outputs there byte for byte and nothing else (no temporary
    file), and its runs end FAILED. The JSON and CSV writers on the same full disk say the same."""
    from monosem.errors import ArtifactError
    from monosem.store.artifacts import write_csv, write_json

    models = repo / "models/LR1"
    moved = models.with_name("LR1.moved")
    known = {r.info.run_id for r in all_runs(repo)}
    with full_tmpfs(tmp_path / "disk", keep=models) as disk:
        before = digest(*(disk / "LR1" / name for name in STAGE_OUTPUTS))
        models.rename(moved)
        try:
            models.symlink_to(disk / "LR1")
            out = stage(repo, "train")
        finally:
            models.unlink(missing_ok=True)
            moved.rename(models)
        lines = [line for line in out.stderr.splitlines() if not line.startswith(("GPU available", "TPU available"))]
        assert out.returncode == 1 and lines == [
            f"error: models/LR1/weights.safetensors: not written: no space left on device (tmpfs mounted at {disk}, "
            "0 B free)"], out.stderr[-3000:]
        assert sorted(p.name for p in (disk / "LR1").iterdir()) == sorted(STAGE_OUTPUTS)
        assert digest(*(disk / "LR1" / name for name in STAGE_OUTPUTS)) == before
        for write in (lambda path: write_json(path, {"x": list(range(1000))}),
                      lambda path: write_csv(path, [{"x": i} for i in range(1000)])):
            with pytest.raises(ArtifactError) as err:
                write(disk / "new" / "out")
            assert str(err.value) == (f"{disk}/new/out: not written: no space left on device (tmpfs mounted at "
                                      f"{disk}, 0 B free)")
            assert not list((disk / "new").iterdir())
    runs = [r for r in all_runs(repo) if r.info.run_id not in known]
    assert len(runs) == 5 and {r.info.status for r in runs} == {"FAILED"}


def test_atomic_path_turns_a_full_disk_into_one_line_and_keeps_the_previous_file(tmp_path, monkeypatch):
    """ENOSPC (faked, so it is tested where nothing can be mounted) at the write, in safetensors' SafetensorError,
    and at the temporary file's creation: an ArtifactError naming the file and the device; the previous file is
    kept and no temporary file is left."""
    import torch
    from safetensors import SafetensorError

    from monosem.errors import ArtifactError
    from monosem.store import artifacts
    from monosem.store.artifacts import atomic_path, device, save_tensors

    target = tmp_path / "out" / "weights.safetensors"
    target.parent.mkdir()
    target.write_bytes(b"previous")
    expected = f"{target}: not written: no space left on device ({device(target.parent)})"
    assert " mounted at " in expected and expected.endswith(" free)")

    def half(tensors, path, metadata=None):
        Path(path).write_bytes(b"half")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    def write():
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")

    def save():
        monkeypatch.setattr(artifacts, "save_file", half)
        save_tensors(target, {"x": torch.zeros(2)})

    def create():
        def full(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(artifacts, "_new_file", full)
        with atomic_path(target):
            pass

    for case in (write, save, create):
        with pytest.raises(ArtifactError) as err:
            case()
        assert str(err.value) == expected and len(str(err.value).splitlines()) == 1
        assert target.read_bytes() == b"previous" and os.listdir(target.parent) == [target.name]
    monkeypatch.undo()
    with pytest.raises(ValueError, match="not ENOSPC"), atomic_path(target):  # anything else: unchanged
        raise ValueError("not ENOSPC")
    assert target.read_bytes() == b"previous" and os.listdir(target.parent) == [target.name]


def test_a_full_disk_outside_atomic_path_is_one_line_from_the_stage(tmp_path, monkeypatch, capsys):
    """`common.run`, for a write that does not go through atomic_path (a write's OSError names no file): one line
    naming the device of the fullest output folder, exit 1; with a file name, the file."""
    monkeypatch.syspath_prepend(str(ROOT / "pipeline"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["stage.py"])
    from monosem.store.artifacts import device

    import common

    for err, line in ((OSError(errno.ENOSPC, "No space left on device"), "an output not written"),
                      (OSError(errno.ENOSPC, "No space left on device", "models/x/cfg.json"),
                       "models/x/cfg.json: not written")):
        def main():
            raise err
        with pytest.raises(SystemExit) as code:
            common.run(main)
        assert code.value.code == 1
        assert capsys.readouterr().err == f"error: {line}: no space left on device ({device(tmp_path)})\n"


CHILD = """import os, signal, sys, time
sys.path.insert(0, sys.argv[1])
import boot
signal.signal(signal.SIGTERM, lambda *_: (open(sys.argv[2], "w").write("SIGTERM"), os._exit(143)))
boot.end_with_dvc()
open(sys.argv[3], "w").write(str(os.getpid()))
time.sleep(60)
"""
FAKE_DVC = """import os, subprocess, sys, time
shell, dvc, pipeline, child, out, ready = sys.argv[1:]
env = dict(os.environ, DVC_STAGE="fake") if dvc == "dvc" else dict(os.environ)
subprocess.Popen([shell, "-c", f"{sys.executable} {child} {pipeline} {out} {ready}"], env=env)
while not os.path.exists(ready):
    time.sleep(0.05)
"""


def test_a_stage_ends_when_the_dvc_process_running_it_is_gone_and_only_then(tmp_path):
    """`boot.end_with_dvc` without DVC's cost: a process that runs a command as DVC does (`$SHELL -c`, DVC_STAGE
    set for it) and exits once the command has begun. Through bash (the kernel's parent-death signal) and dash
    (the watchdog), the command gets SIGTERM within 5 s; run without DVC_STAGE (a stage run by hand, under nohup)
    it is left alone."""
    (tmp_path / "child.py").write_text(CHILD)
    (tmp_path / "dvc.py").write_text(FAKE_DVC)
    env = ENV.copy()
    env.pop("DVC_STAGE", None)
    cases = {}
    for shell in ("/bin/bash", "/bin/sh"):
        for dvc in ("dvc", "none"):
            name = f"{Path(shell).name}-{dvc}"
            out, ready = tmp_path / f"{name}.out", tmp_path / f"{name}.ready"
            cases[name] = (dvc, out, ready, subprocess.Popen(
                [sys.executable, str(tmp_path / "dvc.py"), shell, dvc, str(ROOT / "pipeline"),
                 str(tmp_path / "child.py"), str(out), str(ready)], env=env))
    for name, (_, _, _, fake) in cases.items():
        assert fake.wait(timeout=60) == 0, name
    children = {name: psutil.Process(int(ready.read_text())) for name, (_, _, ready, _) in cases.items()}
    try:
        _wait(lambda: all(out.exists() for dvc, out, _, _ in cases.values() if dvc == "dvc"), timeout=5,
              what="SIGTERM in the stages whose DVC went")
        time.sleep(2)  # 4 × the watchdog's interval: those without DVC are still there
        for name, (dvc, out, _, _) in cases.items():
            if dvc == "dvc":
                assert out.read_text() == "SIGTERM", name
            else:
                assert not out.exists() and children[name].is_running(), name
    finally:
        for child in children.values():
            with contextlib.suppress(psutil.NoSuchProcess):
                child.terminate()


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_outputs_get_the_mode_the_umask_gives(tmp_path, umask):
    """Every writer of outputs (JSON, CSV, text, safetensors, whose own writer makes a 0600 file) gives a new
    file 0666 & ~umask (0644 under 022, 0600 under 077) and new folders 0777 & ~umask, as `touch` and `mkdir`
    do; a real stage's outputs under 022: `test_ctrl_z_and_fg…`."""
    import torch

    from monosem.store.artifacts import save_tensors, write_csv, write_json, write_text

    old = os.umask(umask)
    try:
        write_json(tmp_path / "new" / "a.json", {"a": 1})
        write_csv(tmp_path / "new" / "b.csv", [{"a": 1}])
        write_text(tmp_path / "new" / "c.md", "c")
        save_tensors(tmp_path / "new" / "d.safetensors", {"d": torch.zeros(2)})
        save_tensors(tmp_path / "new" / "d.safetensors", {"d": torch.ones(2)})  # replaced
        (tmp_path / "touched").touch()
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "new").iterdir()}
    assert modes == dict.fromkeys(("a.json", "b.csv", "c.md", "d.safetensors"), 0o666 & ~umask)
    assert (tmp_path / "touched").stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o777 & ~umask
