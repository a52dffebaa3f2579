"""What a stage does before its imports: this checkout's library first on the path; under DVC, the stage set
to end when the DVC process running it is gone; and, for a stage that logs, MLflow's worker started so that it
loads on the other core while the stage imports torch.

Standard library only; importing it does nothing. Each stage calls `begin` as its first statement.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
STARTED = time.perf_counter()  # the stage's clock: boot is its first import
WORKER: subprocess.Popen | None = None  # taken by common.open_tracker
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
POLL_SECONDS = 0.5


def begin(logs: bool) -> None:
    """Put this checkout's src/ first on the path (a DVC dependency; not wherever the environment's editable
    install points, so a queued experiment's temporary copy runs its own code); under DVC, end with it
    (`end_with_dvc`); if the stage logs, start the MLflow worker (`monosem.store.tracking_worker`) now. Its log
    is under the repo root ($DVC_ROOT under DVC, whose queued experiments run in a temporary copy; else where
    the stage runs, the root)."""
    global WORKER
    if str(SRC) not in sys.path:
        sys.path.insert(0, str(SRC))
    end_with_dvc()
    if logs and WORKER is None:
        log = root() / ".monosem" / "tracking.log"
        WORKER = subprocess.Popen([sys.executable, str(SRC / "monosem" / "store" / "tracking_worker.py"), str(log)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)


def root() -> Path:
    """The repo root: $DVC_ROOT under DVC (whose queued experiments run in a temporary copy), else here."""
    return Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()


def end_with_dvc() -> None:
    """Under DVC ($DVC_STAGE set), send this process SIGTERM when the DVC process running it is gone (killed alone,
    by SIGTERM from a CI runner or supervisor that signals only the process it started, or by SIGKILL), as if the
    stage had been sent it: `common.run` turns SIGTERM into SystemExit, so the stage's open MLflow runs end KILLED
    and it writes no output.

    DVC runs a stage's command through `$SHELL -c` (`/bin/sh` when SHELL is unset). bash execs a lone command, so
    DVC is this process's parent and the kernel signals its death (prctl PR_SET_PDEATHSIG). dash, Debian's
    /bin/sh, stays as the parent, and outlives DVC waiting for the stage, so then a thread polls the DVC process
    (the nearest ancestor that DVC did not start: not holding the DVC_STAGE it sets) and signals this process when
    it is gone. A stage run by hand, or by anything but DVC, is left alone (`nohup` keeps working)."""
    stage = os.environ.get("DVC_STAGE")
    if not stage:
        return
    parent = os.getppid()
    notified = _parent_death_signal(signal.SIGTERM)
    if notified and os.getppid() != parent:  # the parent went before the kernel was asked
        os.kill(os.getpid(), signal.SIGTERM)
        return
    dvc = _dvc_process(f"DVC_STAGE={stage}".encode(), parent)
    if dvc is None:  # no /proc (not Linux): only the parent can be watched
        _watch(lambda: os.getppid() == parent)
    elif dvc[1] is None or (dvc[0] == 1 and os.getpgrp() != 1):  # DVC went before this ran (init adopted it)
        os.kill(os.getpid(), signal.SIGTERM)
    elif dvc[0] != parent or not notified:
        _watch(lambda: _started(dvc[0]) == dvc[1])


def _parent_death_signal(signum: int) -> bool:
    """Ask the kernel to send `signum` when the parent dies (Linux); whether it was set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _stat(pid: int) -> list[str] | None:
    """Process `pid`'s /proc/<pid>/stat fields after its name (state, ppid, …); None if it is gone or unreadable."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def _started(pid: int) -> str | None:
    """When `pid` started (clock ticks since boot: with the pid, one process), None once it is gone or a zombie."""
    fields = _stat(pid)
    return fields[19] if fields and fields[0] not in ("Z", "X") else None


def _dvc_process(mark: bytes, parent: int) -> tuple[int, str | None] | None:
    """The DVC process (pid, start time): the nearest ancestor whose environment lacks `mark` (the shell DVC
    started has it, DVC itself not); None without /proc."""
    if _stat(os.getpid()) is None:
        return None
    pid = parent
    while pid > 1:
        try:
            holds = mark in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:  # not ours to read: watch it
            holds = False
        fields = _stat(pid)
        if not holds or fields is None:
            break
        pid = int(fields[1])
    return pid, _started(pid)


def _watch(alive) -> None:
    """A daemon thread that sends this process SIGTERM once `alive()` is false."""
    def poll():
        while alive():
            time.sleep(POLL_SECONDS)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=poll, name="monosem-dvc-watch", daemon=True).start()
