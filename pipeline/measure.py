"""measure@<study>: loss and monosemanticity of every instance on the world's eval set and probes."""

import csv
import statistics

import torch
from common import groups, load_manifest, load_states, result_dir, run, study_params, world_dir

from monosem.artifacts import atomic_path, load_world, write_json
from monosem.metrics import (frac_mono, measure, monosemantic_scale, noise_activation_change,
                             single_feature_activations, spearman)
from monosem.models import ToyModels
from monosem.tracking import Tracker
from monosem.worlds import generator

SUMMARISED = ("loss", "mono_per_feature", "mono_per_neuron", "features_covered", "mono_per_feature_at_0.99",
              "mono_scale_vs_frac_mono_spearman", "n_dead", "bias_mean_mono",
              "bias_mean_poly", "bias_mean_live", "n_bias_positive", "noise_change_mono", "noise_change_poly")


def summarise(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Mean and spread over the seeds of each sweep point (diverged instances left out)."""
    points: dict[str, list[dict]] = {}
    for row in rows:
        points.setdefault(row["point"], []).append(row)
    out = {}
    for point, members in points.items():
        ok = [r for r in members if r["diverged_at"] is None]
        stats: dict[str, float] = {"seeds": len(ok), "diverged": len(members) - len(ok)}
        for key in SUMMARISED:
            vals = [r[key] for r in ok if r[key] == r[key]]  # drop NaN (e.g. no mono neuron to average)
            stats[key] = statistics.fmean(vals) if vals else float("nan")
            stats[f"{key}_std"] = statistics.stdev(vals) if len(vals) > 1 else float("nan")
        out[point] = stats
    return out


def main(name: str) -> None:
    params, _ = study_params(name)
    tracker = Tracker(params.tracking.experiment)  # an unusable store fails the stage before any work
    manifest, instances = load_manifest(name)
    base_world = load_world(world_dir(manifest["world"]))
    states = load_states(name, manifest, base_world)

    rows = [None] * len(instances)
    for members in groups(instances, by_density=True):  # each density has its own eval set
        world = base_world.with_eps(instances[members[0]].data.eps)
        eval_x, eval_target = world.inputs(world.eval_f), world.targets(world.eval_f)
        model = ToyModels.from_states([states[i] for i in members], instances[members[0]].model.activation)
        values = measure(model, world.probes, eval_x, eval_target)
        h = model.hidden(eval_x.expand(len(members), *eval_x.shape))  # (inst, samples, k)
        ms = torch.stack([monosemantic_scale(h[j], states[i]["act_mean"], states[i]["act_var"])
                          for j, i in enumerate(members)])  # one instance at a time: bounded memory
        fm = frac_mono(single_feature_activations(model, world.probes))
        values["mono_scale_mean"] = ms.mean(-1)
        values["mono_scale_vs_frac_mono_spearman"] = torch.tensor([spearman(ms[j], fm[j]) for j in range(len(members))])
        # Eval-time noise at each model's own training σ; the same draw for every model of the study.
        sigma = torch.tensor([instances[i].train.noise_std for i in members])
        values |= noise_activation_change(model, world.probes, eval_x, sigma, generator(world.cfg.seed, "eval-noise"))
        for j, i in enumerate(members):
            entry = manifest["instances"][i]
            rows[i] = {"label": entry["label"], "point": instances[i].point_label, "seed": instances[i].seed,
                       **{f"sweep.{k}": v for k, v in instances[i].point.items()},
                       "diverged_at": entry["diverged_at"],
                       **{k: v[j].item() for k, v in values.items()}}

    out = result_dir(name)
    points = summarise(rows)
    write_json(out / "metrics.json", {"study": name, "world": manifest["world"], "n_features": base_world.cfg.n_features,
                                      "sweep": list(params.studies[name].sweep), "points": points,
                                      "instances": {r["label"]: r for r in rows}})
    with atomic_path(out / "instances.csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    steps = max(i.train.steps for i in instances)
    for entry, row in zip(manifest["instances"], rows):
        numeric = {f"final.{k}": v for k, v in row.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("seed", "diverged_at")
                   and not k.startswith("sweep.") and v == v}
        tracker.log_metrics(entry["run_id"], numeric, step=steps)
    for point, stats in points.items():
        print(f"measure@{name}: {point:>24}  loss {stats['loss']:.4f} ± {stats['loss_std']:.4f}  "
              f"#mono/#features {stats['mono_per_feature']:.3f} ± {stats['mono_per_feature_std']:.3f}")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    run(main)
