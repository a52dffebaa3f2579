"""validate: params.yaml in full, each stage's memory against this machine's, and the tracking store, before
`dvc repro` runs (`make repro` runs this first). DVC deletes a stage's outputs before it runs the stage, so a
bad value that only the stage itself found would cost them (they come back from DVC's cache once fixed)."""

import boot

boot.begin(logs=True)  # first: MLflow's worker loads while this process imports torch

from monosem.config import Defaults
from monosem.errors import ParamsError
from monosem.params import load_params
from monosem.training.memory import estimates

from common import check_memory, open_tracker, run


def main() -> None:
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


if __name__ == "__main__":
    run(main)
