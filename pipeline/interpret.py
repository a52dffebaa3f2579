"""The second half of measure@<study>: neuron tables for every instance and the paper's figures for the study.

Called by pipeline/measure.py in the same process once the study is measured. It was a DVC stage of its own with
the same params and inputs as measure's; as one process the two save a Python start, torch's imports and DVC's
bookkeeping per study (about 3 s each)."""

import pandas as pd
import torch

from monosem.analysis.interpret import analyse
from monosem.analysis.theory import gain_by_width, gain_references
from monosem.plots import tms as plots_tms
from monosem.plots import toy as plots
from monosem.store.artifacts import write_csv, write_json
from monosem.toy.families import family
from monosem.toy.models import ACTIVATIONS

from common import instance_world, model_dir, result_dir


def _show(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def interpret(name, params, manifest, instances, world, states, metrics, tracker, dev) -> None:
    """Every model's neuron table and summary, and the study's figures, into results/<study>/interp. `states`: the
    models' weights on the CPU (the figures draw them); the analysis runs on `dev`; `metrics`: measured.json."""
    study = params.studies[name]
    out = result_dir(name) / "interp"
    fam = family(instances[0].model.kind)
    if fam.tied:
        figures = interpret_tied(fam, name, instances, manifest, states, metrics, world, tracker, out)
        analysed = "tied models"
    else:
        sfas = analyse_models(name, study, instances, manifest, states, world, tracker, out, dev)
        figures = study_figures(name, study, instances, states, metrics, sfas, world.cfg.n_features, out)
        analysed = "models analysed"
    write_json(out / "figures.json", figures)  # the order the report shows them in
    for fig in figures:
        tracker.log_artifact(manifest["parent_run_id"], out / fig, "figures")
    print(f"measure@{name}: {len(instances)} {analysed}, figures {', '.join(figures)} in {out}")


def analyse_models(name, study, instances, manifest, states, world, tracker, out, dev) -> list:
    """Every model's neuron table and summary (interpret.analyse, on the device `dev`), logged to its run; the
    per-model figures for one of them. Returns each model's single-feature activations (None where it
    diverged)."""
    n = world.cfg.n_features
    sfas = []
    seen = {}  # (P, Q, eval inputs) on `dev`, per feature density (a study may sweep data.eps) and, with
    # embedders per seed, per seed: each drawn and moved once
    summaries = {}
    # Drawing the per-model figures costs ten times the analysis: they are drawn for one model, the first
    # seed of the last sweep point that trained (the one the report shows; the study's sfa and bias figures
    # show the first, middle and last points); tables and summaries for every model. (Worker processes did not
    # pay: a spawned worker's imports cost more than the drawing, and forking after torch has started its
    # threads can deadlock.)
    trained = [inst.label for inst, e in zip(instances, manifest["instances"]) if e["diverged_at"] is None]
    first = [inst.label for inst in instances if inst.seed == study.seeds[0] and inst.label in trained]
    drawn = (first or trained)[-1:]
    for inst, entry, state in zip(instances, manifest["instances"], states):
        if entry["diverged_at"] is not None:  # non-finite weights: nothing to analyse, nothing to draw
            summaries[inst.label] = {"diverged_at": entry["diverged_at"]}
            sfas.append(None)
            continue
        key = (inst.data.eps, inst.seed if "P" in state else None)
        if key not in seen:
            own = instance_world(world.with_eps(inst.data.eps), state).to(dev)  # its density's eval set, its own P
            seen[key] = own.P, own.Q, own.inputs(own.eval_f)
        P, Q, eval_x = seen[key]
        res = analyse(*(state[w].to(dev) for w in ("W1", "b1", "W2")), P, ACTIVATIONS[inst.model.activation],
                      world.cfg.task, eval_x, Q)
        res |= {k: res[k].cpu() for k in ("sfa", "amplitudes", "sv_full", "sv_poly", "r2")}
        res["decomposition"] = {k: v.cpu() for k, v in res["decomposition"].items()}
        sfa = res["sfa"]
        sfas.append(sfa)
        summaries[inst.label] = res["summary"]
        title = f"{name} {inst.label}"
        paths = {"table": out / "neurons" / f"{inst.label}.csv", "summary": out / "summaries" / f"{inst.label}.json"}
        write_csv(paths["table"], res["rows"])
        write_json(paths["summary"], res["summary"])
        if inst.label in drawn:
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
    return sfas


def study_figures(name, study, instances, states, metrics, sfas, n, out) -> list[str]:
    """The paper's plot types for the study (file names in out, in order). With several swept keys, curves
    are coloured by sweep point and the sweep plot draws the first key on x, one line per value of the others."""
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
    figures = ["training.png"]
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
    return figures + ["sfa.png", "bias.png"]


def interpret_tied(fam, name, instances, manifest, states, metrics, world, tracker, out) -> list[str]:
    """Tied models: a per-feature table for every model, and the study's superposition figures drawn from the
    lowest-loss seed of each sweep point (TMS' best-of-K restarts); returns the figures' file names, in order."""
    rows = metrics["instances"]
    eps = lambda inst: inst.data.eps or world.cfg.eps  # noqa: E731
    importance = world.importance
    table = []
    for inst in instances:
        feats = metrics["features"][inst.label]
        for i in range(world.cfg.n_features):
            table.append({"label": inst.label, "point": inst.point_label, "seed": inst.seed, "density": eps(inst),
                          "feature": i, "importance": 1.0 if importance is None else float(importance[i]),
                          **{k: feats[k][i] for k in ("norm", "superposition", "dimensionality")}})
    write_csv(out / "features.csv", table)
    best = {}  # sweep point -> index of its lowest-loss seed
    for j, inst in enumerate(instances):
        if rows[inst.label]["diverged_at"] is None:
            b = best.get(inst.point_label)
            if b is None or rows[inst.label]["loss"] < rows[instances[b].label]["loss"]:
                best[inst.point_label] = j
    picks = sorted(best.values(), key=lambda j: (instances[j].model.neurons, -eps(instances[j])))
    figures = []
    if "bounds" in fam.figures:
        plots_tms.gain_bounds(gain_series(rows, world, instances[0].model.power), instances[0].model.power,
                              f"{name}: gain over outputting 0 against the bounds", out / "bounds.png")
        figures.append("bounds.png")
    if "matrices" in fam.figures:
        plots_tms.matrices([(eps(instances[j]), states[j]["W"].numpy(), states[j]["b"].numpy()) for j in picks],
                           f"{name}: WᵀW and b, lowest-loss seed per density", out / "matrices.png")
        plots_tms.norms([(eps(instances[j]), torch.tensor(metrics["features"][instances[j].label]["norm"]).numpy(),
                          torch.tensor(metrics["features"][instances[j].label]["superposition"]).numpy())
                         for j in picks], f"{name}: feature norms coloured by superposition", out / "norms.png")
        figures += ["matrices.png", "norms.png"]
    if "neurons" in fam.figures:
        plots_tms.neurons([(eps(instances[j]), states[j]["W"].numpy()) for j in picks],
                          f"{name}: neuron weights, lowest-loss seed per density", out / "neurons.png")
        figures.append("neurons.png")
    if "dims" in fam.figures:
        chosen = set(picks)
        plots_tms.dims_per_feature([(eps(inst), rows[inst.label]["dims_per_feature"], j in chosen)
                                    for j, inst in enumerate(instances) if rows[inst.label]["diverged_at"] is None],
                                   f"{name}: dimensions per feature", out / "dims_per_feature.png")
        feats = lambda j: metrics["features"][instances[j].label]  # noqa: E731
        plots_tms.feature_dimensionality(
            [(eps(instances[j]), torch.tensor(feats(j)["dimensionality"]).numpy(), torch.tensor(feats(j)["norm"]).numpy())
             for j in picks], [(eps(instances[j]), rows[instances[j].label]["dims_per_feature"]) for j in picks],
            f"{name}: feature dimensionality (lowest-loss seed per density)", out / "feature_dims.png")
        figures += ["dims_per_feature.png", "feature_dims.png"]
    write_json(out / "summary.json", {inst.label: {"best_of_seeds": j in picks} for j, inst in enumerate(instances)})
    tracker.log_artifact(manifest["parent_run_id"], out / "features.csv", "interp")
    return figures


def gain_series(rows: dict, world, k: int) -> dict[int, dict]:
    """Per hidden size d: every model's gain, the mean per density (theory.gain_by_width, as the claims), the
    reference curves in full precision (theory.gain_references; measured.json holds them as float32), and the
    order curves' constant fitted at the smallest density (where both equal p·d^k)."""
    live = [r for r in rows.values() if r["diverged_at"] is None]
    series = {}
    for d, pts in gain_by_width(live).items():
        seeds = [r for r in live if r["neurons"] == d]
        refs = [gain_references(p, world.cfg.n_features, d, k, world.cfg.values) for p, _, _ in pts]
        s = {"p": [r["density"] for r in seeds], "gain": [r["gain"] for r in seeds],
             "p_u": [p for p, _, _ in pts], "gain_mean": [g for _, g, _ in pts]}
        for key, ref in (("linear", "linear"), ("unsuperposed", "unsuperposed"), ("lower", "order_lower"),
                         ("upper", "order_upper")):
            s[key] = [r[ref] for r in refs]
        s["scale"] = s["gain_mean"][0] / s["upper"][0]
        series[d] = s
    return series


