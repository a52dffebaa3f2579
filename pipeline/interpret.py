"""interpret@<study>: neuron tables for every instance and the paper's figures for the study."""

import csv

import pandas as pd
import torch
from common import load_manifest, load_states, model_dir, result_dir, run, study_params, world_dir

from monosem import plots
from monosem.artifacts import atomic_path, load_world, read_json, write_json
from monosem.interpret import analyse
from monosem.models import ACTIVATIONS
from monosem.tracking import Tracker


def write_csv(path, rows):
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _show(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def main(name: str) -> None:
    params, _ = study_params(name)
    study = params.studies[name]
    tracker = Tracker(params.tracking.experiment)  # an unusable store fails the stage before any work
    manifest, instances = load_manifest(name)
    world = load_world(world_dir(manifest["world"]))
    states = load_states(name, manifest, world)
    metrics = read_json(result_dir(name) / "metrics.json")
    out = result_dir(name) / "interp"
    n = world.cfg.n_features

    sfas = []
    eval_x = {}  # per feature density (a study may sweep data.eps)
    summaries = {}
    # Drawing the per-model figures costs ten times the analysis: they are drawn for the first seed of each
    # sweep point; tables and summaries for every model. (Worker processes did not pay: a spawned worker's
    # imports cost more than the drawing, and forking after torch has started its threads can deadlock.)
    for inst, entry, state in zip(instances, manifest["instances"], states):
        if entry["diverged_at"] is not None:  # non-finite weights: nothing to analyse, nothing to draw
            summaries[inst.label] = {"diverged_at": entry["diverged_at"]}
            sfas.append(None)
            continue
        if inst.data.eps not in eval_x:
            at_eps = world.with_eps(inst.data.eps)
            eval_x[inst.data.eps] = at_eps.inputs(at_eps.eval_f)
        res = analyse(state["W1"], state["b1"], state["W2"], world.P, ACTIVATIONS[inst.model.activation],
                      world.cfg.task, eval_x[inst.data.eps], world.Q)
        sfa = res["sfa"]
        sfas.append(sfa)
        summaries[inst.label] = res["summary"]
        title = f"{name} {inst.label}"
        paths = {"table": out / "neurons" / f"{inst.label}.csv", "summary": out / "summaries" / f"{inst.label}.json"}
        write_csv(paths["table"], res["rows"])
        write_json(paths["summary"], res["summary"])
        if inst.seed == study.seeds[0]:
            paths |= {kind: out / folder / f"{inst.label}.png"
                      for kind, folder in (("figure", "instances"), ("decomposition", "decomposition"),
                                           ("spectrum", "spectrum"))}
            plots.instance_figure(title, sfa.numpy(), state["b1"].numpy(), n, paths["figure"])
            plots.decomposition_plot(res["amplitudes"].numpy(), {k: v.numpy() for k, v in res["decomposition"].items()},
                                     title, paths["decomposition"])
            plots.spectrum_plot(res["sv_full"].numpy(), res["sv_poly"].numpy(), res["r2"].numpy(),
                                world.cfg.d_embed, title, paths["spectrum"])
        for kind, path in paths.items():  # figures share a file name (the label): one folder per kind
            tracker.log_artifact(entry["run_id"], path, f"interp/{kind}")
        tracker.log_metrics(entry["run_id"], {f"interp.{k}": v for k, v in res["summary"].items()
                                              if isinstance(v, (int, float)) and v == v}, step=inst.train.steps)
    write_json(out / "summary.json", summaries)

    # Study figures: the paper's plot types. With several swept keys, curves are coloured by sweep point
    # and the sweep plot draws the first key on x, one line per value of the others.
    axes = study.axes()
    keys = [axis[0] for axis in axes]  # a zipped axis is drawn against its first parameter
    curves = pd.read_csv(model_dir(name) / "curves.csv")
    if len(keys) == 1:
        curves = curves.merge(pd.DataFrame([{"instance": i.label, f"sweep.{keys[0]}": i.point[keys[0]]}
                                            for i in instances]), on="instance")
    elif keys:
        curves["sweep.point"] = curves["point"]
    colour_key = keys[0] if len(keys) == 1 else ("point" if keys else None)
    plots.training_plot(curves, colour_key, name, out / "training.png")

    first_seed = [i for i, inst in enumerate(instances) if inst.seed == study.seeds[0] and sfas[i] is not None]
    first_seed = first_seed or [i for i, s in enumerate(sfas) if s is not None]
    picks = sorted({first_seed[0], first_seed[len(first_seed) // 2], first_seed[-1]})
    plots.sfa_heatmaps([(instances[i].label, sfas[i].numpy()) for i in picks], out / "sfa.png")
    plots.bias_plot([(instances[i].label, states[i]["b1"].numpy(), sfas[i].numpy()) for i in picks], n,
                    out / "bias.png")
    figures = ["training.png", "sfa.png", "bias.png"]
    if keys:
        points = pd.DataFrame([{"x": inst.point[keys[0]], **metrics["points"][inst.point_label],
                                **({"series": ",".join(f"{k.split('.')[-1]}={_show(inst.point[k])}" for k in keys[1:])}
                                   if len(keys) > 1 else {})}
                               for inst in instances if inst.seed == study.seeds[0]])
        if pd.api.types.is_numeric_dtype(points["x"]):
            plots.mono_sweep(points.sort_values("x", kind="stable"), keys[0], n, out / "mono_sweep.png", name)
            figures.append("mono_sweep.png")
        if keys == ["train.noise_std"]:
            plots.noise_plot(points.sort_values("x"), name, out / "noise.png")
            figures.append("noise.png")
    for fig in figures:
        tracker.log_artifact(manifest["parent_run_id"], out / fig, "figures")
    print(f"interpret@{name}: {len(instances)} models analysed, figures {', '.join(figures)} in {out}")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    run(main)
