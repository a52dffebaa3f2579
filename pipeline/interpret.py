"""interpret@<study>: neuron tables for every instance and the paper's figures for the study."""

import csv

import pandas as pd
import torch
from common import groups, load_manifest, load_states, model_dir, result_dir, run, study_params, world_dir

from monosem import plots
from monosem.artifacts import atomic_path, load_world, read_json
from monosem.interpret import neuron_table
from monosem.metrics import single_feature_activations
from monosem.models import ToyModels
from monosem.tracking import Tracker


def write_csv(path, rows):
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main(name: str) -> None:
    params, _ = study_params(name)
    study = params.studies[name]
    manifest, instances = load_manifest(name)
    states = load_states(name, manifest)
    world = load_world(world_dir(manifest["world"]))
    metrics = read_json(result_dir(name) / "metrics.json")
    out = result_dir(name) / "interp"
    n = world.cfg.n_features

    sfas = [None] * len(instances)
    for members in groups(instances):
        model = ToyModels.from_states([states[i] for i in members], instances[members[0]].model.activation)
        for j, s in zip(members, single_feature_activations(model, world.probes)):
            sfas[j] = s
    tracker = Tracker(params.tracking.experiment)
    for inst, entry, sfa, state in zip(instances, manifest["instances"], sfas, states):
        table, figure = out / "neurons" / f"{inst.label}.csv", out / "instances" / f"{inst.label}.png"
        write_csv(table, neuron_table(sfa, state["b1"], state["W2"]))
        plots.instance_figure(f"{name} {inst.label}", sfa.numpy(), state["b1"].numpy(), n, figure)
        tracker.log_artifact(entry["run_id"], table, "interp")
        tracker.log_artifact(entry["run_id"], figure, "interp")

    # Study figures: the paper's plot types.
    sweep_key = next(iter(study.sweep), None)
    curves = pd.read_csv(model_dir(name) / "curves.csv")
    if sweep_key:
        curves = curves.merge(pd.DataFrame([{"instance": i.label, f"sweep.{sweep_key}": i.point[sweep_key]}
                                            for i in instances]), on="instance")
    plots.training_plot(curves, sweep_key, name, out / "training.png")

    first_seed = [i for i, inst in enumerate(instances) if inst.seed == study.seeds[0]]
    picks = sorted({first_seed[0], first_seed[len(first_seed) // 2], first_seed[-1]})
    plots.sfa_heatmaps([(instances[i].label, sfas[i].numpy()) for i in picks], out / "sfa.png")
    plots.bias_plot([(instances[i].label, states[i]["b1"].numpy(), sfas[i].numpy()) for i in picks], n,
                    out / "bias.png")
    figures = ["training.png", "sfa.png", "bias.png"]
    if sweep_key:
        points = pd.DataFrame([{"x": inst.point[sweep_key], **metrics["points"][inst.point_label]}
                               for inst in instances if inst.seed == study.seeds[0]])
        if pd.api.types.is_numeric_dtype(points["x"]):
            plots.mono_sweep(points.sort_values("x"), sweep_key, n, out / "mono_sweep.png")
            figures.append("mono_sweep.png")
    for fig in figures:
        tracker.log_artifact(manifest["parent_run_id"], out / fig, "figures")
    print(f"interpret@{name}: {len(instances)} neuron tables, figures {', '.join(figures)} in {out}")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    run(main)
