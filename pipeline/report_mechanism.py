"""The report's section on the residual polysemantic neurons: interpret's summaries per sweep point, the
mechanism claims in plain words, and the drawn model's decomposition and spectrum."""

import shutil
import statistics

from monosem.analysis.summary import cell
from monosem.store.artifacts import read_json

from common import REPORTS, result_dir

MECH_COLUMNS = [("n_poly", "poly neurons", 1), ("poly_output_share", "poly share of output", 3),
                ("poly_r2_rank_m", "R² rank m", 3), ("poly_rank_90", "rank, 90% energy", 1),
                ("poly_linear_regime_mean", "poly active fraction", 3), ("identity_fit_poly", "identity fit", 3),
                ("poly_offset_mean", "poly offset", 3), ("n_strong_poly", "poly with frac_mono < 0.9", 1),
                ("strong_poly_r2_rank_m", "their R² rank m", 3), ("strong_poly_linear_regime_mean", "their active fraction", 3),
                ("n_posbias", "bias > 0", 1), ("posbias_r2_rank_m", "bias>0 R² rank m", 3), ("mono_threshold_mean", "mono turn-on a*", 3),
                ("n_mono_at_0.99", "#mono @0.99", 1), ("n_mono_at_0.999", "#mono @0.999", 1),
                ("n_mono_at_0.9999", "#mono @0.9999", 1), ("n_mono_amp_0.5", "#mono, probes at 0.5", 1)]


def point_stats(summaries: dict, metrics: dict) -> dict[str, dict]:
    """Mean and std over seeds of each interpret summary value, per sweep point."""
    by_point: dict[str, list[dict]] = {}
    for label, summary in summaries.items():
        row = metrics["instances"][label]
        if row["diverged_at"] is None:
            by_point.setdefault(row["point"], []).append(summary)
    out = {}
    for point, rows in by_point.items():
        stats = {}
        for key, _, _ in MECH_COLUMNS:
            vals = [r[key] for r in rows if r.get(key) is not None and r[key] == r[key]]
            stats[key] = statistics.fmean(vals) if vals else float("nan")
            stats[f"{key}_std"] = statistics.stdev(vals) if len(vals) > 1 else float("nan")
        out[point] = stats
    return out


def plain_words(linear: dict, identity: dict, mono: dict) -> str:
    """The algorithm as the verdicts describe it (machine-written from the claims, not hand-edited)."""
    parts = []
    if mono["holds"]:
        parts.append("each monosemantic neuron stays silent until its own feature's amplitude passes a threshold "
                     "set by its negative bias, then passes the feature on linearly")
    if linear["holds"]:
        parts.append("the polysemantic neurons are nearly always on and together apply one linear map of rank at "
                     "most m plus a constant")
    elif linear["holds"] is False:
        parts.append("the polysemantic neurons are not one linear map: they are on only part of the time, so "
                     "their output is a sum of thresholded pieces that no rank-m linear map plus a constant "
                     "captures (see R²)")
    if identity["holds"]:
        parts.append("their linear path is aligned with the identity at least half as well as the best rank-m "
                     "map, a (rough) low-rank approximation of the identity")
    elif identity["holds"] is False:
        parts.append("their linear path is not close to a low-rank approximation of the identity")
    return ("; ".join(parts) + ".") if parts else "not enough trained models to say."


def mechanism_section(interp: dict, metrics: dict, claims: list[dict], figures: dict[str, list[str]]) -> str:
    verdict = {c["id"]: c for c in claims}
    linear, identity, mono = (verdict[k] for k in ("poly_linear_low_rank_plus_offset", "poly_low_rank_identity",
                                                   "mono_thresholded_per_feature"))
    said = {True: "holds", False: "does not hold", None: "could not be tested"}
    lines = ["## The residual polysemantic neurons", "",
             "Hypothesis (brief §5, from the paper's description): the polysemantic neurons implement an almost "
             "linear map of rank at most m plus a shared offset, a low-rank approximation of the identity with a "
             "global correction, while each monosemantic neuron adds a thresholded term ReLU(s·f_i + b), b < 0, "
             "for its feature. Measured on every model of every study (`measure` stage, `pipeline/interpret.py`):", "",
             f"- *Linear, rank ≤ m, plus offset* **{said[linear['holds']]}**: {linear['evidence']}.",
             f"- *Approximation of the identity* **{said[identity['holds']]}**: {identity['evidence']}.",
             f"- *Thresholded monosemantic terms* **{said[mono['holds']]}**: {mono['evidence']}.", "",
             "In plain words, what these models compute: " + plain_words(linear, identity, mono), "",
             "Columns: the polysemantic block's share of the output energy on the eval set; R² of the best rank-m "
             "linear map plus a constant from x to that block's output; the rank holding 90% of the energy of its "
             "linear path W2[:, poly]·W1[poly]·P; the fraction of eval samples in which a polysemantic neuron is "
             "active (its linear regime, for ReLU); cos(linear path, target map) relative to the best rank-m "
             "approximation of the identity; the block's constant; the mean input amplitude at which a "
             "monosemantic neuron turns on; and the sensitivity of the 0.999 rule to the threshold and to probe "
             "amplitude. The same linearity measures are given for the strongly polysemantic neurons "
             "(frac_mono < 0.9) and the positive-bias neurons, which the 0.999 rule lumps with near-monosemantic "
             "ones. Mean ± std over seeds.", ""]
    lines += ["For the re-projector task the outputs are Q f ∈ R^m, not features: each feature's output is read "
              "along t_i = Q e_i and the identity of the hypothesis becomes Q; classification, sensitivity, the "
              "decomposition, the spectra and the R² all apply. For the absolute-value task the probes of the "
              "pair search are ±e_i, and the counts of features served by a ReLU(v)/ReLU(−v) pair, by one "
              "neuron, or only by polysemantic neurons follow each study's table.", ""]
    for name, summaries in interp.items():
        lines += [f"### {name}", "", "| point | " + " | ".join(c[1] for c in MECH_COLUMNS) + " |",
                  "|---" * (len(MECH_COLUMNS) + 1) + "|"]
        for point, stats in point_stats(summaries, metrics[name]).items():
            lines.append(f"| {point} | " + " | ".join(cell(stats, k, d) for k, _, d in MECH_COLUMNS) + " |")
        lines.append("")
        abs_rows = [s for s in summaries.values() if "abs_features_pair" in s]
        if abs_rows:
            counts = {k: statistics.fmean(s[k] for s in abs_rows)
                      for k in ("abs_features_pair", "abs_features_one", "abs_features_poly_only")}
            lines += [f"Absolute value, mean over {len(abs_rows)} models of {abs_rows[0]['n_features']} features: "
                      f"{counts['abs_features_pair']:.1f} served by a ReLU(v)/ReLU(−v) pair, "
                      f"{counts['abs_features_one']:.1f} by one signed neuron, "
                      f"{counts['abs_features_poly_only']:.1f} only by polysemantic neurons.", ""]
        lines += [f"![{name} {fig}](figures/{fig})" for fig in figures.get(name, [])]
        lines.append("")
    return "\n".join(lines)


def mechanism_inputs(names: list[str]) -> tuple[dict, dict[str, list[str]]]:
    """Each study's interpret summaries, and the decomposition and spectrum of the model interpret drew (the
    first seed of the last point that trained), copied into the report's figures."""
    interp, figures = {}, {}
    for name in names:
        interp[name] = read_json(result_dir(name) / "interp" / "summary.json")
        analysed = [label for label, summary in interp[name].items() if "diverged_at" not in summary]
        figures[name] = []
        drawn = [lb for lb in analysed if (result_dir(name) / "interp" / "decomposition" / f"{lb}.png").exists()]
        shown = drawn[-1] if drawn else None
        for kind in ("decomposition", "spectrum") if shown else ():
            target = f"{name}-{kind}.png"
            shutil.copyfile(result_dir(name) / "interp" / kind / f"{shown}.png", REPORTS / "figures" / target)
            figures[name].append(target)
    return interp, figures
