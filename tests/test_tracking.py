"""The tracker and its MLflow worker process, on a real SQLite store in a temp directory."""

import pytest
from mlflow.tracking import MlflowClient

from monosem.errors import TrackingError
from monosem.store.tracking import Tracker


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tmp_path


def test_calls_through_the_worker_reach_the_store(store):
    tracker = Tracker("exp", root=store)
    parent = tracker.start("parent", {"a": 1}, {"t": "x"})
    child = tracker.start("child", {"lr": 0.01, "long": "y" * 7000}, {}, parent=parent)
    tracker.log_metrics(child, {"loss": 0.5, "n": 3}, step=7)
    tracker.log_curve_rows(child, [0, 10], [{"loss": 1.0}, {"loss": float("nan")}])
    (store / "fig.png").write_bytes(b"png")
    tracker.log_artifact(child, store / "fig.png", "figures")
    assert tracker.status(child) == "RUNNING"
    tracker.end(child, "FAILED", "diverged")
    tracker.end(parent)

    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    run = client.get_run(child)
    assert run.info.status == "FAILED" and run.data.tags["monosem.failure"] == "diverged"
    assert run.data.tags["mlflow.parentRunId"] == parent and run.data.tags["mlflow.runName"] == "child"
    assert run.data.params["lr"] == "0.01" and len(run.data.params["long"]) == 6000
    assert run.data.metrics["n"] == 3.0
    history = client.get_metric_history(child, "loss")
    assert sorted((m.step, m.value) for m in history if m.value == m.value) == [(0, 1.0), (7, 0.5)]
    assert [m.step for m in history if m.value != m.value] == [10]  # NaN survives the pipe
    assert [a.path for a in client.list_artifacts(child, "figures")] == ["figures/fig.png"]
    assert client.get_experiment(tracker.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    assert Tracker("exp", root=store).experiment_id == tracker.experiment_id  # found, not created again


def test_a_store_error_is_one_tracking_error_naming_the_store_and_the_call(store):
    tracker = Tracker("exp", root=store)
    with pytest.raises(TrackingError, match=r"^tracking store sqlite:///.*mlflow.db: status failed: .*nope"):
        tracker.status("nope")
    assert tracker.start("still usable", {}, {})  # the worker survives a failed call


def test_logging_does_not_wait_and_its_error_comes_with_the_next_answer(store):
    tracker = Tracker("exp", root=store)
    run = tracker.start("r", {}, {})
    tracker.log_metrics("no-such-run", {"loss": 1.0})  # returns at once
    tracker.log_metrics(run, {"loss": 2.0})  # later calls still run
    with pytest.raises(TrackingError, match=r"log_metrics failed: .*no-such-run"):
        tracker.flush()
    tracker.flush()  # reported once
    assert MlflowClient(f"sqlite:///{store / 'mlflow.db'}").get_run(run).data.metrics == {"loss": 2.0}


def test_runs_asked_for_together_come_back_in_order_and_a_failure_leaves_none_running(store):
    tracker = Tracker("exp", root=store)
    runs = tracker.start_runs(("p", {"a": 1}, {}), [("c1", {}, {"t": "x"}), ("c2", {"b": 2}, {})])
    parent, (c1, c2) = runs.get()
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    assert [client.get_run(r).info.run_name for r in (parent, c1, c2)] == ["p", "c1", "c2"]
    assert client.get_run(c2).data.tags["mlflow.parentRunId"] == parent
    bad = tracker.start_runs(("q", {}, {}), [("d1", {}, {}), ("d2", {"bad name!": 1}, {})])
    with pytest.raises(TrackingError, match="start_runs failed"):
        bad.get()
    made = [r for r in client.search_runs([tracker.experiment_id]) if r.info.run_name in ("q", "d1", "d2")]
    assert sorted(r.info.run_name for r in made) == ["d1", "d2", "q"] and {r.info.status for r in made} == {"FAILED"}


def test_closing_ends_runs_whose_ids_the_block_never_read(store):
    tracker = Tracker("exp", root=store)
    runs = tracker.start_runs(("p", {}, {}), [("c", {}, {})])
    ids: list[str] = []
    with pytest.raises(KeyboardInterrupt), tracker.closing(ids, runs):
        raise KeyboardInterrupt  # e.g. while Lightning was still importing
    assert len(ids) == 2 and [tracker.status(r) for r in ids] == ["KILLED", "KILLED"]


def test_an_unusable_store_is_the_error_every_call_reports(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "nosuch://store")
    tracker = Tracker("exp", root=tmp_path)  # returns at once: the worker opens the store meanwhile
    runs = tracker.start_runs(("p", {}, {}), [])
    for call in (tracker.check, runs.get, tracker.flush):
        with pytest.raises(TrackingError, match=r"^tracking store nosuch://store unusable: .*nosuch"):
            call()


def test_a_dead_worker_is_a_tracking_error_not_a_hang(store):
    tracker = Tracker("exp", root=store)
    tracker.worker.kill()
    tracker.worker.wait()
    with pytest.raises(TrackingError, match="the MLflow worker exited"):
        tracker.start("x", {}, {})


def test_closing_marks_open_runs_failed_on_error_and_killed_on_interrupt(store):
    tracker = Tracker("exp", root=store)
    for err, status in ((ValueError("boom"), "FAILED"), (KeyboardInterrupt(), "KILLED")):
        runs = [tracker.start("a", {}, {}), tracker.start("b", {}, {})]
        tracker.end(runs[1])
        with pytest.raises(type(err)), tracker.closing(runs):
            raise err
        assert [tracker.status(r) for r in runs] == [status, "FINISHED"]
