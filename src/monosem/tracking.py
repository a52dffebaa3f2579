"""The only module that talks to MLflow.

Contract (DESIGN.md): the URI is `$MLFLOW_TRACKING_URI`, else `sqlite:///<repo root>/mlflow.db` with
artifacts in `<repo root>/mlartifacts`, the repo root being `$DVC_ROOT` under DVC (queued experiments run
in a temporary copy) or else the git top level. One run per trained instance, nested under one parent run
per train-stage execution; later stages log into the same runs by id.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

# Before mlflow is imported: no telemetry, and fail fast (not after minutes of retries) when a server is down.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")

import mlflow  # noqa: E402
from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME  # noqa: E402

from .errors import TrackingError  # noqa: E402

EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def repo_root() -> Path:
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True)
        return Path(top.stdout.strip())
    except (subprocess.CalledProcessError, FileNotFoundError):
        return Path.cwd().resolve()


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


def input_hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _metrics(values: dict[str, float], step: int) -> list[Metric]:
    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, step) for k, v in values.items()]


class Tracker:
    """A client bound to one store and one experiment."""

    def __init__(self, experiment: str, root: Path | None = None):
        self.root = root or repo_root()
        self.uri = tracking_uri(self.root)
        self.client = MlflowClient(tracking_uri=self.uri)
        try:
            self.experiment_id = self._experiment(experiment)
        except MlflowException as err:
            raise TrackingError(f"tracking store {self.uri} unusable: {str(err).splitlines()[0]}") from None
        except Exception as err:  # connection errors surface as many types; name the store either way
            raise TrackingError(f"tracking store {self.uri} unreachable: {type(err).__name__}: {err}") from None

    def _experiment(self, name: str) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is None:
            try:
                return self.client.create_experiment(name, artifact_location=artifact_location(self.root),
                                                     tags=EXPERIMENT_KIND)
            except MlflowException:  # created meanwhile by a parallel stage
                exp = self.client.get_experiment_by_name(name)
                if exp is None:
                    raise
        return exp.experiment_id

    def start(self, name: str, params: dict[str, Any], tags: dict[str, str], parent: str | None = None) -> str:
        tags = dict(tags) | {MLFLOW_RUN_NAME: name} | ({MLFLOW_PARENT_RUN_ID: parent} if parent else {})
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run.info.run_id, params=items[i:i + 100])
        return run.info.run_id

    def log_metrics(self, run_id: str, values: dict[str, float], step: int = 0) -> None:
        self.log_series(run_id, _metrics(values, step))

    def log_series(self, run_id: str, metrics: list[Metric]) -> None:
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(run_id, metrics=metrics[i:i + 1000])

    def log_curve_rows(self, run_id: str, steps: list[int], rows: list[dict[str, float]]) -> None:
        now = int(time.time() * 1000)
        self.log_series(run_id, [Metric(k, float(v), now, s) for s, row in zip(steps, rows) for k, v in row.items()])

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def end(self, run_id: str, status: str = "FINISHED", reason: str | None = None) -> None:
        if reason:
            self.set_tags(run_id, {"monosem.failure": reason[:5000]})
        self.client.set_terminated(run_id, status=status)

    def status(self, run_id: str) -> str:
        return self.client.get_run(run_id).info.status

    @contextmanager
    def closing(self, run_ids: list[str]) -> Iterator[None]:
        """End every run still open if the block fails: FAILED on errors, KILLED on interrupts."""
        try:
            yield
        except BaseException as err:
            status = "KILLED" if isinstance(err, (KeyboardInterrupt, SystemExit)) else "FAILED"
            for run_id in run_ids:
                try:
                    if self.status(run_id) == "RUNNING":
                        self.end(run_id, status, f"{type(err).__name__}: {err}")
                except Exception:  # the store itself may be what failed; the original error matters more
                    pass
            raise


__all__ = ["Tracker", "TrackingError", "input_hash", "lineage_tags", "repo_root", "tracking_uri", "mlflow"]
