"""report: reports/report.md with a table and the figures of every study, and reports/claims.json."""

import boot

boot.begin(logs=True)  # first: MLflow's worker loads while this process imports torch

import math
import shutil
import statistics

import pandas as pd

from monosem.analysis import regime
from monosem.analysis.sae_eval import matched_l0_markdown
from monosem.analysis.stats import verdict
from monosem.analysis.summary import cell
from monosem.claims import evaluate
from monosem.params import load_params
from monosem.plots import regime as plots_regime
from monosem.store.artifacts import read_json, write_csv, write_json, write_text
from monosem.store.tracking import tracking_uri
from monosem.toy.families import family

from common import REPORTS, model_dir, open_tracker, result_dir, run, sae_dirs
from report_explorer import write_explorer
from report_ladder import ladder_section
from report_mechanism import mechanism_inputs, mechanism_section

INTERVENTIONS = [
    ("Does the negative bias match the input noise?",
     "A reader of the paper expected the negative bias to correspond to the noise level of the input channel, "
     "as in sparse coding, and that low noise would change the polysemantic activations but not the "
     "monosemantic ones. NOISE and NOISE_TRICK train with Gaussian noise of std σ added to x (training only; "
     "the eval loss is on clean inputs), without and with the bias trick.",
     ["noise_bias_tracks_sigma", "noise_moves_poly_not_mono"], ["NOISE", "NOISE_TRICK"], ["noise", "mono_sweep"]),
    ("Does a lasso on hidden and output activations help?",
     "The same reader proposed L1 on the hidden and the output activations, so the network leans less on "
     "polysemantic neurons to make up small errors. LASSO crosses hidden L1 with output L1 (0 = hidden only).",
     ["lasso_output_raises_mono"], ["LASSO"], ["mono_sweep"]),
    ("Does inhibiting monosemantic neurons make models polysemantic?",
     "Wang et al. 2023 penalise neurons whose outputs spike far from their running statistics (monosemantic "
     "scale φ). INHIBIT adds the L2E form of that penalty at increasing strength.",
     ["inhibition_lowers_mono"], ["INHIBIT"], ["mono_sweep"]),
]


def interventions_section(claims: list[dict], present: set[str]) -> str:
    verdict = {c["id"]: c for c in claims}
    said = {True: "holds", False: "does not hold", None: "could not be tested"}
    lines = ["## Beyond the paper: input noise, lasso, inhibition", ""]
    for title, text, ids, names, figs in INTERVENTIONS:
        lines += [f"### {title}", "", text, ""]
        for cid in ids:
            c = verdict[cid]
            lines += [f"- *{c['claim']}* **{said[c['holds']]}** ({c['criterion']}): {c['evidence']}."]
        lines.append("")
        lines += [f"![{n} {f}](figures/{n}-{f}.png)" for n in names if n in present for f in figs
                  if (REPORTS / "figures" / f"{n}-{f}.png").exists()]
        lines.append("")
    return "\n".join(lines)


def _value(v: float | None, ci: list | None = None) -> str:
    if v is None or v != v:
        return "n/a"
    if ci is None:
        return f"{v:.3g}"
    return f"{v:.3g} [" + ", ".join("n/a" if b is None or b != b else f"{b:.3g}" for b in ci) + "]"


def stability_text(c: dict) -> str:
    """"stable", or "fragile" with the seeds whose leaving out changes the verdict."""
    if c["stability"] == "stable":
        return "stable"
    return "fragile (without seed " + ", ".join(f"{s}: {v}" for s, v in c["leave_one_out"].items()
                                                 if v != c["verdict"]) + ")"


def effect_text(claim: dict) -> str:
    """A claim's effect with its interval, or each named part's ("LR1.loss_spread 0.175 [0.16, 0.19]; …")."""
    effect, ci = claim.get("effect"), claim.get("ci95")
    if effect is None:
        return "—"
    if isinstance(effect, dict):
        return "; ".join(f"{k} {_value(v, (ci or {}).get(k))}" for k, v in effect.items())
    return _value(effect, ci)


def write_claims(claims: list[dict]) -> list[str]:
    """reports/claims.json, reports/claims.md (the compact table README shows), and the report's claims section."""
    write_json(REPORTS / "claims.json", claims)
    claim_lines = ["## Claims", "", "Judged on all seeds by criteria fixed in advance (`src/monosem/claims/`). The "
                   "paper's claims: an effect size and its bootstrap 95% interval; **holds** when the whole interval "
                   "meets the criterion, **does not hold** when none of it does, **inconclusive** when it straddles "
                   "the criterion. The other claims: their tests' p-values or fixed rules (no interval). Stability: "
                   "the verdict judged again with each seed left out in turn; **fragile** when one of those differs "
                   "(listed), **stable** otherwise.", "",
                   "| claim | verdict | stability | effect [95% interval] | criterion | evidence |",
                   "|---|---|---|---|---|---|"]
    claim_lines += [f"| {c['claim']} | **{c['verdict']}** | {stability_text(c)} | {effect_text(c)} | "
                    f"{c['criterion']} | {c['evidence']} |" for c in claims]
    held = sum(c["verdict"] == "holds" for c in claims)
    table1 = [c for c in claims if c["family"] == "paper"]
    write_text(REPORTS / "claims.md", "\n".join([
        f"{sum(c['verdict'] == 'holds' for c in table1)} of {len(table1)} Table 1 claims hold, {held} of "
        f"{len(claims)} claims in all; {sum(c['stability'] == 'fragile' for c in claims)} fragile.", "",
        "| claim | verdict | stability | effect [95% interval] |", "|---|---|---|---|",
        *(f"| {c['claim']} | **{c['verdict']}** | {stability_text(c)} | {effect_text(c)} |" for c in claims)]) + "\n")
    return claim_lines


def studies_table(params) -> list[str]:
    """The paper's Table 1 as run here: one row per study, the swept parameters named."""
    rows = ["| study | task | act | features | k | ε | lr | bias decay | bias offset | L1 | steps × batch | swept | models |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, st in params.studies.items():
        w, t = params.worlds[st.world], st.train
        swept = {k for axis in st.axes() for k in axis}
        show = lambda key, value: "Var" if key in swept else f"{value:g}"  # noqa: E731
        act = family(st.model.kind).act_label(st.model)
        rows.append(f"| {name} | {w.task} | {act} | {w.distribution} | "
                    f"{show('model.neurons', st.model.neurons)} | {show('data.eps', st.data.eps or w.eps)} | "
                    f"{show('train.lr', t.lr)} | {show('train.bias_decay', t.bias_decay)} | "
                    f"{show('train.bias_offset', t.bias_offset)} | {show('train.l1', t.l1)} | "
                    f"{t.steps} × {'Var' if 'train.batch_size' in swept else t.batch_size} | "
                    f"{', '.join(' + '.join(a) for a in st.axes()) or '–'} | {len(st.instances())} |")
    return rows


def training_peaks(curves: pd.DataFrame) -> dict[str, str]:
    """Per sweep point: the highest seed-mean #mono/#features during training and the step it was reached,
    e.g. "0.141 @ 2^8" (monosemantic neurons can appear while the biases are decayed and vanish later)."""
    mean = curves.groupby(["point", "step"], sort=False)["mono_per_feature"].mean()
    out = {}
    for point, series in mean.groupby(level="point", sort=False):
        step = series.idxmax()[1]
        out[point] = f"{series.max():.3f} @ 2^{math.log2(step):.0f}"
    return out


def study_section(name: str, study, metrics: dict, manifest: dict, figures: list[str]) -> str:
    noisy = any(s.get("noise_change_poly") is not None for s in metrics["points"].values())  # NaN is null in JSON
    columns = family(study.model.kind).columns(noisy)
    lines = [f"## {name}", "",
             f"World `{study.world}`; {family(study.model.kind).describe(study.model)}; "
             f"{study.train.steps} steps of batch {study.train.batch_size}; lr {study.train.lr:g}, "
             f"bias offset {study.train.bias_offset:g}, bias decay {study.train.bias_decay:g}, L1 {study.train.l1:g}"
             + "".join(f", {k} {getattr(study.train, k):g}" for k in ("l1_out", "noise_std", "inhibit")
                       if getattr(study.train, k)) + "; "
             f"sweep {dict(study.sweep) or 'none'}; seeds {study.seeds}. "
             f"Trained in {manifest['train_seconds']:.0f} s. Mean ± std over seeds.", "",
             "| point | seeds | " + " | ".join(c[1] for c in columns) + " | peak #mono/#features in training |",
             "|---" * (len(columns) + 3) + "|"]
    peaks = training_peaks(pd.read_csv(model_dir(name) / "curves.csv"))
    for point, stats in metrics["points"].items():
        seeds = f"{stats['seeds']}" + (f" ({stats['diverged']} diverged)" if stats["diverged"] else "")
        lines.append(f"| {point} | {seeds} | " + " | ".join(cell(stats, m.key, m.digits) for m in columns)
                     + f" | {peaks.get(point, '–')} |")
    lines.append("")
    lines += [f"![{name} {fig}](figures/{name}-{fig})" for fig in figures]
    return "\n".join(lines) + "\n"


def tied_section(name: str, study, metrics: dict, manifest: dict, figures: list[str]) -> str:
    """A tied-model study: geometry per density (mean ± std over seeds), and its figures."""
    kind = study.model.kind
    columns = family(kind).columns()
    lines = [f"## {name}", "",
             f"World `{study.world}`; {family(kind).describe(study.model)}"
             + f"; {study.train.steps} steps of batch {study.train.batch_size}, {study.train.optimizer} lr "
             f"{study.train.lr:g}, weight decay {study.train.weight_decay:g}; sweep {dict(study.sweep)}; seeds "
             f"{study.seeds}. Trained in {manifest['train_seconds']:.0f} s. Mean ± std over seeds; figures show the "
             f"lowest-loss seed of each point. Per-feature norms, superposition and D_i: `results/{name}/interp/features.csv`.",
             "", "| point | seeds | " + " | ".join(c[1] for c in columns) + " |", "|---" * (len(columns) + 2) + "|"]
    for point, stats in metrics["points"].items():
        lines.append(f"| {point} | {stats['seeds']} | " + " | ".join(cell(stats, m.key, m.digits) for m in columns) + " |")
    lines.append("")
    lines += [f"![{name} {fig}](figures/{name}-{fig})" for fig in figures]
    return "\n".join(lines) + "\n"


def sae_section(name: str, cfg, metrics: dict) -> str:
    """An SAE study: the architectures compared at matched L0, the Gated claims and the figures."""
    knobs = "; ".join(f"{a} {v}" for a, v in cfg.architectures.items())
    lines = [f"### sae@{name}", "",
             f"The {cfg.layer} layer of `{cfg.study}` model `{cfg.instance}` (world `{cfg.world}`), {cfg.latents} latents; "
             f"{cfg.train.steps} steps of batch {cfg.train.batch_size}, Adam lr {cfg.train.lr:g}; sweeps (λ, or k): "
             f"{knobs}; seeds {cfg.seeds}. {len(metrics['saes'])} SAEs trained in {metrics['train_seconds']:.0f} s. "
             f"Metrics on {cfg.n_eval} held-out activations; the true mean L0 is {metrics['true_l0']:.2f}. Each SAE in "
             f"SAELens' layout: `models/saes/{name}/<sae>/`; every metric of every SAE: `results/saes/{name}/saes.csv`.",
             "", "At matched L0 (seed means, interpolated linearly in log L0 between sweep points; – outside a sweep):", "",
             *matched_l0_markdown(metrics["matched_l0"]), ""]
    lines += [f"![sae {name} {fig}](figures/sae-{name}-{fig})" for fig in SAE_FIGURES]
    return "\n".join(lines) + "\n"


SAE_FIGURES = ("pareto.png", "recovery.png", "shrinkage.png", "training.png")


CALIBRATION = "CAL"  # studies named CAL...: the bias trick's regime (params.yaml)


def regime_section(params, studies: dict, claims: list[dict]) -> str:
    """The calibration of the bias trick's regime: Δ per cell (reports/regime.csv, figures/regime.png), and where
    each Table 1 claim that fails at the default could hold."""
    cells = []
    for name in (n for n in studies if n.startswith(CALIBRATION)):
        st, w = params.studies[name], params.worlds[params.studies[name].world]
        size = f"N {w.n_features}, m {w.d_embed}, k {st.model.neurons}"
        cells += regime.cells(list(studies[name]["instances"].values()), st.train.lr, st.train.steps,
                              st.train.batch_size, size)
    if not cells:
        return ""
    for c in cells:
        c["verdict"] = verdict((c["delta_lo"], c["delta_hi"]), 0.0)
    write_csv(REPORTS / "regime.csv", cells)
    plots_regime.regime_plot(cells, REPORTS / "figures" / "regime.png",
                             "The bias trick's effect: #mono/#features with the trick minus without (lr 0.01, 3 seeds)")
    lines = ["## The bias trick's regime (calibration)", "",
             "Each cell trains the plain model (offset 0, no decay) and the trick (offset −1, decay d per step) on the "
             "same three seeds; Δ is the trick's #mono/#features minus the plain model's, paired by seed, with a "
             "bootstrap 95% interval; the loss ratio is trick/plain (median). d is the decay's strength per step "
             "against LAMB's (the bias shrinks by d·lr per step; the paper's d is 0.03); E = d·lr·steps/2 its e-folds "
             "over the first half. Table: `reports/regime.csv`.", "", "![regime](figures/regime.png)", "",
             "| size | batch | steps | d | E | Δ #mono/#features [95%] | trick / plain | loss ratio | Δ > 0 |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {c['size']} | {c['batch']} | {c['steps']} | {c['d']:g} | {c['E']:.2f} | {c['delta']:+.3f} "
              f"[{c['delta_lo']:+.3f}, {c['delta_hi']:+.3f}] | {c['mono_trick']:.3f} / {c['mono_plain']:.3f} | "
              f"{c['loss_ratio']:.3f} | {c['verdict']} |" for c in cells]
    good = [c for c in cells if c["verdict"] == "holds" and c["loss_ratio"] <= 1.05]
    by_d = {d: [c for c in cells if c["d"] == d] for d in sorted({c["d"] for c in cells})}
    lines += ["", "By decay strength d, over every size, batch and length: " + "; ".join(
        f"d = {d:g}: Δ > 0 in {sum(c['verdict'] == 'holds' for c in cs)}/{len(cs)} cells, mean Δ "
        f"{statistics.fmean(c['delta'] for c in cs):+.3f}" for d, cs in by_d.items()) + "."]
    lines += ["", "### Where each Table 1 claim could hold", ""]
    for c in claims:
        if c["id"] not in TABLE1 or c["verdict"] == "holds":
            continue
        lines.append(f"- **{c['claim']}** ({c['verdict']} at the default): {TABLE1[c['id']](good)}")
    return "\n".join(lines) + "\n"


def _trick_where(good: list[dict]) -> str:
    if not good:
        return "no calibration cell shows the trick raising #mono/#features at a loss ratio <= 1.05."
    return (f"the calibration shows the trick raising #mono/#features at no loss cost (Δ's interval above 0, loss "
            f"ratio <= 1.05) in {len(good)} cells: " + "; ".join(
                f"{c['size']}, batch {c['batch']}, {c['steps']} steps, d {c['d']:g}: Δ {c['delta']:+.3f}"
                for c in good) + ".")


def _not_varied(what: str):
    return lambda good: f"the calibration does not vary {what}, so it cannot say where this holds."


# The Table 1 claims and what the calibration can say about each (it varies the trick, decay, steps, batch and size).
TABLE1 = {"lr_same_loss_different_mono": _not_varied("the learning rate"),
          "bias_trick_more_mono_no_loss_cost": _trick_where,
          "mono_negative_bias": _not_varied("what it would take (it reports #mono, not the neurons' biases)"),
          "width_raises_mono": _not_varied("the width at a fixed number of features"),
          "density_lowers_mono": _not_varied("the feature density"),
          "bias_scales_sqrt_eps": _not_varied("the feature density"),
          "l1_raises_mono": _not_varied("the L1 penalty"),
          "other_tasks": _not_varied("the task")}


def main() -> None:
    params = load_params()
    tracker = open_tracker(params.tracking.experiment)
    tracker.check()  # an unusable store fails the stage before it writes anything
    studies, sections = {}, []
    shutil.rmtree(REPORTS / "figures", ignore_errors=True)
    (REPORTS / "figures").mkdir(parents=True)
    for name, study in params.studies.items():
        metrics = read_json(result_dir(name) / "measured.json")
        manifest = read_json(model_dir(name) / "instances.json")
        studies[name] = metrics
        figures = read_json(result_dir(name) / "interp" / "figures.json")  # what interpret drew, in order
        for fig in figures:
            shutil.copyfile(result_dir(name) / "interp" / fig, REPORTS / "figures" / f"{name}-{fig}")
        section = tied_section if family(study.model.kind).tied else study_section
        sections.append(section(name, study, metrics, manifest, figures))

    interp, mech_figures = mechanism_inputs(  # the paper's neurons (the calibration is about the trick)
        [n for n, st in params.studies.items() if family(st.model.kind).paper_neurons and not n.startswith(CALIBRATION)])
    saes, sae_sections = {}, []
    for name, cfg in params.saes.items():
        saes[name] = read_json(sae_dirs(name)[1] / "measured.json")
        for fig in SAE_FIGURES:
            shutil.copyfile(sae_dirs(name)[1] / "figures" / fig, REPORTS / "figures" / f"sae-{name}-{fig}")
        sae_sections.append(sae_section(name, cfg, saes[name]))
    claims = evaluate(studies, interp, saes)
    if sae_sections:
        sae_sections.insert(0, "## Sparse autoencoders\n\nDictionary learning on the toy models' activations, "
                               "scored against the true features (the Gated SAE paper's claims are in the table above).\n")
    claim_lines = write_claims(claims)

    worlds = ["| world | N | m | ε | distribution | values | importance I_i | task | eval samples |",
              "|---|---|---|---|---|---|---|---|---|"]
    worlds += [f"| {n} | {w.n_features} | {w.d_embed} | {w.eps:g} | {w.distribution} | {w.values} | "
               f"{'1' if w.importance_decay == 1 else f'{w.importance_decay:g}^i'} | {w.task} | {w.n_eval} |"
               for n, w in params.worlds.items()]
    text = "\n".join(["# monosem report", "",
                      "Engineering monosemanticity in toy models (Jermyn, Schiefer & Hubinger 2022), reproduced by "
                      "`dvc repro`. Every model is an MLflow run in the experiment "
                      f"`{params.tracking.experiment}` (store: `{tracking_uri()}`; `make ui` opens it).", "",
                      *worlds, "", "Studies (the paper's Table 1 at this profile's scale, then the interventions):", "",
                      *studies_table(params), "", *claim_lines, "", interventions_section(claims, set(studies)), *sections,
                      regime_section(params, studies, claims), ladder_section(studies),
                      mechanism_section(interp, studies, claims, mech_figures), *sae_sections])
    write_text(REPORTS / "report.md", text)
    write_explorer(params, claims, tracker)
    held = [c["id"] for c in claims if c["holds"] is True]
    fragile = sum(c["stability"] == "fragile" for c in claims)
    print(f"report: {len(studies)} studies, {len(held)}/{len(claims)} claims hold"
          + (f" ({', '.join(held)})" if held else "") + f"; {fragile} fragile -> {REPORTS / 'report.md'}")


if __name__ == "__main__":
    run(main)
