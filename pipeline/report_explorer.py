"""The report stage's explorer: reads every study's and SAE study's outputs, writes `reports/explorer/`
(monosem.explorer) and logs it as one self-contained `explorer.html`, with report.md and claims.json, to the
report's own MLflow run."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from monosem.analysis.metrics import single_feature_activations
from monosem.analysis.sae_eval import Activations
from monosem.explorer import AMPLITUDES, bundle, model_page, sae_page, tied_page, write_site
from monosem.sae import architecture
from monosem.store.artifacts import load_tensors, load_world, read_json
from monosem.store.tracking import lineage_tags
from monosem.toy.families import family, models_from_states

from common import (
    REPORTS,
    groups,
    instance_world,
    load_manifest,
    load_states,
    model_dir,
    result_dir,
    sae_dirs,
    world_dir,
)

MLFLOW_UI = "http://127.0.0.1:" + os.environ.get("PORT", "5000")  # where `make ui` serves a local store


def _records(df: pd.DataFrame) -> list[dict]:
    return df.astype(object).where(df.notna(), None).to_dict("records")


def _curves(curves: pd.DataFrame, label: str) -> dict[str, list]:
    rows = curves[curves["instance"] == label].drop(columns=["instance", "point", "seed"])
    return {k: rows[k].tolist() for k in rows}


def study_pages(name: str, study) -> tuple[dict, dict[str, dict], list, list]:
    """A study's entry in the index, its models' pages, and its instances and weights (for the SAE pages)."""
    manifest, instances = load_manifest(name)
    world = load_world(world_dir(manifest["world"]))
    states = load_states(name, manifest, world)
    table = pd.read_csv(result_dir(name) / "instances.csv")
    curves = pd.read_csv(model_dir(name) / "curves.csv")
    interp = result_dir(name) / "interp"
    run_ids = {e["label"]: e["run_id"] for e in manifest["instances"]}
    kind = study.model.kind
    pages, keys = {}, {}
    if not family(kind).tied:
        for members in groups(instances, by_data=world):  # one embedder each (drawn per seed, or shared)
            model = models_from_states([states[i] for i in members], instances[members[0]].model)
            probes = instance_world(world, states[members[0]]).probes
            at = {a: single_feature_activations(model, a * probes) for a in AMPLITUDES}  # (inst, k, N) each
            for j, i in enumerate(members):
                entry = manifest["instances"][i]
                if entry["diverged_at"] is not None:  # nothing analysed: the study table says so
                    continue
                label = entry["label"]
                rows = pd.read_csv(interp / "neurons" / f"{label}.csv").sort_values("neuron")
                keys[label] = f"model/{name}/{i}"
                pages[keys[label]] = model_page(at[1.0][j], {a: s[j] for a, s in at.items()}, states[i]["b1"],
                                                states[i]["W2"], _records(rows),
                                                read_json(interp / "summaries" / f"{label}.json"), _curves(curves, label))
    else:
        features = pd.read_csv(interp / "features.csv")
        for i, entry in enumerate(manifest["instances"]):
            if entry["diverged_at"] is None:
                label = entry["label"]
                rows = features[features["label"] == label][["feature", "importance", "norm", "superposition", "dimensionality"]]
                keys[label] = f"model/{name}/{i}"
                pages[keys[label]] = tied_page(states[i]["W"], states[i]["b"], _records(rows), _curves(curves, label))
    rows = [r | {"run_id": run_ids.get(r["label"]), "page": keys.get(r["label"])} for r in _records(table)]
    axes = [axis[0] for axis in study.axes()]
    entry = {"name": name, "world": manifest["world"], "task": world.cfg.task, "n_features": world.cfg.n_features,
             "kind": kind, "activation": study.model.activation, "neurons": study.model.neurons, "seeds": study.seeds,
             "sweep": {k: v for k, v in study.sweep.items()}, "x_key": axes[0] if axes else None, "series_keys": axes[1:],
             "instances": {"columns": list(rows[0]), "rows": [list(r.values()) for r in rows]}}
    return entry, pages, instances, states


def sae_study_pages(name: str, cfg, instances: list, states: list) -> tuple[dict, dict[str, dict]]:
    """An SAE study's entry in the index and one page per SAE: its decoder against the true directions."""
    export, out = sae_dirs(name)
    i = [inst.label for inst in instances].index(cfg.instance)
    world = instance_world(load_world(world_dir(cfg.world)).with_eps(instances[i].data.eps), states[i])
    model = models_from_states([states[i]], instances[i].model)
    G, _ = Activations(world, model, cfg.layer, world.eval_f[:256]).truth()
    rows, pages = _records(pd.read_csv(out / "saes.csv")), {}
    for r in rows:
        r["page"] = f"sae/{name}/{r['sae']}"
        pages[r["page"]] = sae_page(load_tensors(export / r["sae"] / "sae_weights.safetensors")["W_dec"], G)
    metrics = read_json(out / "measured.json")
    entry = {"name": name, "study": cfg.study, "instance": cfg.instance, "layer": cfg.layer, "latents": cfg.latents,
             "true_l0": metrics["true_l0"], "knobs": {arch: architecture(arch).knob for arch in cfg.architectures},
             "rows": {"columns": list(rows[0]), "rows": [list(r.values()) for r in rows]}}
    return entry, pages


@torch.no_grad()
def build_explorer(params, claims: list[dict], out: Path, experiment: dict) -> dict:
    """Write the explorer of this run's outputs to `out`; `experiment`: {name, id, ui}, for the links to MLflow.
    Returns its size (write_site) and page count."""
    index = {"experiment": experiment, "studies": [], "saes": [], "claims": claims}
    pages, loaded = {}, {}
    for name, study in params.studies.items():
        entry, model_pages, instances, states = study_pages(name, study)
        index["studies"].append(entry)
        pages |= model_pages
        loaded[name] = instances, states
    for name, cfg in params.saes.items():
        entry, sae_pages = sae_study_pages(name, cfg, *loaded[cfg.study])
        index["saes"].append(entry)
        pages |= sae_pages
    return write_site(out, index, pages) | {"pages": len(pages)}


def write_explorer(params, claims: list[dict], tracker) -> None:
    """Write reports/explorer/ and log it to the report's MLflow run (with report.md and claims.json)."""
    start, out = time.perf_counter(), REPORTS / "explorer"
    size = build_explorer(params, claims, out, {"name": params.tracking.experiment, "id": tracker.experiment_id,
                                                "ui": tracker.uri if tracker.uri.startswith("http") else MLFLOW_UI})
    run_id = tracker.start("report", {"studies": len(params.studies), "saes": len(params.saes)}, lineage_tags(tracker.root))
    with tracker.closing([run_id]):
        tracker.log_metrics(run_id, {"claims": len(claims), "claims_hold": sum(c["holds"] is True for c in claims),
                                     "explorer_mb": size["mb"]})
        for path in (REPORTS / "report.md", REPORTS / "claims.json"):
            tracker.log_artifact(run_id, path)
        with tempfile.TemporaryDirectory() as tmp:  # one self-contained file: MLflow's UI shows it as a page
            bundle(out, Path(tmp) / "explorer.html")
            tracker.log_artifact(run_id, Path(tmp) / "explorer.html")
        tracker.end(run_id)
    print(f"report: explorer of {size['pages']} pages, {size['mb']:.1f} MB in {size['files']} files, "
          f"{time.perf_counter() - start:.1f} s -> {out / 'index.html'} (`make explore` opens it)")
