"""sae@<name>: sparse autoencoders on one toy model's activations, every architecture's sweep × seeds batched,
measured against the true features, exported for SAELens, one MLflow run per SAE."""

import boot

boot.begin(logs=True)  # first: MLflow's worker loads while this process imports torch

import shutil
import time
from dataclasses import dataclass

import pandas as pd
from torch import Tensor

from monosem.analysis.sae_eval import matched_l0_table, measure_saes
from monosem.analysis.summary import best, compact, rounded, summarise
from monosem.claims.gated import gated_claims
from monosem.config import Instance, Params, SaeStudy
from monosem.plots.sae import sweep_panels, training_curves
from monosem.sae import architecture, saelens_export
from monosem.store.artifacts import load_world, save_tensors, write_csv, write_json
from monosem.store.tracking import input_hash, lineage_tags
from monosem.toy.families import models_from_states
from monosem.training.loop import CurveSink, fit
from monosem.training.sae import SAE_CURVES, Activations, SAEStudyModule, eval_features
from monosem.worlds import WorldData

from common import (
    compute_device,
    instance_world,
    load_manifest,
    load_states,
    open_tracker,
    run,
    sae_dirs,
    study_params,
    world_dir,
)


def knob_name(arch: str) -> str:
    return architecture(arch).knob


def label(arch: str, knob: float, seed: int) -> str:
    return f"{arch}-{knob_name(arch)}{knob:g}-seed{seed}"


def dvc_metrics(rows: list[dict], table: list[dict], true_l0: float) -> tuple[dict, dict]:
    """What DVC shows (summary): (metrics.json, the best seed-mean MCC; points.json, per architecture and λ
    (or k) the seed mean and std of L0, explained variance and MCC and the mean dead fraction, the headline,
    and each architecture's MCC at the true L0)."""
    points = summarise([r | {"point": f"{r['architecture']}-{knob_name(r['architecture'])}{r['knob']:g}"} for r in rows],
                       ("l0", "explained_variance", "mcc", "dead_fraction"))
    out = compact(points, ("l0", "explained_variance", "mcc"), ("dead_fraction",), "mcc")
    at_true_l0 = {r["architecture"]: rounded(r["mcc"]) for r in table if r["l0"] == true_l0}
    return best(points, "mcc"), out | {"mcc_at_true_l0": at_true_l0}


@dataclass
class Setup:
    """An SAE study's inputs: its params, the toy model whose layer it reads, and the held-out features."""

    name: str
    params: Params
    cfg: SaeStudy
    inst: Instance
    world: WorldData
    source: Activations
    eval_f: Tensor

    @property
    def true_l0(self) -> float:
        return float(self.world.probs.sum())


def setup(name: str, params: Params) -> Setup:
    cfg = params.saes[name]
    if params.runtime.devices * params.runtime.num_nodes > 1:
        print(f"sae@{name}: SAEs train in one process (runtime.devices and num_nodes apply to the toy models)")
    manifest, instances = load_manifest(cfg.study)
    world = load_world(world_dir(cfg.world))
    states = load_states(cfg.study, manifest, world)
    idx = [i.label for i in instances].index(cfg.instance)
    inst = instances[idx]
    model = models_from_states([states[idx]], inst.model).requires_grad_(False)
    world = instance_world(world.with_eps(inst.data.eps), states[idx])
    eval_f = eval_features(world, world.probs, cfg.n_eval)
    return Setup(name, params, cfg, inst, world, Activations(world, model, cfg.layer, eval_f), eval_f)


def start_runs(s: Setup, tracker, plan: list[tuple]):
    cfg = s.cfg
    tags = lineage_tags(tracker.root) | {"monosem.sae": s.name, "monosem.study": cfg.study, "monosem.world": cfg.world}
    base = {f"sae.{k}": v for k, v in cfg.model_dump(exclude={"architectures", "train"}).items()}
    base |= {f"sae.train.{k}": v for k, v in cfg.train.model_dump(exclude_none=True).items()}
    base |= {"sae.input_scale": s.source.scale}
    return tracker.start_runs(
        (f"sae@{s.name}", base | {"sae": cfg.model_dump_json()}, tags),
        [(f"{s.name}/{label(arch, knob, seed)}",
          base | {"sae.architecture": arch, f"sae.{knob_name(arch)}": knob, "sae.seed": seed},
          tags | {"monosem.label": label(arch, knob, seed),
                  "monosem.input_hash": input_hash(s.world.cfg.model_dump(), s.inst.model_dump(), cfg.model_dump(), arch,
                                                   knob, seed)}) for arch, knob, seed in plan])


def train_architecture(s: Setup, arch: str, knobs: list[float], tracker, ids: dict, staged, rows: list, curves: list):
    """One architecture's sweep × seeds trained as one module, measured, and exported for SAELens to `staged`."""
    cfg, source = s.cfg, s.source
    print(f"sae@{s.name}: {arch}, {len(knobs)} values × {len(cfg.seeds)} seeds, {cfg.train.steps} steps of "
          f"batch {cfg.train.batch_size}", flush=True)
    module = SAEStudyModule(source, s.world.probs, arch, knobs, cfg.seeds, cfg.latents, cfg.train)
    labels = [label(arch, k, seed) for k, seed in module.points]

    def sink(steps, crows):
        for j, lb in enumerate(labels):
            tracker.log_curve_rows(ids[lb], steps, [{k: float(r[k][j]) for k in SAE_CURVES} for r in crows])

    fit(module, s.params.runtime.accelerator, [CurveSink(sink, s.params.tracking.flush_seconds)])
    dev = compute_device(s.params.runtime)  # measured where it trained; exported from the CPU
    measured = measure_saes(module.to(dev).sae, source.to(dev), s.eval_f.to(dev))
    module = module.cpu()
    source.to("cpu")
    for j, (lb, (knob, seed), metrics) in enumerate(zip(labels, module.points, measured)):
        rows.append({"sae": lb, "architecture": arch, "knob": knob, "seed": seed} | metrics)
        tensors, scfg = saelens_export(module.sae, j, source.scale, {
            "hook_name": f"{cfg.study}/{cfg.instance}/{cfg.layer}", "monosem_sae": s.name, "monosem_label": lb,
            "architecture": arch, knob_name(arch): knob, "seed": seed, "input_scale_folded": source.scale})
        folder = staged / lb
        folder.mkdir(parents=True)
        save_tensors(folder / "sae_weights.safetensors", tensors)
        write_json(folder / "cfg.json", scfg)
        for r, step in enumerate(module.curves.steps):
            curves.append({"step": step, "sae": lb, "architecture": arch, "knob": knob, "seed": seed}
                          | {k: float(module.curves.values[k][r][j]) for k in SAE_CURVES})


def draw_figures(s: Setup, rows: list, curves: list, figs) -> None:
    cfg, true_l0 = s.cfg, s.true_l0
    figs.mkdir(exist_ok=True)
    title = f"sae@{s.name}: {cfg.layer} layer of {cfg.study}/{cfg.instance}, {cfg.latents} latents"
    sweep_panels(rows, [("explained_variance", "explained variance", None), ("mcc", "MCC (one-to-one)", None)]
                 + ([("loss_recovered", "toy loss recovered (spliced)", 1.0)]), title, figs / "pareto.png", true_l0)
    sweep_panels(rows, [("recovered_at_0.9", "true features recovered (cos ≥ 0.9)", None),
                        ("mmcs_reverse", "MMCS latents → features", None), ("f1", "latent F1", None)],
                 title, figs / "recovery.png", true_l0)
    sweep_panels(rows, [("shrinkage_gamma", "γ = E‖x̂‖² / E[x·x̂]", 1.0),
                        ("magnitude_ratio", "latent / true coefficient (median)", 1.0)], title,
                 figs / "shrinkage.png", true_l0)
    training_curves(pd.DataFrame(curves), title, figs / "training.png")


def log_results(s: Setup, tracker, parent: str, ids: dict, rows: list, seconds: float, export, figs) -> None:
    tracker.log_metrics(parent, {"train_seconds": seconds, "n_saes": len(rows)})
    for fig in ("pareto.png", "recovery.png", "shrinkage.png", "training.png"):
        tracker.log_artifact(parent, figs / fig, "figures")
    for r in rows:
        rid = ids[r["sae"]]
        tracker.log_metrics(rid, {f"final.{k}": v for k, v in r.items()
                                  if isinstance(v, float) and v == v and k != "knob"}, step=s.cfg.train.steps)
        for f in ("cfg.json", "sae_weights.safetensors"):
            tracker.log_artifact(rid, export / r["sae"] / f, "saelens")
        tracker.end(rid)
    tracker.end(parent)


def main(name: str) -> None:
    params, _ = study_params(name, "saes")
    tracker = open_tracker(params.tracking.experiment)  # the worker opens the store while this loads
    s = setup(name, params)
    cfg = s.cfg
    print(f"sae@{name}: {cfg.layer} layer of {cfg.study}/{cfg.instance} (n = {s.source(s.eval_f[:1]).shape[-1]}), "
          f"{cfg.latents} latents, input scale {s.source.scale:.4g}", flush=True)
    plan = [(arch, knob, seed) for arch, knobs in cfg.architectures.items() for knob in knobs for seed in cfg.seeds]
    runs = start_runs(s, tracker, plan)
    (export, out), rows, curves, run_ids = sae_dirs(name), [], [], []
    with tracker.closing(run_ids, runs):
        parent, children = runs.get()
        run_ids += [parent, *children]
        ids = {label(*p): rid for p, rid in zip(plan, children)}
        start = time.perf_counter()
        staged = export.with_name(export.name + ".tmp")  # renamed into place once every SAE is written
        shutil.rmtree(staged, ignore_errors=True)
        for arch, knobs in cfg.architectures.items():
            train_architecture(s, arch, knobs, tracker, ids, staged, rows, curves)
        seconds = time.perf_counter() - start
        table = matched_l0_table(rows, [s.true_l0 * f for f in (0.5, 1, 2)])
        claims = gated_claims(name, rows)
        write_json(out / "measured.json", {"sae": name, "study": cfg.study, "instance": cfg.instance, "layer": cfg.layer,
                                           "latents": cfg.latents, "true_l0": s.true_l0, "input_scale": s.source.scale,
                                           "train_seconds": seconds, "matched_l0": table, "claims": claims,
                                           "saes": {r["sae"]: r for r in rows}})
        metrics, points = dvc_metrics(rows, table, s.true_l0)
        write_json(out / "points.json", points)
        write_json(out / "metrics.json", metrics)
        write_csv(out / "saes.csv", rows)
        write_csv(out / "curves.csv", curves)
        shutil.rmtree(export, ignore_errors=True)
        staged.rename(export)
        draw_figures(s, rows, curves, out / "figures")
        log_results(s, tracker, parent, ids, rows, seconds, export, out / "figures")
    for c in claims:
        print(f"sae@{name}: {c['id']}: {c['holds']}  ({c.get('evidence', '')})")
    print(f"sae@{name}: {len(rows)} SAEs in {seconds:.1f}s -> {out}")


if __name__ == "__main__":
    run(main)
