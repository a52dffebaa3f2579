"""What the stages log to MLflow, and where.

Contract (DESIGN.md): the URI is `$MLFLOW_TRACKING_URI`, else `sqlite:///<repo root>/mlflow.db` with
artifacts in `<repo root>/mlartifacts`, the repo root being `$DVC_ROOT` under DVC (queued experiments run
in a temporary copy) or else the git top level. One run per trained instance, nested under one parent run
per train-stage execution; later stages log into the same runs by id.

MLflow itself runs in a worker process (`tracking_worker.py`), so its ~2.5 s of imports and store set-up
overlap the stage's own start-up on the other core; this module imports no MLflow.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import deque
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from monosem.errors import TrackingError

WORKER = Path(__file__).with_name("tracking_worker.py")


def start_worker(log: Path) -> subprocess.Popen:
    """The MLflow worker, loading; pass it to `Tracker` (stages start it before importing torch). MLflow's own
    messages and the tracebacks behind its errors go to `log`."""
    return subprocess.Popen([sys.executable, str(WORKER), str(log)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)


def repo_root() -> Path:
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True)
        return Path(top.stdout.strip())
    except (subprocess.CalledProcessError, FileNotFoundError):
        return Path.cwd().resolve()


def log_file(root: Path) -> Path:
    """Where the worker writes what MLflow says (the stages name it in their one-line errors)."""
    return root / ".monosem" / "tracking.log"


def tracking_uri(root: Path | None = None) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(root or repo_root()) / 'mlflow.db'}"


def artifact_location(root: Path | None = None) -> str | None:
    """Local artifacts beside a local store; a server decides its own."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return None
    return ((root or repo_root()) / "mlartifacts").as_uri()


def git_commit(root: Path) -> str:
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return ""


def lineage_tags(root: Path) -> dict[str, str]:
    return {"dvc.stage": os.environ.get("DVC_STAGE", ""), "dvc.exp_name": os.environ.get("DVC_EXP_NAME", ""),
            "dvc.baseline_rev": os.environ.get("DVC_EXP_BASELINE_REV", ""), "git.commit": git_commit(root)}


def _strings(d: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in d.items()}


def input_hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Answer:
    """The answer to one call to the worker, read when first needed (the worker answers in order)."""

    def __init__(self, tracker: Tracker, method: str):
        self.tracker, self.method, self.done = tracker, method, False

    def get(self) -> Any:
        if self.method != "open":
            self.tracker.check()  # an unusable store is the error to report, not what it made fail later
        self.tracker._read(self)
        earlier, self.earlier = self.earlier, None
        if earlier:
            raise TrackingError(f"tracking store {self.tracker.uri}: {earlier}")
        if self.kind == "error":
            raise TrackingError(f"tracking store {self.tracker.uri} {self.value}" if self.method == "open"
                                else f"tracking store {self.tracker.uri}: {self.method} failed: {self.value}")
        if self.method == "open" and self.value[1]:  # said once, when first read
            print(f"tracking: {self.value[1]}", file=sys.stderr, flush=True)
            self.value[1] = None
        return self.value


class Tracker:
    """A client bound to one store and one experiment, through the worker process. Creating it asks the
    worker to open the store without waiting; `check()` waits for that (stages call it before writing)."""

    def __init__(self, experiment: str, root: Path | None = None, worker: subprocess.Popen | None = None):
        self.root = root or repo_root()
        self.uri = tracking_uri(self.root)
        self.worker = worker or start_worker(log_file(self.root))
        self.log = self.worker.args[2] if len(self.worker.args) > 2 else None
        self._unread: deque[Answer] = deque()
        self._open = self._ask("open", self.uri, experiment, artifact_location(self.root))

    def check(self) -> None:
        """Wait until the store is open; an unusable or unreachable store raises here."""
        self._open.get()

    @property
    def experiment_id(self) -> str:
        return self._open.get()[0]

    def _write(self, method: str, args: tuple, answer: bool) -> None:
        try:
            self.worker.stdin.write(json.dumps([method, args, answer]).encode() + b"\n")
            self.worker.stdin.flush()
        except BrokenPipeError:
            self._exited()

    def _exited(self):
        raise TrackingError(f"tracking store {self.uri}: the MLflow worker exited (status {self.worker.wait()}); "
                            f"its error is in {self.log}") from None

    def _ask(self, method: str, *args: Any) -> Answer:
        """Send a call whose answer the stage will read (`Answer.get`); an error of an earlier unanswered call
        comes with it."""
        self._write(method, args, True)
        self._unread.append(Answer(self, method))
        return self._unread[-1]

    def _read(self, answer: Answer) -> None:
        while not answer.done:
            line = self.worker.stdout.readline()
            if not line:
                self._exited()
            first = self._unread.popleft()
            first.kind, first.value, first.earlier = json.loads(line)
            first.done = True

    def _call(self, method: str, *args: Any) -> Any:
        return self._ask(method, *args).get()

    def _send(self, method: str, *args: Any) -> None:
        """A call the stage does not wait for (logging); its error, if any, comes with the next answer."""
        self._write(method, args, False)

    def flush(self) -> None:
        """Wait until every call so far is done; raise the first error among them."""
        self._call("flush")

    def start(self, name: str, params: dict[str, Any], tags: dict[str, str], parent: str | None = None) -> str:
        return self._call("start", name, _strings(params), _strings(tags), parent)

    def start_runs(self, parent: tuple[str, dict, dict], children: list[tuple[str, dict, dict]]) -> Answer:
        """Ask for a parent run and its children, each (name, params, tags), without waiting:
        `.get()` gives (parent id, [child ids]) in the order given."""
        spec = lambda r: [r[0], _strings(r[1]), _strings(r[2])]  # noqa: E731
        return self._ask("start_runs", spec(parent), [spec(c) for c in children])

    def log_metrics(self, run_id: str, values: dict[str, float], step: int = 0) -> None:
        self._send("log_metrics", run_id, [(k, float(v), step) for k, v in values.items()])

    def log_curve_rows(self, run_id: str, steps: list[int], rows: list[dict[str, float]]) -> None:
        self._send("log_metrics", run_id, [(k, float(v), s) for s, row in zip(steps, rows) for k, v in row.items()])

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        self._send("set_tags", run_id, _strings(tags))

    def log_artifact(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        """Waits: the file is copied before the call returns, so the stage may then change or delete it."""
        self._call("log_artifact", run_id, str(path), artifact_path)

    def log_artifacts(self, run_id: str, folder: str | Path, artifact_path: str | None = None) -> None:
        """A folder's files, waiting as `log_artifact` does."""
        self._call("log_artifacts", run_id, str(folder), artifact_path)

    def end(self, run_id: str, status: str = "FINISHED", reason: str | None = None) -> None:
        """`reason`: why it failed, kept as the run's `monosem.failure` tag."""
        self._send("end", run_id, status, reason[:5000] if reason else None)

    def status(self, run_id: str) -> str:
        return self._call("status", run_id)

    @contextmanager
    def closing(self, run_ids: list[str], runs: Answer | None = None) -> Iterator[None]:
        """End every run still open if the block fails: FAILED on errors, KILLED on interrupts. `runs`: the
        `start_runs` answer, if the block fails before it has put the ids in `run_ids`."""
        try:
            yield
            self.flush()  # every run's logging landed (a failure here fails the block too)
        except BaseException as err:
            status = "KILLED" if isinstance(err, (KeyboardInterrupt, SystemExit)) else "FAILED"
            try:
                if runs is not None and not run_ids:
                    parent, children = runs.get()
                    run_ids += [parent, *children]
            except Exception:
                pass
            try:
                self.flush()  # an earlier logging error, if any, is reported once, here, and dropped
            except Exception:
                pass
            for run_id in run_ids:
                try:
                    if self.status(run_id) == "RUNNING":
                        self.end(run_id, status, f"{type(err).__name__}: {err}")
                except Exception:  # the store itself may be what failed; the original error matters more
                    pass
            try:
                self.flush()
            except Exception:
                pass
            raise


__all__ = ["Answer", "Tracker", "TrackingError", "input_hash", "lineage_tags", "log_file", "repo_root", "start_worker",
           "tracking_uri"]
