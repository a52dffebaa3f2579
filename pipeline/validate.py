"""validate: params.yaml in full, each stage's memory against this machine's, and the tracking store, before
`dvc repro` runs (`make repro` runs this first). DVC deletes a stage's outputs before it runs the stage, so a
bad value that only the stage itself found would cost them (they come back from DVC's cache once fixed).
Then the projected time of the stages about to run (monosem.training.timing), and a refusal above the limit:

    python pipeline/validate.py [--limit MINUTES]      (0: no limit; make repro passes LIMIT, default 120)
"""

import boot

boot.begin(logs=True)  # first: MLflow's worker loads while this process imports torch

import json
import subprocess

from monosem.config import Defaults, Params
from monosem.errors import MonosemError, ParamsError
from monosem.params import load_params
from monosem.training.memory import estimates
from monosem.training.timing import about_to_run, duration, matmul_rate, stage_times, summary

from common import check_memory, compute_device, open_tracker, run


def stale_stages() -> set[str] | None:
    """The stages whose dependencies or outputs DVC reports changed; None when DVC cannot say."""
    try:
        out = subprocess.run(["dvc", "status", "--json"], capture_output=True, text=True, timeout=120)
        return set(json.loads(out.stdout or "{}")) if out.returncode == 0 else None
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None


def check_time(params: Params, limit_minutes: float) -> None:
    """Print the projected time of what `dvc repro` is about to run; refuse it above the limit."""
    on_gpu = compute_device(params.runtime).type == "cuda"
    rate = matmul_rate("cpu")
    train_rate = matmul_rate("cuda") if on_gpu else rate
    todo = about_to_run(params, stale_stages())
    times = [t for t in stage_times(params, rate, train_rate) if t.stage in todo]
    print(summary(times, train_rate, "GPU" if on_gpu else "CPU"))
    total = sum(t.seconds for t in times)
    if limit_minutes and total > limit_minutes * 60:
        raise MonosemError(
            f"projected {duration(total)}, above the limit of {duration(limit_minutes * 60)}: `make repro LIMIT=0` "
            f"runs it anyway (or LIMIT=<minutes>); `make repro PROFILE=paper-smoke` runs the paper profile's every "
            f"stage at 16 steps")


def main(*args: str) -> None:
    limit = float(args[args.index("--limit") + 1]) if "--limit" in args else 0.0
    params = load_params()
    missing = [f"defaults.{s}" for s in Defaults.model_fields if s not in params.defaults.model_fields_set]
    if missing:  # dvc.yaml declares each (a stage re-runs when its section's defaults change); DVC would stop on it
        raise ParamsError(f"params.yaml: {', '.join(missing)} missing: dvc.yaml's stages depend on them "
                          f"(`defaults: {{worlds: {{}}, studies: {{}}, saes: {{}}}}` when there are none)")
    tracker = open_tracker(params.tracking.experiment)
    check_memory(params, [e.stage for e in estimates(params)])
    tracker.check()  # usable and writable
    print(f"params.yaml: {len(params.worlds)} worlds, {len(params.studies)} studies, {len(params.saes)} SAE studies: "
          f"valid; every stage fits in memory; tracking store {tracker.uri} writable")
    check_time(params, limit)


if __name__ == "__main__":
    run(main)
