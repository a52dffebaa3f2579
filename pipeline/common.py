"""What every stage shares: the file layout, and turning known failures into one clear line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Callable

# Stages import the library from this checkout's src/ (a DVC dependency), not from wherever the
# environment's editable install points: a queued experiment's temporary copy then runs its own code.
SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))

import server  # noqa: E402  (pipeline/server.py: standard library only)

# A stage runs as a fork of the stage server when one is up (pipeline/server.py: the imports below are then
# already done); this process then only waits for it. Otherwise it starts one for the next stages and runs here.
LOGGING = ("train", "measure", "interpret", "sae", "report", "validate")  # the stages with an MLflow worker
STAGES = ("generate", *LOGGING)
if Path(sys.argv[0]).stem in STAGES:
    server.hand_over()


def _start_worker(fork: bool = False):
    """The stages that log start MLflow's worker process first (`monosem.tracking.start_worker`, which this
    cannot import before torch), so MLflow loads on the other core while this process imports torch.
    Its log: `monosem.tracking.log_file` of the repo root ($DVC_ROOT under DVC, whose queued experiments run in
    a temporary copy; else where the stage runs, the root)."""
    if Path(sys.argv[0]).stem not in LOGGING:
        return None
    if fork:  # a fork of this process, which has MLflow imported already (the stage server's preload)
        from monosem import tracking_worker

        return tracking_worker.fork(str(_log()))
    return subprocess.Popen([sys.executable, str(SRC / "monosem" / "tracking_worker.py"), str(_log())],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)


def _log() -> Path:
    return Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve() / ".monosem" / "tracking.log"


_WORKER = _start_worker()


def forked() -> None:
    """In a stage forked by the stage server: what importing this module does for a stage (its worker)."""
    global _WORKER
    _WORKER = _start_worker(fork=True)


import torch  # noqa: E402

from monosem.artifacts import load_tensors, read_json  # noqa: E402
from monosem.config import Instance, Params, load_params  # noqa: E402
from monosem.errors import MonosemError, ParamsError  # noqa: E402
from monosem.families import family  # noqa: E402
from monosem.memory import available_host, estimates, refusal  # noqa: E402
from monosem.tracking import Tracker  # noqa: E402
from monosem.worlds import WorldData  # noqa: E402

DATA, MODELS, RESULTS, REPORTS = Path("data/worlds"), Path("models"), Path("results"), Path("reports")


_TRACKERS: list[Tracker] = []


def open_tracker(experiment: str) -> Tracker:
    """The stage's tracker, through the worker started at import (an unusable store fails here). `run`
    waits for its logging to land when the stage's main returns."""
    global _WORKER
    worker, _WORKER = _WORKER, None
    _TRACKERS.append(Tracker(experiment, worker=worker))
    return _TRACKERS[-1]


def world_dir(name: str) -> Path:
    return DATA / name


def sae_dirs(name: str) -> tuple[Path, Path]:
    """An SAE study's exported SAEs and its results (under `saes/`, a name no study may take)."""
    return MODELS / "saes" / name, RESULTS / "saes" / name


def model_dir(study: str) -> Path:
    return MODELS / study


def result_dir(study: str) -> Path:
    return RESULTS / study


def study_params(name: str, section: str = "studies") -> tuple[Params, str]:
    params = load_params()
    if name not in getattr(params, section):
        what = {"studies": "study", "saes": "SAE study"}[section]
        raise ParamsError(f"params.yaml: {section}.{name}: no such {what}; allowed: {sorted(getattr(params, section))}")
    check_memory(params, [f"{Path(sys.argv[0]).stem}@{name}"])
    torch.set_num_threads(params.runtime.threads or torch.get_num_threads())
    return params, name


def check_memory(params: Params, stages: list[str]) -> None:
    """Refuse, before any work, a stage whose estimated memory (monosem.memory) exceeds what this machine, or
    the GPU it trains on, has free."""
    rt = params.runtime
    on_gpu = rt.accelerator != "cpu" and torch.cuda.is_available()
    host, device = available_host(), (torch.cuda.mem_get_info()[0] if on_gpu else None)
    for est in estimates(params):
        if est.stage in stages:
            trains = est.stage.startswith(("train@", "sae@"))
            line = refusal(est, host, device if trains else None, rt.devices if est.stage.startswith("train@") else 1)
            if line:
                raise ParamsError(f"params.yaml: {line}")


def groups(instances: list[Instance], by_data: WorldData | None = None) -> list[list[int]]:
    """Indices of instances that train together, in order; given their world, split further into the
    instances that see the same data (one feature density, and one embedder when each seed has its own), which
    are measured together."""
    out: dict[tuple, list[int]] = defaultdict(list)
    for i, inst in enumerate(instances):
        data = () if by_data is None else (inst.data.eps, by_data.cfg.embedder == "per_seed" and inst.seed)
        out[inst.group_key + data].append(i)
    return list(out.values())


def instance_world(world: WorldData, state: dict[str, torch.Tensor]) -> WorldData:
    """The world as one trained model saw it: with its own embedders when they were drawn per seed (saved
    with its weights)."""
    return world.with_embedders(state["P"], state.get("Q")) if "P" in state else world


def load_manifest(study: str) -> tuple[dict, list[Instance]]:
    manifest = read_json(model_dir(study) / "instances.json")
    return manifest, [Instance(**row["instance"]) for row in manifest["instances"]]


def load_states(study: str, manifest: dict, world: WorldData) -> list[dict[str, torch.Tensor]]:
    """Each instance's tensors, refused unless each has the shape its instance and world imply."""
    shapes = {}
    for row in manifest["instances"]:
        k, n = row["instance"]["model"]["neurons"], world.cfg.n_features
        weights = family(row["instance"]["model"].get("kind", "jermyn")).weight_shapes(k, n, world.cfg.d_embed, world.d_out)
        if world.cfg.embedder == "per_seed":  # the model's own embedders
            weights |= {"P": (world.cfg.d_embed, n)} | ({"Q": (world.cfg.d_embed, n)} if world.Q is not None else {})
        shapes[row["label"]] = weights | {"act_mean": (k,), "act_var": (k,)}
    tensors = load_tensors(model_dir(study) / "weights.safetensors",
                           {f"{label}/{name}": shape for label, s in shapes.items() for name, shape in s.items()})
    return [{name: tensors[f"{label}/{name}"] for name in s} for label, s in shapes.items()]


def run(main: Callable[..., None]) -> None:
    """Run a stage; known failures print one line and exit non-zero (2 for bad params, 1 otherwise).

    SIGTERM (`dvc queue kill`, a CI timeout) becomes SystemExit, so open MLflow runs are marked KILLED.
    """
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        main(*sys.argv[1:])
        for tracker in _TRACKERS:  # logging the stage did not wait for: done, or its error reported
            tracker.flush()
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except MonosemError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
