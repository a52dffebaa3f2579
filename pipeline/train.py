"""train@<study>: every sweep point × seed of a study, batched by shape, one MLflow run per instance."""

import boot

boot.begin(logs=True)  # first: MLflow's worker loads while this process imports torch

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import monosem
from monosem.config import Instance, Params, Study
from monosem.store.artifacts import load_tensors, load_world, read_metadata, save_tensors, write_csv, write_json
from monosem.store.tracking import input_hash, lineage_tags
from monosem.worlds import WorldData

from common import ParamsError, groups, model_dir, open_tracker, run, study_params, world_dir


def lightning():
    """monosem.training.toy and monosem.training.loop, imported when first needed: Lightning's ~2 s of imports then overlap
    the MLflow worker creating the study's runs."""
    from monosem.training import loop as training
    from monosem.training import toy as lit

    return lit, training


def code_hash() -> str:
    """The library's source: a checkpoint resumes only under the code that wrote it."""
    digest = hashlib.sha256()
    for path in sorted(Path(monosem.__file__).parent.rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def checkpoints(name: str, keys: list[str], resume: bool) -> dict[int, tuple]:
    """Per group, the checkpoint to continue from: only when asked, and only one made by the same world,
    instances and code (anything else is reported and ignored)."""
    found = {}
    for gi, key in enumerate(keys):
        path = model_dir(name) / "checkpoint" / f"group{gi}.safetensors"
        if not (resume and path.exists()):
            continue
        meta = json.loads(read_metadata(path).get("monosem", "{}"))
        if meta.get("key") != key:
            print(f"train@{name}: {path} was made by other params or code: not resumed", flush=True)
            continue
        found[gi] = (load_tensors(path), meta)
    return found


def process_rank(devices: int) -> int:
    """This process's global rank among a study's data-parallel processes: set by torchrun (RANK), SLURM
    (SLURM_PROCID), or Lightning's own launcher (NODE_RANK, LOCAL_RANK); 0 when training alone."""
    for var in ("RANK", "SLURM_PROCID"):
        if var in os.environ:
            return int(os.environ[var])
    return int(os.environ.get("NODE_RANK", 0)) * devices + int(os.environ.get("LOCAL_RANK", 0))


@dataclass
class Plan:
    """What a train stage does, settled before any run is created: the study's instances, its shape groups
    (one batched module each), their input hashes and any checkpoints to resume from."""

    name: str
    params: Params
    study: Study
    instances: list[Instance]
    world: WorldData
    shapes: list[list[int]]
    keys: list[str]
    resumed: dict[int, tuple]

    def module(self, lit, gi: int):
        module = lit.ToyStudyModule(self.world, [self.instances[i] for i in self.shapes[gi]])
        if gi in self.resumed:
            module.restore(*self.resumed[gi])
        return module

    @property
    def fit_args(self) -> dict:
        rt = self.params.runtime
        return {"devices": rt.devices, "strategy": rt.strategy, "num_nodes": rt.num_nodes,
                "matmul_precision": rt.matmul_precision, "cuda_graphs": rt.cuda_graphs}


def plan(name: str) -> Plan:
    params, _ = study_params(name)
    study, rt = params.studies[name], params.runtime
    ranks = rt.devices * rt.num_nodes
    instances = study.instances()
    for inst in instances:
        if inst.train.batch_size % ranks:
            raise ParamsError(f"params.yaml: studies.{name}: batch_size {inst.train.batch_size} is not divisible by "
                              f"runtime.devices × runtime.num_nodes = {ranks} (each process trains a slice of it)")
    world = load_world(world_dir(study.world))
    shapes = groups(instances)
    code = code_hash()
    keys = [input_hash(world.cfg.model_dump(), [instances[i].model_dump() for i in members], code) for members in shapes]
    return Plan(name, params, study, instances, world, shapes, keys, checkpoints(name, keys, rt.resume))


def start_runs(p: Plan, tracker):
    """The study's parent run and one run per instance, created by the MLflow worker while this trains."""
    tags = lineage_tags(tracker.root) | {"monosem.study": p.name, "monosem.world": p.study.world}
    world_params = {f"world.{k}": v for k, v in p.world.cfg.model_dump().items()} | {"world.name": p.study.world}
    resumed_at = {i: meta["step"] for gi, (_, meta) in p.resumed.items() for i in p.shapes[gi]}
    return tracker.start_runs(
        (f"train@{p.name}", world_params | {"study": p.study.model_dump_json()}, tags),
        [(f"{p.name}/{inst.label}", world_params | inst.flat_params() | {f"sweep.{k}": v for k, v in inst.point.items()},
          tags | {"monosem.label": inst.label, "monosem.point": inst.point_label, "monosem.seed": str(inst.seed),
                  "monosem.input_hash": input_hash(p.world.cfg.model_dump(), inst.model_dump())}
          | ({"monosem.resumed_at_step": str(resumed_at[i])} if i in resumed_at else {}))
         for i, inst in enumerate(p.instances)])


def train_group(p: Plan, gi: int, tracker, ids: list[str], lit, loop):
    """Train one shape group (or finish it from its checkpoint), its curves streamed to its runs."""
    members, rt = p.shapes[gi], p.params.runtime
    g0 = p.instances[members[0]]
    print(f"train@{p.name}: {len(members)} instances, k={g0.model.neurons} {g0.model.activation}, "
          f"{g0.train.steps} steps of batch {g0.train.batch_size}", flush=True)

    def sink(steps, rows):
        for j, i in enumerate(members):
            tracker.log_curve_rows(ids[i], steps, [{k: float(r[k][j]) for k in lit.CURVES} for r in rows])

    def save(step, tensors, meta):
        save_tensors(model_dir(p.name) / "checkpoint" / f"group{gi}.safetensors", tensors,
                     {"monosem": json.dumps(meta | {"key": p.keys[gi]})})

    module = p.module(lit, gi)
    if gi in p.resumed:
        print(f"train@{p.name}: resumed at step {module.start_step} from its checkpoint", flush=True)
    if module.start_step < module.steps:
        loop.fit(module, rt.accelerator, [loop.CurveSink(sink, p.params.tracking.flush_seconds)]
                 + ([loop.Checkpointer(rt.checkpoint_every, save)] if rt.checkpoint_every else []), **p.fit_args)
    else:  # the checkpoint is the end of this group's training
        sink(module.curves.steps, [module.curves.row(r) for r in range(len(module.curves.steps))])
    if rt.checkpoint_every:  # a later group's interruption does not repeat this one
        save(module.steps, *module.checkpoint())
    return module


def harvest(p: Plan, gi: int, module, curve_names, states: list, curves: list, diverged: dict) -> None:
    """A trained group's weights and activation statistics, curve rows and divergences, per instance."""
    act_var = module.act_m2 / (module.act_count - 1).clamp(min=1)
    for j, i in enumerate(p.shapes[gi]):
        inst = p.instances[i]
        states[i] = module.model.instance_state(j) | {"act_mean": module.act_mean[j].float(), "act_var": act_var[j].float()}
        if p.world.cfg.embedder == "per_seed":  # saved with the weights: measure and interpret use them
            own = p.world.for_seed(inst.seed)
            states[i] |= {"P": own.P} | ({"Q": own.Q} if own.Q is not None else {})
        if module.diverged_at[j] >= 0:
            diverged[i] = int(module.diverged_at[j])
        for r, step in enumerate(module.curves.steps):
            curves.append({"step": step, "instance": inst.label, "point": inst.point_label, "seed": inst.seed}
                          | {k: float(module.curves.values[k][r][j]) for k in curve_names})


def write_outputs(p: Plan, parent: str, ids: list[str], states: list, curves: list, diverged: dict, seconds: float):
    out = model_dir(p.name)
    save_tensors(out / "weights.safetensors",
                 {f"{inst.label}/{k}": v for inst, s in zip(p.instances, states) for k, v in s.items()})
    write_csv(out / "curves.csv", curves)
    write_json(out / "instances.json", {
        "study": p.name, "world": p.study.world, "parent_run_id": parent, "train_seconds": seconds,
        "instances": [{"label": inst.label, "run_id": rid, "diverged_at": diverged.get(i),
                       "instance": inst.model_dump()} for i, (inst, rid) in enumerate(zip(p.instances, ids))]})


def log_models(p: Plan, tracker, parent: str, ids: list[str], states: list, diverged: dict, seconds: float) -> None:
    """Each model's weights as its run's artifact; diverged runs end FAILED, the others and the parent FINISHED."""
    tracker.log_metrics(parent, {"train_seconds": seconds, "n_instances": len(p.instances)})
    with tempfile.TemporaryDirectory() as tmp:
        for inst, rid, state in zip(p.instances, ids, states):
            path = Path(tmp) / "model.safetensors"
            save_tensors(path, state, {"activation": inst.model.activation, "label": inst.label})
            tracker.log_artifact(rid, path, "model")
    for i, rid in enumerate(ids):
        if i in diverged:
            tracker.end(rid, "FAILED", f"diverged: non-finite loss at step {diverged[i]}")
        else:
            tracker.end(rid)
    tracker.end(parent)


def main(name: str) -> None:
    p = plan(name)
    rt = p.params.runtime
    if process_rank(rt.devices) != 0:  # another data-parallel process: it trains; rank 0 logs and writes
        lit, loop = lightning()
        for gi in range(len(p.shapes)):
            module = p.module(lit, gi)
            if module.start_step < module.steps:
                loop.fit(module, rt.accelerator, progress=False, **p.fit_args)
        return
    tracker = open_tracker(p.params.tracking.experiment)
    runs = start_runs(p, tracker)
    run_ids: list[str] = []
    with tracker.closing(run_ids, runs):
        lit, loop = lightning()  # while the worker creates the runs
        parent, ids = runs.get()
        run_ids += [parent, *ids]
        states, curves, diverged = [None] * len(p.instances), [], {}
        start = time.perf_counter()
        for gi in range(len(p.shapes)):
            harvest(p, gi, train_group(p, gi, tracker, ids, lit, loop), lit.CURVES, states, curves, diverged)
        seconds = time.perf_counter() - start
        write_outputs(p, parent, ids, states, curves, diverged, seconds)
        log_models(p, tracker, parent, ids, states, diverged, seconds)
    shutil.rmtree(model_dir(name) / "checkpoint", ignore_errors=True)  # the outputs are complete
    print(f"train@{name}: {len(p.instances)} models in {seconds:.1f}s"
          + (f", {len(diverged)} diverged" if diverged else ""))


if __name__ == "__main__":
    run(main)
