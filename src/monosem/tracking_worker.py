"""The process that talks to MLflow; `monosem.tracking.Tracker` sends it calls over a pipe.

MLflow and its SQLAlchemy store take about 2.5 s to import and open. In a process of their own that time
runs on the other core while a stage imports torch and Lightning, instead of adding to every stage's
start-up. Run as a script by path (`python tracking_worker.py`), so it imports neither torch nor monosem.

Protocol: one JSON line `[method, args, answer]` per call on stdin, until stdin closes. A call with `answer`
true gets one JSON line on stdout, `["ok", result, earlier]` or `["error", message, earlier]`, where `earlier`
is the first error of the unanswered calls since the last answer (or null); unanswered calls (logging) let the
stage go on while this process writes. It ignores SIGINT and SIGTERM: an interrupted stage marks its
open runs KILLED through it, and it exits when the stage's end closes the pipe.
"""

import json
import os
import signal
import sys
import time

sys.path.pop(0)  # this file's folder holds monosem's modules (errors, config, ...): they must not shadow packages
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
ANSWERS = os.fdopen(os.dup(1), "wb")  # the pipe; anything MLflow prints goes to stderr instead
os.dup2(2, 1)

# Before mlflow is imported: no telemetry, and fail fast (not after minutes of retries) when a server is down.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")

from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME  # noqa: E402

if not os.environ.get("MLFLOW_TRACKING_URI", "").startswith("http"):
    import mlflow.store.tracking.sqlalchemy_store  # noqa: E402,F401  a database store's code, loaded while waiting

EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


class Store:
    """One client, one experiment; the calls `Tracker` makes."""

    def open(self, uri: str, experiment: str, artifact_location: str | None) -> str:
        try:
            self.client = MlflowClient(tracking_uri=uri)
            exp = self.client.get_experiment_by_name(experiment)
            if exp is None:
                try:
                    self.experiment_id = self.client.create_experiment(
                        experiment, artifact_location=artifact_location, tags=EXPERIMENT_KIND)
                    return self.experiment_id
                except MlflowException:  # created meanwhile by a parallel stage
                    exp = self.client.get_experiment_by_name(experiment)
                    if exp is None:
                        raise
            self.experiment_id = exp.experiment_id
            return self.experiment_id
        except MlflowException as err:
            raise RuntimeError(f"unusable: {str(err).splitlines()[0]}") from None
        except Exception as err:  # connection errors surface as many types; name the store either way
            raise RuntimeError(f"unreachable: {type(err).__name__}: {str(err).splitlines()[0]}") from None

    def start(self, name: str, params: dict[str, str], tags: dict[str, str], parent: str | None) -> str:
        tags = tags | {MLFLOW_RUN_NAME: name} | ({MLFLOW_PARENT_RUN_ID: parent} if parent else {})
        run_id = self.client.create_run(self.experiment_id, run_name=name, tags=tags).info.run_id
        items = [Param(k, v[:6000]) for k, v in params.items()]
        try:
            for i in range(0, len(items), 100):
                self.client.log_batch(run_id, params=items[i:i + 100])
        except Exception:
            self.end(run_id, "FAILED")
            raise
        return run_id

    def start_runs(self, parent: list, children: list[list]) -> list:
        """A parent run and its children, each [name, params, tags]: [parent id, [child ids]]. If one fails, the
        runs already created end FAILED before the error is answered."""
        made = [self.start(*parent, None)]
        try:
            for child in children:
                made.append(self.start(*child, made[0]))
        except Exception:
            for run_id in made:
                self.end(run_id, "FAILED")
            raise
        return [made[0], made[1:]]

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

    def end(self, run_id: str, status: str) -> None:
        self.client.set_terminated(run_id, status=status)

    def status(self, run_id: str) -> str:
        return self.client.get_run(run_id).info.status

    def flush(self) -> None:
        """Nothing: answering it says every earlier call is done."""


def serve() -> None:
    store, earlier = Store(), None
    for line in sys.stdin.buffer:
        method, args, answer = json.loads(line)
        try:
            kind, value = "ok", getattr(store, method)(*args)
        except Exception as err:
            kind, value = "error", str(err) if isinstance(err, RuntimeError) else f"{type(err).__name__}: {err}"
            if not answer:
                earlier = earlier or f"{method} failed: {value}"
        if answer:
            ANSWERS.write(json.dumps([kind, value, earlier]).encode() + b"\n")
            ANSWERS.flush()
            earlier = None


if __name__ == "__main__":
    serve()
