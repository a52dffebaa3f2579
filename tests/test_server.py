"""The stage server (pipeline/server.py): stages forked from a process that has done the imports give the same
outputs as stages on their own, relay their exit status and errors, and pass Ctrl-C / SIGTERM on."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from e2e import all_runs, make_repo, ran, sh, tiny

pytestmark = pytest.mark.slow
SERVED = {"MONOSEM_STAGE_SERVER": "1"}
ENV = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"} | SERVED
ENV.pop("MLFLOW_TRACKING_URI", None)


def server_of(repo: Path):
    """The repo's own server module (its address depends on the checkout and its source)."""
    spec = importlib.util.spec_from_file_location("repo_server", repo / "pipeline" / "server.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def outputs(repo: Path) -> dict[str, object]:
    """Every JSON result and report, without the timings and MLflow's run ids."""
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if not k.endswith(("_seconds", "run_id"))}
        return [strip(v) for v in x] if isinstance(x, list) else x
    files = [*repo.glob("results/**/*.json"), *repo.glob("reports/*.json"), *repo.glob("models/*/instances.json")]
    return {str(f.relative_to(repo)): strip(json.loads(f.read_text())) for f in sorted(files)}


def imported_torch(stderr: str) -> bool:
    """Whether the stage's own process imported torch (`python -X importtime` lists each import it does)."""
    return any(line.startswith("import time:") and line.split("|")[-1].strip() == "torch" for line in stderr.splitlines())


@pytest.fixture(scope="module")
def repos(tmp_path_factory):
    params = tiny(["LR1", "LR3"])
    plain = make_repo(tmp_path_factory.mktemp("plain"), params)
    served = make_repo(tmp_path_factory.mktemp("served"), params)
    sh("dvc repro", plain)
    out = sh("dvc repro", served, env=SERVED)
    return plain, served, out


def test_served_stages_give_the_same_outputs_as_stages_on_their_own(repos):
    plain, served, out = repos
    assert Path(server_of(served).address()).exists()  # the first stage started the server; it is still up
    assert "train@LR3" in ran(out.stdout) and "train@LR3:" in out.stdout  # a served stage's own output reaches DVC
    assert outputs(served) == outputs(plain) and len(outputs(plain)) > 8
    assert not [r for r in all_runs(served) if r.info.status != "FINISHED"]
    assert len(all_runs(served)) == len(all_runs(plain))


def test_a_served_stage_does_not_import_torch_itself_and_relays_its_exit_status(repos):
    _, served, _ = repos
    assert Path(server_of(served).address()).exists()
    ok = subprocess.run([sys.executable, "-X", "importtime", "pipeline/measure.py", "LR1"], cwd=served, env=ENV,
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0 and not imported_torch(ok.stderr), ok.stderr[-2000:]
    bad = subprocess.run([sys.executable, "-X", "importtime", "pipeline/train.py", "NOPE"], cwd=served, env=ENV,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and not imported_torch(bad.stderr)
    assert bad.stderr.strip().splitlines()[-1].startswith("error: params.yaml: studies.NOPE: no such study")
    alone = subprocess.run([sys.executable, "-X", "importtime", "pipeline/train.py", "NOPE"], cwd=served,
                           env=ENV | {"MONOSEM_STAGE_SERVER": "0"}, capture_output=True, text=True, timeout=300)
    assert alone.returncode == 2 and imported_torch(alone.stderr)  # the check can fail: on its own, it does


@contextmanager
def long_training(served: Path):
    """A served train@LR1 made long enough to interrupt, started and waited for until its 5 runs exist:
    (the stage process, a function giving the runs it started). params.yaml is restored afterwards."""
    params = (served / "params.yaml").read_text()
    (served / "params.yaml").write_text(params.replace("steps: 64", "steps: 500000", 1))
    try:
        known = {r.info.run_id for r in all_runs(served)}
        new = lambda: [r for r in all_runs(served) if r.info.run_id not in known]  # noqa: E731
        proc = subprocess.Popen([sys.executable, "pipeline/train.py", "LR1"], cwd=served, env=ENV,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while len(new()) < 5 and time.time() < deadline:
            time.sleep(0.5)
        yield proc, new
    finally:
        (served / "params.yaml").write_text(params)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_signal_to_a_served_stage_ends_its_work_and_its_runs(repos, sig):
    """SIGTERM is passed on; a SIGKILLed stage process closes its connection and the server ends the fork."""
    _, served, _ = repos
    with long_training(served) as (proc, new):
        time.sleep(2)  # training
        assert proc.poll() is None
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == (128 + sig if sig == signal.SIGTERM else -sig), err[-2000:]
        deadline = time.time() + 60  # a SIGKILLed stage: the fork ends after the server notices
        while {r.info.status for r in new()} != {"KILLED"} and time.time() < deadline:
            time.sleep(0.5)
        assert len(new()) == 5 and {r.info.status for r in new()} == {"KILLED"}


def test_a_sigkilled_fork_leaves_no_run_running_and_its_status_reaches_the_stage(repos):
    """The OOM killer's case: the fork doing the work dies at once. Its MLflow worker (a fork of the fork, so
    MLflow's imports are done) sees its pipe close and ends the runs KILLED, as a worker started by a stage on
    its own does; the stage process exits with the fork's status."""
    import psutil

    _, served, _ = repos
    server = str(served / "pipeline" / "server.py")

    def ours(p) -> bool:  # the server, its forks and their workers
        try:
            return server in " ".join(p.cmdline())
        except psutil.Error:  # gone, or a zombie
            return False

    with long_training(served) as (proc, new):
        forks = [p for p in psutil.process_iter() if ours(p) and p.parent() and ours(p.parent())
                 and any(ours(c) for c in p.children())]
        assert len(forks) == 1
        worker = [c for c in forks[0].children() if ours(c)][0]
        assert {r.data.tags["monosem.pid"] for r in new()} == {str(forks[0].pid)}  # the fork owns the runs
        forks[0].kill()
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 128 + signal.SIGKILL, err[-2000:]
        worker.wait(timeout=60)
        assert len(new()) == 5 and {r.info.status for r in new()} == {"KILLED"}


def test_no_server_where_another_user_could_listen_or_the_path_is_too_long(monkeypatch):
    import shutil
    import tempfile

    module = server_of(Path(__file__).resolve().parents[1])
    short = Path(tempfile.mkdtemp(prefix="ms", dir="/tmp"))  # pytest's own folders can be too long for a socket
    try:
        monkeypatch.setattr(tempfile, "tempdir", str(short))
        assert module.address().startswith(str(short / f"monosem-{os.getuid()}"))  # ours alone: a server
        (short / f"monosem-{os.getuid()}").chmod(0o777)
        assert module.address() is None  # writable by others: none
        long = short / ("x" * 90)
        long.mkdir()
        monkeypatch.setattr(tempfile, "tempdir", str(long))
        assert module.address() is None  # beyond AF_UNIX's 108 bytes
    finally:
        shutil.rmtree(short)
