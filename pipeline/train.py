"""train@<study>: every sweep point × seed of a study, batched by shape, one MLflow run per instance."""

import csv
import tempfile
import time
from pathlib import Path

from common import groups, model_dir, run, study_params, world_dir

from monosem.artifacts import atomic_path, load_world, save_tensors, write_json
from monosem.lit import CURVES, CurveSink, ToyStudyModule, fit
from monosem.tracking import Tracker, input_hash, lineage_tags


def main(name: str) -> None:
    params, _ = study_params(name)
    study = params.studies[name]
    world = load_world(world_dir(study.world))
    instances = study.instances()
    tracker = Tracker(params.tracking.experiment)
    tags = lineage_tags(tracker.root) | {"monosem.study": name, "monosem.world": study.world}
    world_params = {f"world.{k}": v for k, v in world.cfg.model_dump().items()} | {"world.name": study.world}

    parent = tracker.start(f"train@{name}", world_params | {"study": study.model_dump_json()}, tags)
    run_ids = [parent]
    with tracker.closing(run_ids):
        for inst in instances:
            run_ids.append(tracker.start(
                f"{name}/{inst.label}",
                world_params | inst.flat_params() | {f"sweep.{k}": v for k, v in inst.point.items()},
                tags | {"monosem.label": inst.label, "monosem.point": inst.point_label, "monosem.seed": str(inst.seed),
                        "monosem.input_hash": input_hash(world.cfg.model_dump(), inst.model_dump())},
                parent=parent))
        ids = run_ids[1:]

        states, curves, diverged = [None] * len(instances), [], {}
        start = time.perf_counter()
        for members in groups(instances):
            group = [instances[i] for i in members]
            g0 = group[0]
            print(f"train@{name}: {len(group)} instances, k={g0.model.neurons} {g0.model.activation}, "
                  f"{g0.train.steps} steps of batch {g0.train.batch_size}", flush=True)

            def sink(steps, rows, members=members):
                for j, i in enumerate(members):
                    tracker.log_curve_rows(ids[i], steps, [{k: float(r[k][j]) for k in CURVES} for r in rows])

            module = ToyStudyModule(world, group)
            fit(module, params.runtime.accelerator, [CurveSink(sink, params.tracking.flush_seconds)])
            act_var = module.act_m2 / (module.act_count - 1).clamp(min=1)
            for j, i in enumerate(members):
                states[i] = module.model.instance_state(j) | {"act_mean": module.act_mean[j].float(),
                                                               "act_var": act_var[j].float()}
                if module.diverged_at[j] >= 0:
                    diverged[i] = int(module.diverged_at[j])
                for r, step in enumerate(module.curves.steps):
                    curves.append({"step": step, "instance": instances[i].label, "point": instances[i].point_label,
                                   "seed": instances[i].seed} | {k: float(module.curves.values[k][r][j]) for k in CURVES})
        seconds = time.perf_counter() - start

        out = model_dir(name)
        save_tensors(out / "weights.safetensors",
                     {f"{inst.label}/{k}": v for inst, s in zip(instances, states) for k, v in s.items()})
        with atomic_path(out / "curves.csv") as tmp, open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(curves[0]))
            writer.writeheader()
            writer.writerows(curves)
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
    print(f"train@{name}: {len(instances)} models in {seconds:.1f}s"
          + (f", {len(diverged)} diverged" if diverged else ""))


if __name__ == "__main__":
    run(main)
