"""A real tracking server on a real database: `mlflow server` backed by PostgreSQL (Debian's postgresql,
started here in a temporary cluster) receives the same runs as the default SQLite store."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from e2e import make_repo, tiny

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bindir() -> Path | None:
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / "initdb").exists():
            return d
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


@pytest.fixture(scope="module")
def postgres():
    bindir = pg_bindir()
    if bindir is None:
        if os.environ.get("MONOSEM_CI"):
            pytest.fail("PostgreSQL server binaries (initdb) not found: CI must test the tracking server")
        pytest.skip("PostgreSQL server binaries not installed (Debian: apt install postgresql)")
    # The server refuses to run as root: under root it runs as Debian's `postgres` user, in a directory
    # that user owns (pytest's own tmp dirs are private to root).
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    data = Path(tempfile.mkdtemp(prefix="monosem-pg-"))
    if as_user:
        shutil.chown(data, "postgres", "postgres")
    port = free_port()

    def pg(*args, check=True):
        return subprocess.run(as_user + [str(bindir / args[0]), *args[1:]], check=check, capture_output=True, text=True)

    try:
        pg("initdb", "-D", str(data / "db"), "-A", "trust", "-U", "mlflow", "--no-sync")
        pg("pg_ctl", "-D", str(data / "db"), "-w", "-l", str(data / "log"), "-o",
           f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        pg("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "mlflow", "mlflow")
        yield f"postgresql://mlflow@127.0.0.1:{port}/mlflow"
    finally:
        pg("pg_ctl", "-D", str(data / "db"), "-m", "immediate", "stop", check=False)
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="module")
def server(postgres, tmp_path_factory):
    port = free_port()
    artifacts = tmp_path_factory.mktemp("server-artifacts")
    log = open(tmp_path_factory.mktemp("server-log") / "server.log", "w+")
    proc = subprocess.Popen([str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", postgres, "--artifacts-destination", str(artifacts),
                             "--workers", "1"], stdout=log, stderr=subprocess.STDOUT,
                            env=os.environ | {"MLFLOW_DISABLE_TELEMETRY": "true"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while True:
        try:
            if urllib.request.urlopen(f"{url}/health", timeout=2).read() == b"OK":
                break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            log.seek(0)
            pytest.fail(f"mlflow server did not come up:\n{log.read()[-3000:]}")
        time.sleep(1)
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def tiny_repo(path: Path) -> Path:
    """The tiny pipeline with one study (no SAEs), in a fresh git repo."""
    path.mkdir()
    return make_repo(path, tiny(["LR1"], lambda p: p.update(saes={})))


def repro(repo: Path, uri: str | None) -> None:
    env = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    if uri:
        env["MLFLOW_TRACKING_URI"] = uri
    out = subprocess.run(["dvc", "repro"], cwd=repo, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]


def logged(uri: str) -> dict:
    """Every run of the experiment as name -> (status, params, metric values, tags we set but the owning
    process's, artifact paths)."""
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=uri)
    exp = c.get_experiment_by_name("monosem-test")
    out = {}
    for r in c.search_runs([exp.experiment_id], max_results=1000):
        arts = sorted(a.path for d in ("model", "figures", "interp/table", "interp/summary")
                      for a in c.list_artifacts(r.info.run_id, d))
        tags = {k: v for k, v in r.data.tags.items() if k.startswith(("monosem.", "dvc.stage"))}
        owner = {k: tags.pop(k) for k in ("monosem.pid", "monosem.pid_started")}  # which process: differs per run
        assert all(owner.values())
        out[r.info.run_name] = (r.info.status, r.data.params, r.data.metrics, tags, arts)
    return out


def test_the_pipeline_logs_the_same_runs_to_a_postgres_backed_server_as_to_sqlite(server, tmp_path):
    remote, local = tiny_repo(tmp_path / "remote"), tiny_repo(tmp_path / "local")
    repro(remote, server)
    repro(local, None)
    assert not (remote / "mlflow.db").exists()  # nothing scattered to a local store
    on_server, on_sqlite = logged(server), logged(f"sqlite:///{local / 'mlflow.db'}")
    assert len(on_server) == 1 + 4 + 1 and set(on_server) == set(on_sqlite)  # the study's runs and the report's
    for name, (status, params, metrics, tags, arts) in on_server.items():
        s_status, s_params, s_metrics, s_tags, s_arts = on_sqlite[name]
        assert status == s_status == "FINISHED"
        assert params == s_params and tags == s_tags and arts == s_arts
        timing = {"train_seconds", "explorer_mb"}  # the explorer's links name the store: its size differs
        assert {k: v for k, v in metrics.items() if k not in timing} == \
            {k: v for k, v in s_metrics.items() if k not in timing}  # deterministic training: same values


def listeners(port: int) -> set[str]:
    """The local addresses (kernel hex form) of sockets listening on `port`, IPv4 and IPv6."""
    found = set()
    for table in ("tcp", "tcp6"):
        path = Path("/proc/net") / table
        for line in path.read_text().splitlines()[1:] if path.exists() else []:
            local, state = line.split()[1], line.split()[3]
            addr, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(addr)
    return found


def test_make_ui_listens_on_loopback_only(tmp_path):
    import signal

    for name in ("Makefile", "params.yaml", "requirements.lock", "pyproject.toml"):
        shutil.copy2(ROOT / name, tmp_path / name)  # mtimes kept: `make setup` has nothing to redo
    port = free_port()
    proc = subprocess.Popen(["make", "-C", str(tmp_path), "ui", f"PORT={port}", f"VENV={BIN.parent}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.time() + 120
        while not listeners(port):
            assert proc.poll() is None and time.time() < deadline, proc.stdout.read()[-3000:] if proc.poll() else "slow"
            time.sleep(0.5)
        time.sleep(1)  # every worker bound
        assert listeners(port) == {"0100007F"}  # 127.0.0.1 only: no 0.0.0.0, no IPv6 wildcard
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).read() == b"OK"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
