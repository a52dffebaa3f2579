"""measure@<study>: loss and monosemanticity of every instance on the world's eval set and probes; then, in the
same process, each model's neuron table and the study's figures (pipeline/interpret.py)."""

import boot

boot.begin(logs=True)  # first: MLflow's worker loads while this process imports torch

import torch

from monosem.analysis.summary import best, compact, summarise
from monosem.store.artifacts import load_world, read_json, write_csv, write_json
from monosem.toy.families import family, models_from_states

from common import (
    compute_device,
    groups,
    instance_world,
    load_manifest,
    load_states,
    open_tracker,
    result_dir,
    run,
    study_params,
    world_dir,
)
from interpret import interpret

# `dvc metrics show` / `dvc exp show` get the study's headline (metrics.json, summary.best); points.json has per
# sweep point what each family's dvc_metrics name (summary.compact); `dvc plots` draws sweep.csv: the family's
# headline against the swept value.
SWEEP_FIELDS = ["point", "seed", "series", "order", "x", "y", "parameter", "metric"]


def sweep_rows(study, instances, rows: list[dict], headline: str, label: str) -> list[dict]:
    """The sweep plot's data (`dvc plots`): every trained instance's headline against the value of the sweep
    axis with the most values, `order` ranking those values, the other swept values naming its series."""
    axes = study.axes()
    sizes = [len(values) for values in study.sweep.values()]
    keys = axes[sizes.index(max(sizes))] if axes else []  # a zipped axis is drawn against its first parameter
    xs = [inst.point[keys[0]] if keys else "base" for inst in instances]
    order = list(dict.fromkeys(xs))
    if all(isinstance(x, (int, float)) for x in order):
        order.sort()
    out = []
    for inst, row, x in zip(instances, rows, xs):
        if row["diverged_at"] is None and row[headline] == row[headline]:
            others = [f"{k.split('.')[-1]}={v:g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                      for k, v in inst.point.items() if k not in keys]
            out.append({"point": inst.point_label, "seed": inst.seed, "series": ",".join(others) or "all",
                        "order": order.index(x), "x": x, "y": row[headline],
                        "parameter": " + ".join(keys) or "(no sweep)", "metric": label})
    return out


def main(name: str) -> None:
    params, _ = study_params(name)
    tracker = open_tracker(params.tracking.experiment)  # the worker opens the store while this measures
    manifest, instances = load_manifest(name)
    base_world = load_world(world_dir(manifest["world"]))
    dev = compute_device(params.runtime)  # the held-out set and the models go there; the results come back
    cpu_states = load_states(name, manifest, base_world)  # the figures draw them; on the CPU, the same tensors
    states = [{k: v.to(dev) for k, v in s.items()} for s in cpu_states]

    rows, features = [None] * len(instances), {}
    fam = family(instances[0].model.kind)
    for members in groups(instances, by_data=base_world):  # each density has its own eval set, each P its inputs
        world = instance_world(base_world.with_eps(instances[members[0]].data.eps), states[members[0]]).to(dev)
        eval_x, eval_target = world.inputs(world.eval_f), world.targets(world.eval_f)
        cfg = instances[members[0]].model
        model = models_from_states([states[i] for i in members], cfg).to(dev)
        values, per_feature = fam.measure(model, world, eval_x, eval_target, states, members, instances, cfg)
        if per_feature is not None:
            for j, i in enumerate(members):
                features[manifest["instances"][i]["label"]] = {k: v[j].tolist() for k, v in per_feature.items()}
        for j, i in enumerate(members):
            entry = manifest["instances"][i]
            rows[i] = {"label": entry["label"], "point": instances[i].point_label, "seed": instances[i].seed,
                       **{f"sweep.{k}": v for k, v in instances[i].point.items()},
                       "diverged_at": entry["diverged_at"],
                       **fam.row_extras(world, cfg),
                       **{k: v[j].item() for k, v in values.items()}}

    tracker.check()  # an unusable store fails the stage before it writes anything
    out = result_dir(name)
    points = summarise(rows, fam.summarised(rows[0]))
    write_json(out / "measured.json", {"study": name, "world": manifest["world"], "n_features": base_world.cfg.n_features,
                                       "kind": instances[0].model.kind, "sweep": list(params.studies[name].sweep),
                                       "points": points, "instances": {r["label"]: r for r in rows}}
               | ({"features": features} if features else {}))
    write_csv(out / "instances.csv", rows)
    headline = fam.dvc_metrics[2]
    write_json(out / "points.json", compact(points, *fam.dvc_metrics))
    write_json(out / "metrics.json", best(points, headline))
    write_csv(out / "sweep.csv", sweep_rows(params.studies[name], instances, rows, headline, fam.label(headline)),
              SWEEP_FIELDS)

    steps = max(i.train.steps for i in instances)
    for entry, row in zip(manifest["instances"], rows):
        numeric = {f"final.{k}": v for k, v in row.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)
                   and k not in ("seed", "diverged_at", "density", "neurons", "power") and not k.startswith("sweep.")
                   and v == v}
        tracker.log_metrics(entry["run_id"], numeric, step=steps)
    for point, stats in points.items():
        shown = fam.shown
        print(f"measure@{name}: {point:>24}  loss {stats['loss']:.4f} ± {stats['loss_std']:.4f}  "
              f"{shown[1]} {stats[shown[0]]:.3f} ± {stats[shown[0] + '_std']:.3f}")
    # measured.json as written (write_json turns NaN into null), what interpret read when it was a stage of its own
    interpret(name, params, manifest, instances, base_world, cpu_states, read_json(out / "measured.json"), tracker, dev)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    run(main)
