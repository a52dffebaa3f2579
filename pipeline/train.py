"""train@<study>: every sweep point × seed of a study, batched by shape, one MLflow run per instance."""

# First: importing common starts the MLflow worker, which loads while this process imports torch.
from common import ParamsError, groups, model_dir, open_tracker, run, study_params, world_dir

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import monosem
from monosem.artifacts import load_tensors, load_world, read_metadata, save_tensors, write_csv, write_json
from monosem.tracking import input_hash, lineage_tags


def lightning():
    """monosem.lit and monosem.training, imported when first needed: Lightning's ~2 s of imports then overlap
    the MLflow worker creating the study's runs."""
    from monosem import lit, training

    return lit, training


def code_hash() -> str:
    """The library's source: a checkpoint resumes only under the code that wrote it."""
    digest = hashlib.sha256()
    for path in sorted(Path(monosem.__file__).parent.glob("*.py")):
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


def main(name: str) -> None:
    params, _ = study_params(name)
    study = params.studies[name]
    rt = params.runtime
    fit_args = {"devices": rt.devices, "strategy": rt.strategy, "num_nodes": rt.num_nodes,
                   "matmul_precision": rt.matmul_precision, "cuda_graphs": rt.cuda_graphs}
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
    resumed = checkpoints(name, keys, rt.resume)

    def module_for(gi: int):
        module = lit.ToyStudyModule(world, [instances[i] for i in shapes[gi]])
        if gi in resumed:
            module.restore(*resumed[gi])
        return module

    if process_rank(rt.devices) != 0:  # another data-parallel process: it trains; rank 0 logs and writes
        lit, loop = lightning()
        for gi in range(len(shapes)):
            module = module_for(gi)
            if module.start_step < module.steps:
                loop.fit(module, rt.accelerator, progress=False, **fit_args)
        return
    tracker = open_tracker(params.tracking.experiment)
    tags = lineage_tags(tracker.root) | {"monosem.study": name, "monosem.world": study.world}
    world_params = {f"world.{k}": v for k, v in world.cfg.model_dump().items()} | {"world.name": study.world}

    resumed_at = {i: meta["step"] for gi, (_, meta) in resumed.items() for i in shapes[gi]}

    runs = tracker.start_runs(
        (f"train@{name}", world_params | {"study": study.model_dump_json()}, tags),
        [(f"{name}/{inst.label}", world_params | inst.flat_params() | {f"sweep.{k}": v for k, v in inst.point.items()},
          tags | {"monosem.label": inst.label, "monosem.point": inst.point_label, "monosem.seed": str(inst.seed),
                  "monosem.input_hash": input_hash(world.cfg.model_dump(), inst.model_dump())}
          | ({"monosem.resumed_at_step": str(resumed_at[i])} if i in resumed_at else {}))
         for i, inst in enumerate(instances)])
    run_ids: list[str] = []
    with tracker.closing(run_ids, runs):
        lit, loop = lightning()  # while the worker creates the runs
        parent, ids = runs.get()
        run_ids += [parent, *ids]

        states, curves, diverged = [None] * len(instances), [], {}
        start = time.perf_counter()
        for gi, members in enumerate(shapes):
            g0 = instances[members[0]]
            print(f"train@{name}: {len(members)} instances, k={g0.model.neurons} {g0.model.activation}, "
                  f"{g0.train.steps} steps of batch {g0.train.batch_size}", flush=True)

            def sink(steps, rows, members=members):
                for j, i in enumerate(members):
                    tracker.log_curve_rows(ids[i], steps, [{k: float(r[k][j]) for k in lit.CURVES} for r in rows])

            def save(step, tensors, meta, gi=gi):
                save_tensors(model_dir(name) / "checkpoint" / f"group{gi}.safetensors", tensors,
                             {"monosem": json.dumps(meta | {"key": keys[gi]})})

            module = module_for(gi)
            if gi in resumed:
                print(f"train@{name}: resumed at step {module.start_step} from its checkpoint", flush=True)
            if module.start_step < module.steps:
                loop.fit(module, rt.accelerator, [loop.CurveSink(sink, params.tracking.flush_seconds)]
                        + ([loop.Checkpointer(rt.checkpoint_every, save)] if rt.checkpoint_every else []), **fit_args)
            else:  # the checkpoint is the end of this group's training
                sink(module.curves.steps, [module.curves.row(r) for r in range(len(module.curves.steps))])
            if rt.checkpoint_every:  # a later group's interruption does not repeat this one
                save(module.steps, *module.checkpoint())
            act_var = module.act_m2 / (module.act_count - 1).clamp(min=1)
            for j, i in enumerate(members):
                states[i] = module.model.instance_state(j) | {"act_mean": module.act_mean[j].float(),
                                                               "act_var": act_var[j].float()}
                if world.cfg.embedder == "per_seed":  # saved with the weights: measure and interpret use them
                    own = world.for_seed(instances[i].seed)
                    states[i] |= {"P": own.P} | ({"Q": own.Q} if own.Q is not None else {})
                if module.diverged_at[j] >= 0:
                    diverged[i] = int(module.diverged_at[j])
                for r, step in enumerate(module.curves.steps):
                    curves.append({"step": step, "instance": instances[i].label, "point": instances[i].point_label,
                                   "seed": instances[i].seed} | {k: float(module.curves.values[k][r][j]) for k in lit.CURVES})
        seconds = time.perf_counter() - start

        out = model_dir(name)
        save_tensors(out / "weights.safetensors",
                     {f"{inst.label}/{k}": v for inst, s in zip(instances, states) for k, v in s.items()})
        write_csv(out / "curves.csv", curves)
        write_json(out / "instances.json", {
            "study": name, "world": study.world, "parent_run_id": parent, "train_seconds": seconds,
            "instances": [{"label": inst.label, "run_id": rid, "diverged_at": diverged.get(i),
                           "instance": inst.model_dump()} for i, (inst, rid) in enumerate(zip(instances, ids))]})

        tracker.log_metrics(parent, {"train_seconds": seconds, "n_instances": len(instances)})
        with tempfile.TemporaryDirectory() as tmp:
            for inst, rid, state in zip(instances, ids, states):
                path = Path(tmp) / "model.safetensors"
                save_tensors(path, state, {"activation": inst.model.activation, "label": inst.label})
                tracker.log_artifact(rid, path, "model")
        for i, rid in enumerate(ids):
            if i in diverged:
                tracker.end(rid, "FAILED", f"diverged: non-finite loss at step {diverged[i]}")
            else:
                tracker.end(rid)
        tracker.end(parent)
    shutil.rmtree(model_dir(name) / "checkpoint", ignore_errors=True)  # the outputs are complete
    print(f"train@{name}: {len(instances)} models in {seconds:.1f}s"
          + (f", {len(diverged)} diverged" if diverged else ""))


if __name__ == "__main__":
    run(main)
