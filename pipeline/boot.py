"""What a stage does before its imports: this checkout's library first on the path, and, for a stage that
logs, MLflow's worker started so that it loads on the other core while the stage imports torch.

Standard library only; importing it does nothing. Each stage calls `begin` as its first statement.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
WORKER: subprocess.Popen | None = None  # taken by common.open_tracker


def begin(logs: bool) -> None:
    """Put this checkout's src/ first on the path (a DVC dependency; not wherever the environment's editable
    install points, so a queued experiment's temporary copy runs its own code); if the stage logs, start the
    MLflow worker (`monosem.store.tracking_worker`) now. Its log is under the repo root ($DVC_ROOT under DVC,
    whose queued experiments run in a temporary copy; else where the stage runs, the root)."""
    global WORKER
    if str(SRC) not in sys.path:
        sys.path.insert(0, str(SRC))
    if logs and WORKER is None:
        log = Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve() / ".monosem" / "tracking.log"
        WORKER = subprocess.Popen([sys.executable, str(SRC / "monosem" / "store" / "tracking_worker.py"), str(log)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
