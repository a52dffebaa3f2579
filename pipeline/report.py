"""report: reports/report.md with a table and the figures of every study, and reports/claims.json."""

import math
import shutil

from common import REPORTS, model_dir, result_dir, run

from monosem.artifacts import read_json, write_json, write_text
from monosem.claims import evaluate
from monosem.config import load_params
from monosem.tracking import tracking_uri

COLUMNS = [("loss", "eval loss", 4), ("mono_per_feature", "#mono/#features", 3),
           ("mono_per_neuron", "#mono/#neurons", 3), ("features_covered", "features covered", 3),
           ("mono_per_feature_at_0.99", "#mono/#features at 0.99", 3),
           ("n_dead", "dead", 1), ("bias_mean_mono", "bias mono", 3), ("bias_mean_poly", "bias poly", 3)]


def _cell(stats: dict, key: str, digits: int) -> str:
    mean, std = stats.get(key), stats.get(f"{key}_std")
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    return f"{mean:.{digits}f}" + ("" if std is None or std != std else f" ± {std:.{digits}f}")


def study_section(name: str, study, metrics: dict, manifest: dict, figures: list[str]) -> str:
    lines = [f"## {name}", "",
             f"World `{study.world}`; k = {study.model.neurons} {study.model.activation}; "
             f"{study.train.steps} steps of batch {study.train.batch_size}; lr {study.train.lr:g}, "
             f"bias offset {study.train.bias_offset:g}, bias decay {study.train.bias_decay:g}, L1 {study.train.l1:g}; "
             f"sweep {dict(study.sweep) or 'none'}; seeds {study.seeds}. "
             f"Trained in {manifest['train_seconds']:.0f} s. Mean ± std over seeds.", "",
             "| point | seeds | " + " | ".join(c[1] for c in COLUMNS) + " |",
             "|---" * (len(COLUMNS) + 2) + "|"]
    for point, stats in metrics["points"].items():
        seeds = f"{stats['seeds']}" + (f" ({stats['diverged']} diverged)" if stats["diverged"] else "")
        lines.append(f"| {point} | {seeds} | " + " | ".join(_cell(stats, k, d) for k, _, d in COLUMNS) + " |")
    lines.append("")
    lines += [f"![{name} {fig}](figures/{name}-{fig})" for fig in figures]
    return "\n".join(lines) + "\n"


def main() -> None:
    params = load_params()
    studies, sections = {}, []
    if REPORTS.exists():
        shutil.rmtree(REPORTS / "figures", ignore_errors=True)
    for name, study in params.studies.items():
        metrics = read_json(result_dir(name) / "metrics.json")
        manifest = read_json(model_dir(name) / "instances.json")
        studies[name] = metrics
        figures = sorted(p.name for p in (result_dir(name) / "interp").glob("*.png"))
        order = ["training.png", "mono_sweep.png", "sfa.png", "bias.png"]
        figures.sort(key=lambda f: order.index(f) if f in order else len(order))
        for fig in figures:
            (REPORTS / "figures").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(result_dir(name) / "interp" / fig, REPORTS / "figures" / f"{name}-{fig}")
        sections.append(study_section(name, study, metrics, manifest, figures))

    claims = evaluate(studies)
    write_json(REPORTS / "claims.json", claims)
    verdict = {True: "holds", False: "does not hold", None: "not tested"}
    claim_lines = ["## Claims", "", "Judged on all seeds by criteria fixed in advance (`src/monosem/claims.py`).", "",
                   "| claim | verdict | criterion | evidence |", "|---|---|---|---|"]
    claim_lines += [f"| {c['claim']} | **{verdict[c['holds']]}** | {c['criterion']} | {c['evidence']} |" for c in claims]

    worlds = ["| world | N | m | ε | distribution | task | eval samples |", "|---|---|---|---|---|---|---|"]
    worlds += [f"| {n} | {w.n_features} | {w.d_embed} | {w.eps:g} | {w.distribution} | {w.task} | {w.n_eval} |"
               for n, w in params.worlds.items()]
    text = "\n".join(["# monosem report", "",
                      "Engineering monosemanticity in toy models (Jermyn, Schiefer & Hubinger 2022), reproduced by "
                      "`dvc repro`. Every model is an MLflow run in the experiment "
                      f"`{params.tracking.experiment}` (store: `{tracking_uri()}`; `make ui` opens it).", "",
                      *worlds, "", *claim_lines, "", *sections])
    write_text(REPORTS / "report.md", text)
    held = sum(c["holds"] is True for c in claims)
    print(f"report: {len(studies)} studies, {held}/{len(claims)} claims hold -> {REPORTS / 'report.md'}")


if __name__ == "__main__":
    run(main)
