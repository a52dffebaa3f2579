"""A stage server: stages start as forks of a process that has already imported torch, Lightning and the library.

Every stage is its own process, as DVC runs it, and importing torch, Lightning, matplotlib and the library
costs each one seconds of CPU before it does any work (about a third of a default `make repro` was such
start-up). So the first stage of a run starts this server in the background and runs as usual; later stages
find it, hand it their command line, working directory, environment and standard streams, and the server forks
a child that runs the stage as `__main__` with them: the child is a fresh process in every way that matters
(its own pid, thread pool, random state, MLflow worker), minus the imports (MLflow's too: its worker is a fork
of the child). The stage process waits, passes on SIGTERM and Ctrl-C, and exits with the child's status; if it
dies, the server ends the child.

One server per checkout, interpreter and library source (a code edit gets a new server); it leaves after two
minutes without a stage. MONOSEM_STAGE_SERVER=0 turns it off. Nothing here runs unless a stage asks for it.
"""

from __future__ import annotations

import hashlib
import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IDLE_SECONDS = 120
STARTING_SECONDS = 60  # a server still importing after this long is taken for dead
PRELOAD = ("torch", "numpy", "pandas", "matplotlib.pyplot", "lightning.pytorch", "safetensors.torch", "scipy.stats",
           "monosem.lit", "monosem.sae_lit", "monosem.plots", "monosem.plots_tms", "monosem.plots_sae",
           "monosem.interpret", "monosem.claims", "monosem.metrics", "monosem.tracking", "monosem.sae_eval",
           "monosem.summary", "monosem.superposition", "monosem.theory", "monosem.regime", "monosem.plots_regime",
           "monosem.tracking_worker", "common")  # tracking_worker: MLflow, for the stages' forked workers
_SERVER_FDS: list[int] = []  # the server's own sockets: a forked stage closes its copies


def enabled() -> bool:
    return os.environ.get("MONOSEM_STAGE_SERVER", "1") != "0" and hasattr(socket, "send_fds")


def address() -> str | None:
    """The socket of this checkout's server for this interpreter, library source and thread settings; None
    where there can be none (a temp folder that is not this user's alone, or a path too long for a socket)."""
    digest = hashlib.sha256(str(ROOT).encode() + sys.executable.encode())
    for path in sorted([*(ROOT / "src" / "monosem").rglob("*.py"), *(ROOT / "pipeline").glob("*.py")]):
        digest.update(path.name.encode() + path.read_bytes())
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "PYTHONHASHSEED",  # read once, when torch loads
                "MONOSEM_PLUGINS", "PYTHONPATH"):  # imported once, by monosem.families
        digest.update(f"{var}={os.environ.get(var)}".encode())
    folder = Path(tempfile.gettempdir()) / f"monosem-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        info = folder.stat()
    except OSError:
        return None
    if info.st_uid != os.getuid() or info.st_mode & 0o077:  # another user could listen there: no server
        return None
    path = str(folder / f"{digest.hexdigest()[:20]}.sock")
    return path if len(path.encode()) < 100 else None  # AF_UNIX paths end at 108 bytes


# --- the stage's side ------------------------------------------------------------------------------------


def hand_over() -> None:
    """Run this stage in the server if one is up (and exit with its status); otherwise start one for the next
    stages and return, so the stage runs here."""
    if not enabled():
        return
    path = address()
    if path is None:
        return
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
    except OSError:
        conn.close()
        start_server(path)
        return
    request = json.dumps({"argv": sys.argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
    try:
        socket.send_fds(conn, [struct.pack("!I", len(request)) + request], [0, 1, 2])
        reader = conn.makefile("r")
        line = reader.readline()
    except OSError:  # the server went away: run here
        conn.close()
        return
    if not line:  # the server went away before it forked: run here
        return
    child = int(json.loads(line)["pid"])

    def forward(signum, frame):
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    line = reader.readline()
    status = int(json.loads(line)["status"]) if line else 1
    os._exit(status if status >= 0 else 128 - status)  # killed by a signal: the shell's 128 + its number


def start_server(path: str) -> None:
    """Start the server for the next stages, detached; this stage does not wait for it. One at a time: the
    stages that run while it imports (a few seconds) find its marker and start none."""
    marker = Path(path + ".starting")
    try:
        if marker.exists() and time.time() - marker.stat().st_mtime < STARTING_SECONDS:
            return
        marker.unlink(missing_ok=True)  # one that never came up
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        Path(path).unlink(missing_ok=True)  # a server that died left its socket
    except OSError:  # another stage is starting one
        return
    env = dict(os.environ, MONOSEM_STAGE_SERVER_SOCKET=path)
    subprocess.Popen([sys.executable, __file__], cwd=ROOT, env=env, start_new_session=True,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# --- the server's side -----------------------------------------------------------------------------------


def serve(path: str) -> None:
    import importlib

    sys.path[:0] = [str(ROOT / "pipeline"), str(ROOT / "src")]  # this checkout's library, as `common` puts it first
    sys.argv = [str(ROOT / "pipeline" / "server.py")]
    for name in PRELOAD:  # imports only: no tensor work, so no thread pool exists to be forked
        importlib.import_module(name)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(path)
    except OSError:  # another server is up
        return
    finally:
        Path(path + ".starting").unlink(missing_ok=True)
    listener.listen(16)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    _SERVER_FDS[:] = [listener.fileno(), sel.fileno()]
    running: dict[int, socket.socket] = {}  # child pid -> its stage's connection
    idle_since = time.monotonic()
    try:
        while running or time.monotonic() - idle_since < IDLE_SECONDS:
            for key, _ in sel.select(timeout=0.2):
                if key.fileobj is listener:
                    conn, _ = listener.accept()
                    try:
                        pid = start(conn)
                    except Exception:  # a request cut short or malformed: that stage runs on its own
                        conn.close()
                        pid = None
                    if pid:
                        running[pid] = conn
                        _SERVER_FDS.append(conn.fileno())
                        sel.register(conn, selectors.EVENT_READ, pid)
                elif not key.fileobj.recv(1):  # a stage process closed its connection (it died): end its child
                    try:
                        os.kill(key.data, signal.SIGTERM)
                    except ProcessLookupError:
                        pass
                    sel.unregister(key.fileobj)
            while running:
                pid, status = os.waitpid(-1, os.WNOHANG)
                if not pid:
                    break
                conn = running.pop(pid, None)
                if conn is not None:
                    try:
                        conn.sendall((json.dumps({"status": os.waitstatus_to_exitcode(status)}) + "\n").encode())
                    except OSError:  # the stage process is gone
                        pass
                    if conn.fileno() in sel.get_map():
                        sel.unregister(conn)
                    _SERVER_FDS.remove(conn.fileno())
                    conn.close()
                idle_since = time.monotonic()
    finally:
        Path(path).unlink(missing_ok=True)


def start(conn: socket.socket) -> int | None:
    """Read one stage's request and fork its child; returns the child's pid."""
    head, fds, _, _ = socket.recv_fds(conn, 4, 3)
    if len(head) < 4 or len(fds) != 3:
        conn.close()
        return None
    size = struct.unpack("!I", head)[0]
    body = b""
    while len(body) < size:
        chunk = conn.recv(size - len(body))
        if not chunk:
            break
        body += chunk
    request = json.loads(body)
    pid = os.fork()
    if pid == 0:
        for fd in [*_SERVER_FDS, conn.fileno()]:
            os.close(fd)
        run_child(request, fds)  # never returns
    for fd in fds:
        os.close(fd)
    conn.sendall((json.dumps({"pid": pid}) + "\n").encode())
    return pid


def run_child(request: dict, fds: list[int]) -> None:
    import runpy

    status = 1
    try:
        os.setsid()  # its own process group, like a stage started by DVC
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.argv = request["argv"]
        sys.stdin = open(0, closefd=False)
        sys.stdout = open(1, "w", closefd=False, buffering=1)
        sys.stderr = open(2, "w", closefd=False, buffering=1)
        import common

        common.forked()  # what the stage's first import of `common` would have done
        runpy.run_path(sys.argv[0], run_name="__main__")
        status = 0
    except SystemExit as done:
        code = done.code
        status = code if isinstance(code, int) else (0 if code is None else 1)
        if not isinstance(code, int) and code is not None:
            print(code, file=sys.stderr)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        import atexit

        atexit._run_exitfuncs()  # what a stage's interpreter does when it exits
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(status)


if __name__ == "__main__":
    serve(os.environ["MONOSEM_STAGE_SERVER_SOCKET"])
