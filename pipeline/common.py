"""What every stage shares: the file layout, and turning known failures into one clear line.

Importing it does nothing but import; a stage calls `boot.begin` before it (this checkout's library first on
the path, the MLflow worker started)."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

import torch

from monosem.config import Instance, ModelCfg, Params
from monosem.errors import ArtifactError, MonosemError, ParamsError
from monosem.params import load_params
from monosem.store.artifacts import device, is_no_space, load_tensors, no_space, read_json
from monosem.store.tracking import Tracker
from monosem.toy.families import family
from monosem.training.memory import available_host, estimates, refusal
from monosem.worlds import WorldData

import boot

DATA, MODELS, RESULTS, REPORTS = Path("data/worlds"), Path("models"), Path("results"), Path("reports")


_TRACKERS: list[Tracker] = []


def open_tracker(experiment: str) -> Tracker:
    """The stage's tracker, through the worker `boot.begin` started (an unusable store fails here). `run`
    waits for its logging to land when the stage's main returns."""
    worker, boot.WORKER = boot.WORKER, None
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


def compute_device(rt) -> torch.device:
    """Where measure, interpret and the SAE stages compute: the GPU when `runtime.accelerator` asks for one and
    there is one (as training does), else the CPU."""
    return torch.device("cuda" if rt.accelerator != "cpu" and torch.cuda.is_available() else "cpu")


def check_memory(params: Params, stages: list[str]) -> None:
    """Refuse, before any work, a stage whose estimated memory (monosem.training.memory) exceeds what this machine, or
    the GPU it trains on, has free."""
    rt = params.runtime
    on_gpu = compute_device(rt).type == "cuda"
    host, device = available_host(), (torch.cuda.mem_get_info()[0] if on_gpu else None)
    for est in estimates(params):
        if est.stage in stages:
            computes = est.stage.startswith(("train@", "measure@", "sae@"))  # on the GPU, if there is one
            line = refusal(est, host, device if computes else None, rt.devices if est.stage.startswith("train@") else 1)
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
        model = ModelCfg(**row["instance"]["model"])
        k, n = model.neurons, world.cfg.n_features
        weights = family(model.kind).weight_shapes(k, n, world.cfg.d_embed, world.d_out)
        if world.cfg.embedder == "per_seed":  # the model's own embedders
            weights |= {"P": (world.cfg.d_embed, n)} | ({"Q": (world.cfg.d_embed, n)} if world.Q is not None else {})
        shapes[row["label"]] = weights | {"act_mean": (k,), "act_var": (k,)}
    tensors = load_tensors(model_dir(study) / "weights.safetensors",
                           {f"{label}/{name}": shape for label, s in shapes.items() for name, shape in s.items()})
    return [{name: tensors[f"{label}/{name}"] for name in s} for label, s in shapes.items()]


def run(main: Callable[..., None]) -> None:
    """Run a stage; known failures print one line and exit non-zero (2 for bad params, 1 otherwise).

    SIGTERM (`dvc queue kill`, a CI timeout, or the DVC process running the stage gone: `boot.end_with_dvc`)
    becomes SystemExit, so open MLflow runs are marked KILLED. A full disk is one line too, naming the file and
    the device (`atomic_path` names them for every output written through it; `full_disk` for other writes).
    """
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        main(*sys.argv[1:])
        for tracker in _TRACKERS:  # logging the stage did not wait for: done, or its error reported
            tracker.flush()
        record_cost()
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except MonosemError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except OSError as err:
        if not is_no_space(err):
            raise
        print(f"error: {full_disk(err)}", file=sys.stderr)
        sys.exit(1)


COSTS = Path(".monosem") / "stages.jsonl"  # under the repo root (boot.root)


def record_cost() -> None:
    """Append the finished stage's cost to .monosem/stages.jsonl: its wall seconds from its first import, the
    peak resident memory of its process (not its MLflow worker's) and, where it used one, the GPU memory it
    allocated at most. `benchmarks/stage_costs.py` sums them per stage kind against the projections."""
    stage = os.environ.get("DVC_STAGE") or "@".join([Path(sys.argv[0]).stem] + [a for a in sys.argv[1:2] if a[:1] != "-"])
    entry = {"stage": stage, "seconds": round(time.perf_counter() - boot.STARTED, 3),
             "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # KiB on Linux
             "peak_device": torch.cuda.max_memory_allocated() if torch.cuda.is_initialized() else None,
             "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    path = boot.root() / COSTS
    path.parent.mkdir(exist_ok=True)
    with open(path, "a") as f:  # one short write in append mode: lines of concurrent stages do not interleave
        f.write(json.dumps(entry) + "\n")


def full_disk(err: OSError) -> ArtifactError:
    """A full disk met outside `atomic_path`: the file when the error names it (an open), else (a write, which
    names none) the fullest file system of the stage's output folders."""
    if err.filename:
        return no_space(err.filename)
    folders = [p for p in (DATA, MODELS, RESULTS, REPORTS, Path.cwd()) if p.exists()]

    def free(folder: Path) -> float:
        try:
            return shutil.disk_usage(folder).free
        except OSError:
            return float("inf")

    return ArtifactError(f"an output not written: no space left on device ({device(min(folders, key=free))})")
