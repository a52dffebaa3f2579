"""The process that talks to MLflow; `monosem.store.tracking.Tracker` sends it calls over a pipe.

MLflow and its SQLAlchemy store take about 2.5 s to import and open. In a process of their own that time
runs on the other core while a stage imports torch and Lightning, instead of adding to every stage's
start-up. Run as a script by path (`python tracking_worker.py [log file]`), so it imports neither torch nor
monosem.

Protocol: one JSON line `[method, args, answer]` per call on stdin, until stdin closes. A call with `answer`
true gets one JSON line on stdout, `["ok", result, earlier]` or `["error", message, earlier]`, where `earlier`
is the first error of the unanswered calls since the last answer (or null); unanswered calls (logging) let the
stage go on while this process writes. It ignores SIGINT and SIGTERM: an interrupted stage marks its
open runs KILLED through it, and it exits when the stage's end closes the pipe. If the stage dies without
ending the runs it started (SIGKILL, the OOM killer), this process ends them KILLED when the pipe closes.

Errors are one line; MLflow's and SQLAlchemy's messages and tracebacks go to the log file named on the
command line (its path is in the line), not to the stage's terminal.
"""

import json
import os
import signal
import socket
import sqlite3
import sys
import time
import traceback
from pathlib import Path
from urllib.parse import unquote

if __name__ == "__main__":
    sys.path.pop(0)  # this file's folder holds monosem.store's modules: they must not shadow packages
ANSWERS = LOG = None


def mlflow_settings() -> None:
    """No telemetry, and fail fast (not after minutes of retries) when a server is down: set before mlflow is
    imported."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")


def setup(log: str | None) -> None:
    """This process as a worker: answers on the pipe that is stdout, MLflow's own output to the log."""
    global ANSWERS, LOG
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ANSWERS = os.fdopen(os.dup(1), "wb")  # the pipe; anything MLflow prints goes to stderr instead
    if log:
        try:
            Path(log).parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(fd, 2)
            os.close(fd)
            LOG = log
        except OSError:  # an unwritable checkout: MLflow's messages stay on the terminal
            pass
    os.dup2(2, 1)
    mlflow_settings()


if __name__ == "__main__":
    setup(sys.argv[1] if len(sys.argv) > 1 else None)
else:
    mlflow_settings()

import psutil  # noqa: E402
from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME  # noqa: E402

if __name__ != "__main__" or not os.environ.get("MLFLOW_TRACKING_URI", "").startswith("http"):
    import mlflow.store.tracking.sqlalchemy_store  # noqa: E402,F401  a database store's code, loaded while waiting

EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
HOST = socket.gethostname()


def started(pid: int) -> str:
    """When process `pid` started (seconds since the epoch; "" if that cannot be read): with the pid, it names
    one process, as pids are reused."""
    try:
        return f"{psutil.Process(pid).create_time():.2f}"
    except psutil.Error:
        return ""


# The stage that started this worker owns the runs it creates.
OWNER = {"monosem.host": HOST, "monosem.pid": str(os.getppid()), "monosem.pid_started": started(os.getppid())}


def alive(tags: dict[str, str]) -> bool:
    """Whether the process the owner tags name may still run: True unless it is on this host and its pid is
    gone or belongs to a process started at another time (another host's processes are unknowable)."""
    if tags.get("monosem.host") != HOST or not tags.get("monosem.pid_started"):
        return True
    try:
        return abs(psutil.Process(int(tags["monosem.pid"])).create_time() - float(tags["monosem.pid_started"])) < 1
    except psutil.NoSuchProcess:  # a zombie too
        return False
    except (psutil.Error, ValueError):  # cannot tell: leave its runs alone
        return True


def one_line(err: BaseException) -> str:
    """The innermost cause of an error (SQLAlchemy's wraps the driver's, MLflow's wraps SQLAlchemy's), in one line."""
    while err.__cause__ is not None or getattr(err, "orig", None) is not None:
        err = err.__cause__ or err.orig
    lines = [line for line in str(err).splitlines() if line.strip()] or [""]
    return f"{type(err).__name__}: {lines[0]}"


def details(err: BaseException) -> str:
    """Write the whole error to the log; the line that points the user at it."""
    if LOG is None:
        return ""
    print(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} stage process {OWNER['monosem.pid']}", file=sys.stderr)
    traceback.print_exception(err, file=sys.stderr)
    sys.stderr.flush()
    return f" (details: {LOG})"


class Refused(Exception):
    """An error already put in one line."""


class Store:
    """One client, one experiment; the calls `Tracker` makes."""

    def __init__(self):
        self.open_runs: set[str] = set()  # started here and not yet ended

    def open(self, uri: str, experiment: str, artifact_location: str | None) -> list:
        """[experiment id, a note for the user or None]. The store must be usable and writable: a real write
        (the experiment's kind tag, written again) fails a read-only or full store here, before any work."""
        try:
            self.client = MlflowClient(tracking_uri=uri)
            exp = self.client.get_experiment_by_name(experiment)
        except MlflowException as err:
            raise Refused(f"unusable: {one_line(err)}{details(err)}") from None
        except Exception as err:  # connection errors surface as many types; name the store either way
            raise Refused(f"unreachable: {one_line(err)}{details(err)}") from None
        note = None
        try:
            if exp is None:
                try:
                    self.experiment_id = self.client.create_experiment(
                        experiment, artifact_location=artifact_location, tags=EXPERIMENT_KIND)
                    return [self.experiment_id, None]
                except MlflowException:  # created meanwhile by a parallel stage
                    exp = self.client.get_experiment_by_name(experiment)
                    if exp is None:
                        raise
            self.experiment_id = exp.experiment_id
            kind = exp.tags.get("mlflow.experimentKind", EXPERIMENT_KIND["mlflow.experimentKind"])
            self.client.set_experiment_tag(self.experiment_id, "mlflow.experimentKind", kind)
            if artifact_location and exp.artifact_location != artifact_location:
                note = relocate(uri, exp.artifact_location, artifact_location)
        except Exception as err:
            raise Refused(f"is not writable: {one_line(err)}{details(err)}") from None
        return [self.experiment_id, note]

    def start(self, name: str, params: dict[str, str], tags: dict[str, str], parent: str | None) -> str:
        """A run; without a parent it is a stage's own (`train@LR1`, `report`): its name is its `monosem.stage`,
        and the runs of that stage left RUNNING by a process that is gone are ended first."""
        if parent is None:
            self.end_orphans(name)
            tags = tags | {"monosem.stage": name}
        tags = tags | OWNER | {MLFLOW_RUN_NAME: name} | ({MLFLOW_PARENT_RUN_ID: parent} if parent else {})
        run_id = self.client.create_run(self.experiment_id, run_name=name, tags=tags).info.run_id
        self.open_runs.add(run_id)
        items = [Param(k, v[:6000]) for k, v in params.items()]
        try:
            for i in range(0, len(items), 100):
                self.client.log_batch(run_id, params=items[i:i + 100])
        except Exception:
            self.end(run_id, "FAILED")
            raise
        return run_id

    def start_runs(self, parent: list, children: list[list]) -> list:
        """A parent run (a stage's: see `start`) and its children, each [name, params, tags]: [parent id, [child
        ids]], the children tagged with their parent's stage. If one fails, the runs already created end FAILED
        before the error is answered."""
        stage = {"monosem.stage": parent[0]}
        made = [self.start(*parent, None)]
        try:
            for name, params, tags in children:
                made.append(self.start(name, params, tags | stage, made[0]))
        except Exception:
            for run_id in made:
                self.end(run_id, "FAILED")
            raise
        return [made[0], made[1:]]

    def end_orphans(self, stage: str) -> None:
        """End KILLED, with a note, the runs of `stage` whose owning process no longer exists on this host."""
        running = self.client.search_runs([self.experiment_id], "attributes.status = 'RUNNING'", max_results=50000)
        for run in running:
            tags = run.data.tags
            if tags.get("monosem.stage") == stage and "monosem.pid" in tags and not alive(tags):
                self.end(run.info.run_id, "KILLED", f"its process ({tags['monosem.pid']} on {HOST}) ended without "
                                                    f"ending it (SIGKILL, the OOM killer or a restart); ended by the "
                                                    f"next {stage} (process {OWNER['monosem.pid']})")

    def log_metrics(self, run_id: str, rows: list[list]) -> None:
        """(key, value, step) rows, in batches of MLflow's limit of 1000."""
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v, step in rows]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(run_id, metrics=metrics[i:i + 1000])

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])

    def log_artifact(self, run_id: str, path: str, artifact_path: str | None) -> None:
        self.client.log_artifact(run_id, path, artifact_path)

    def log_artifacts(self, run_id: str, path: str, artifact_path: str | None) -> None:
        self.client.log_artifacts(run_id, path, artifact_path)

    def end(self, run_id: str, status: str, note: str | None = None) -> None:
        if note:
            self.set_tags(run_id, {"monosem.failure": note})
        self.client.set_terminated(run_id, status=status)
        self.open_runs.discard(run_id)

    def status(self, run_id: str) -> str:
        return self.client.get_run(run_id).info.status

    def flush(self) -> None:
        """Nothing: answering it says every earlier call is done."""

    def abandoned(self) -> None:
        """The stage is gone (the pipe closed) without ending runs it started: end them KILLED."""
        for run_id in list(self.open_runs):
            try:
                self.end(run_id, "KILLED", f"its process ({OWNER['monosem.pid']} on {HOST}) ended without ending it "
                                           f"(SIGKILL, the OOM killer or a crash)")
            except Exception as err:
                details(err)


def relocate(uri: str, old: str, new: str) -> str | None:
    """Point a copied or moved checkout's store at its own artifacts.

    The default store keeps artifacts beside it, in `<checkout>/mlartifacts`, but MLflow stores that location
    as an absolute path: in a copy (`cp -a`, a restored backup, a moved folder) the experiment and its runs
    would still point into the original checkout, and new runs would write there. Every location under the
    old checkout is rewritten to the same place under this one (the store's own SQLite file: MLflow has no
    call that changes an experiment's artifact location). A location elsewhere was set on purpose: kept."""
    suffix = "/mlartifacts"
    if not (uri.startswith("sqlite:///") and old.startswith("file://") and old.endswith(suffix)):
        return None
    old_root, new_root = old[:-len(suffix)], new[:-len(suffix)]  # file:// URIs
    path = lambda u: unquote(u[len("file://"):])  # noqa: E731
    pairs = [(f"{old_root}/", f"{new_root}/"), (f"{path(old_root)}/", f"{path(new_root)}/")]  # MLflow keeps both
    moved = 0
    with sqlite3.connect(uri[len("sqlite:///"):], timeout=60) as db:
        for table, column in (("experiments", "artifact_location"), ("runs", "artifact_uri"),
                              ("logged_models", "artifact_location")):
            for before, after in pairs:
                cur = db.execute(f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                                 f"WHERE substr({column}, 1, ?) = ?", (after, len(before) + 1, len(before), before))
                moved += cur.rowcount if table == "runs" else 0
    return (f"this checkout's MLflow store was copied or moved from {path(old_root)}: its {moved} runs and new ones "
            f"keep their artifacts in {path(new)}")


def serve() -> None:
    global ANSWERS
    store, earlier = Store(), None
    for line in sys.stdin.buffer:
        method, args, answer = json.loads(line)
        try:
            kind, value = "ok", getattr(store, method)(*args)
        except Exception as err:
            kind = "error"
            value = str(err) if isinstance(err, Refused) else f"{one_line(err)}{details(err)}"
            if not answer:
                earlier = earlier or f"{method} failed: {value}"
        if answer:
            try:
                ANSWERS.write(json.dumps([kind, value, earlier]).encode() + b"\n")
                ANSWERS.flush()
            except OSError:  # the stage has already exited (it failed): nobody to answer
                ANSWERS = open(os.devnull, "wb")
                break
            earlier = None
    store.abandoned()


if __name__ == "__main__":
    serve()
