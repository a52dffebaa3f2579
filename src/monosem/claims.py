"""The paper's claims, each judged on all seeds by a criterion fixed before looking at the results.

Each check takes the measured studies (`results/<study>/metrics.json` contents, by study name) and returns
{claim, holds: True/False/None, evidence}. None means the studies it needs were not run (or had no data).
Criteria live in the docstrings and in `criterion` so the report states them next to the verdict.
"""

from __future__ import annotations

import math
import statistics
from typing import Callable

from scipy import stats

Studies = dict[str, dict]
CHECKS: list[Callable[[Studies], dict]] = []


def check(fn):
    CHECKS.append(fn)
    return fn


def _instances(study: dict) -> list[dict]:
    return [r for r in study["instances"].values() if r["diverged_at"] is None]


def _by_point(study: dict, key: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for r in _instances(study):
        out.setdefault(r["point"], []).append(r[key])
    return out


def _fmt(xs: list[float]) -> str:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    if not xs:
        return "n/a"
    return f"{statistics.fmean(xs):.3f} ± {statistics.stdev(xs) if len(xs) > 1 else 0:.3f}"


def _missing(result: dict, studies: Studies, names: list[str]) -> dict | None:
    absent = [n for n in names if n not in studies]
    if absent:
        return result | {"holds": None, "evidence": f"studies not run: {', '.join(absent)}"}
    return None


@check
def same_loss_different_monosemanticity(studies: Studies) -> dict:
    result = {"id": "lr_same_loss_different_mono", "studies": ["LR1"],
              "claim": "Different learning rates reach about the same loss with different monosemanticity (LR1).",
              "criterion": "spread of mean eval loss across LRs (max-min)/min <= 10%, and #mono/#features differs "
                           "across LRs (Kruskal-Wallis over seeds, p < 0.05)"}
    if (miss := _missing(result, studies, ["LR1"])) is not None:
        return miss
    loss, mono = _by_point(studies["LR1"], "loss"), _by_point(studies["LR1"], "mono_per_feature")
    means = {p: statistics.fmean(v) for p, v in loss.items()}
    spread = (max(means.values()) - min(means.values())) / min(means.values())
    try:
        p = stats.kruskal(*mono.values()).pvalue if len(mono) > 1 else 1.0
    except ValueError:  # all values identical: no difference at all
        p = 1.0
    per_point = "; ".join(f"{pt}: loss {_fmt(loss[pt])}, mono/feat {_fmt(mono[pt])}" for pt in loss)
    return result | {"holds": bool(spread <= 0.10 and p < 0.05),
                     "evidence": f"loss spread {spread:.1%}, Kruskal-Wallis p = {p:.3g}. {per_point}"}


@check
def bias_trick_more_monosemantic(studies: Studies) -> dict:
    result = {"id": "bias_trick_more_mono_no_loss_cost", "studies": ["LR1", "LR3"],
              "claim": "A negative bias offset with bias decay gives more monosemantic models at no loss cost "
                       "(LR3 vs LR1).",
              "criterion": "instances paired by (lr, seed): #mono/#features higher with the trick (one-sided "
                           "Wilcoxon signed-rank, p < 0.05) and median loss ratio LR3/LR1 <= 1.05"}
    if (miss := _missing(result, studies, ["LR1", "LR3"])) is not None:
        return miss
    plain = {r["label"]: r for r in _instances(studies["LR1"])}
    trick = {r["label"]: r for r in _instances(studies["LR3"])}
    pairs = [(plain[k], trick[k]) for k in sorted(plain.keys() & trick.keys())]
    if len(pairs) < 2:
        return result | {"holds": None, "evidence": "fewer than 2 (lr, seed) pairs in common"}
    diff = [t["mono_per_feature"] - p["mono_per_feature"] for p, t in pairs]
    ratio = statistics.median(t["loss"] / p["loss"] for p, t in pairs)
    try:
        pval = stats.wilcoxon(diff, alternative="greater").pvalue
    except ValueError:  # all differences zero
        pval = 1.0
    return result | {"holds": bool(pval < 0.05 and ratio <= 1.05),
                     "evidence": f"{len(pairs)} pairs; mono/feat LR1 {_fmt([p['mono_per_feature'] for p, _ in pairs])}"
                                 f" vs LR3 {_fmt([t['mono_per_feature'] for _, t in pairs])}, Wilcoxon p = {pval:.3g}; "
                                 f"median loss ratio LR3/LR1 {ratio:.3f}"}


@check
def mono_neurons_negative_bias(studies: Studies) -> dict:
    result = {"id": "mono_negative_bias", "studies": ["LR3"],
              "claim": "Monosemantic neurons have negative biases, below those of the polysemantic neurons (LR3).",
              "criterion": "in every instance with both classes: mean mono bias < 0 and < mean poly bias"}
    if (miss := _missing(result, studies, ["LR3"])) is not None:
        return miss
    both = [r for r in _instances(studies["LR3"]) if r["n_mono"] > 0 and r["n_poly"] > 0]
    if not both:
        return result | {"holds": None, "evidence": "no instance has both monosemantic and polysemantic neurons"}
    ok = [r for r in both if r["bias_mean_mono"] < 0 and r["bias_mean_mono"] < r["bias_mean_poly"]]
    return result | {"holds": len(ok) == len(both),
                     "evidence": f"{len(ok)}/{len(both)} instances; mean bias mono "
                                 f"{_fmt([r['bias_mean_mono'] for r in both])}, poly "
                                 f"{_fmt([r['bias_mean_poly'] for r in both])}"}


# --- beyond the paper: interventions (the paper's discussion; Wang et al. 2023) ------------------------------
# Studies by name: NOISE and NOISE_TRICK sweep train.noise_std, LASSO sweeps train.l1 × train.l1_out,
# INHIBIT sweeps train.inhibit (params.yaml). A study that is absent leaves its claim untested.

def _num(v) -> bool:
    """A measured number: not null (NaN in metrics.json) and not NaN."""
    return v is not None and v == v


def _sweep_value(row: dict, key: str) -> float:
    return float(row[f"sweep.{key}"])


def _paired_wilcoxon(diff: list[float], alternative: str) -> float:
    if all(d == 0 for d in diff):
        return 1.0
    try:
        return float(stats.wilcoxon(diff, alternative=alternative).pvalue)
    except ValueError:  # every difference zero
        return 1.0


@check
def noise_bias_tracks_sigma(studies: Studies) -> dict:
    names = ["NOISE", "NOISE_TRICK"]
    result = {"id": "noise_bias_tracks_sigma", "studies": names,
              "claim": "The learned negative bias tracks the input noise level σ, as in sparse coding (discussion "
                       "of the paper).",
              "criterion": "in each noise study, over all instances: Spearman correlation between σ and the mean "
                           "bias of the live (not dead) neurons <= -0.5 with p < 0.05 (the bias falls as σ rises)"}
    present = [n for n in names if n in studies]
    if not present:
        return result | {"holds": None, "evidence": f"studies not run: {', '.join(names)}"}
    ok, parts = [], []
    for name in present:
        rows = [r for r in _instances(studies[name]) if _num(r["bias_mean_live"])]
        sigma = [_sweep_value(r, "train.noise_std") for r in rows]
        bias = [r["bias_mean_live"] for r in rows]
        if len(set(sigma)) < 2:
            return result | {"holds": None, "evidence": f"{name}: fewer than two noise levels"}
        rho, p = stats.spearmanr(sigma, bias)
        slope = stats.linregress(sigma, bias).slope
        ok.append(bool(rho <= -0.5 and p < 0.05))
        per = _by_point(studies[name], "bias_mean_live")
        parts.append(f"{name}: Spearman {rho:.2f} (p = {p:.2g}), slope d(bias)/dσ {slope:.2f}; live bias "
                     + "; ".join(f"{pt} {_fmt(v)}" for pt, v in per.items()))
    return result | {"holds": all(ok), "evidence": ". ".join(parts)}


@check
def noise_moves_poly_more(studies: Studies) -> dict:
    names = ["NOISE", "NOISE_TRICK"]
    result = {"id": "noise_moves_poly_not_mono", "studies": names,
              "claim": "Input noise changes the polysemantic neurons' activations more than the monosemantic "
                       "ones' (discussion of the paper).",
              "criterion": "over every model trained with σ > 0 that has both classes, noise at its own σ on the "
                           "eval set: relative activation change ‖Δh‖/‖h‖ of the polysemantic neurons above that of "
                           "the monosemantic ones (one-sided Wilcoxon signed-rank, p < 0.05)"}
    present = [n for n in names if n in studies]
    if not present:
        return result | {"holds": None, "evidence": f"studies not run: {', '.join(names)}"}
    rows = [r for n in present for r in _instances(studies[n])
            if _num(r["noise_change_mono"]) and _num(r["noise_change_poly"])]
    if len(rows) < 2:
        return result | {"holds": None, "evidence": "fewer than 2 noisy models with both classes"}
    mono, poly = [r["noise_change_mono"] for r in rows], [r["noise_change_poly"] for r in rows]
    p = _paired_wilcoxon([b - a for a, b in zip(mono, poly)], "greater")
    more = sum(b > a for a, b in zip(mono, poly))
    return result | {"holds": bool(p < 0.05),
                     "evidence": f"{len(rows)} models; relative change mono {_fmt(mono)}, poly {_fmt(poly)}; poly "
                                 f"moved more in {more}/{len(rows)}, Wilcoxon p = {p:.3g}"}


def _against_zero(rows: list[dict], key: str, match: tuple[str, ...] = ()) -> list[tuple[dict, dict]]:
    """(control, treated) pairs: each instance with sweep `key` > 0 against the one with `key` = 0 that has
    the same seed and the same values of the `match` sweep keys."""
    def tag(r: dict) -> tuple:
        return (r["seed"], *(_sweep_value(r, k) for k in match))
    control = {tag(r): r for r in rows if _sweep_value(r, key) == 0}
    return [(control[tag(r)], r) for r in rows if _sweep_value(r, key) > 0 and tag(r) in control]


def _paired_mono(result: dict, pairs: list[tuple[dict, dict]], alternative: str, names: tuple[str, str]) -> dict:
    """Verdict on #mono/#features of treated against control (one-sided Wilcoxon, p < 0.05), with the
    median loss ratio treated/control stated."""
    if len(pairs) < 2:
        return result | {"holds": None, "evidence": "fewer than 2 pairs of control and treated instances"}
    p = _paired_wilcoxon([t["mono_per_feature"] - c["mono_per_feature"] for c, t in pairs], alternative)
    ratio = statistics.median(t["loss"] / c["loss"] for c, t in pairs)
    return result | {"holds": bool(p < 0.05),
                     "evidence": f"{len(pairs)} pairs; mono/feat {names[0]} {_fmt([c['mono_per_feature'] for c, _ in pairs])}"
                                 f", {names[1]} {_fmt([t['mono_per_feature'] for _, t in pairs])}, Wilcoxon "
                                 f"p = {p:.3g}; median loss ratio {names[1]}/{names[0]} {ratio:.3f}"}


@check
def lasso_raises_monosemanticity(studies: Studies) -> dict:
    result = {"id": "lasso_output_raises_mono", "studies": ["LASSO"],
              "claim": "L1 on the hidden and the output activations (lasso) gives more monosemantic models than L1 "
                       "on the hidden activations alone (discussion of the paper), at a stated loss cost.",
              "criterion": "instances paired by (hidden L1, seed), each l1_out > 0 against l1_out = 0: #mono/#features "
                           "higher with the output term (one-sided Wilcoxon signed-rank, p < 0.05); the loss cost is "
                           "stated as the median loss ratio, not judged"}
    if (miss := _missing(result, studies, ["LASSO"])) is not None:
        return miss
    pairs = _against_zero(_instances(studies["LASSO"]), "train.l1_out", ("train.l1",))
    return _paired_mono(result, pairs, "greater", ("hidden only", "hidden + output"))


@check
def inhibition_lowers_monosemanticity(studies: Studies) -> dict:
    result = {"id": "inhibition_lowers_mono", "studies": ["INHIBIT"],
              "claim": "Inhibiting monosemantic neurons (Wang et al. 2023, L2E form) lowers monosemanticity; its "
                       "effect on the loss is stated.",
              "criterion": "instances paired by seed, each inhibit > 0 against inhibit = 0: #mono/#features lower "
                           "(one-sided Wilcoxon signed-rank, p < 0.05); the loss change is stated as the median "
                           "loss ratio, not judged"}
    if (miss := _missing(result, studies, ["INHIBIT"])) is not None:
        return miss
    out = _paired_mono(result, _against_zero(_instances(studies["INHIBIT"]), "train.inhibit"), "less",
                       ("plain", "inhibited"))
    scale = _by_point(studies["INHIBIT"], "mono_scale_mean")
    return out | {"evidence": out["evidence"] + "; mean monosemantic scale per point: "
                  + "; ".join(f"{pt} {_fmt(v)}" for pt, v in scale.items())}


# --- the algorithm of the residual polysemantic neurons (interpret stage summaries) -------------------------
# These take {study: {label: summary}} from results/<study>/interp/summary.json, over every study and seed.

MECHANISM: list[Callable[[dict], dict]] = []


def mechanism(fn):
    MECHANISM.append(fn)
    return fn


def _pooled(interp: dict, key: str, need: str | None = None) -> list[float]:
    vals = []
    for summaries in interp.values():
        for s in summaries.values():
            v = s.get(key)
            if (need is None or s.get(need, 0) > 0) and v is not None and v == v:
                vals.append(float(v))
    return vals


def _median_claim(result: dict, vals: list[float], ok, what: str) -> dict:
    if not vals:
        return result | {"holds": None, "evidence": f"no model has {what}"}
    med = statistics.median(vals)
    return result | {"holds": bool(ok(med)), "evidence": f"median {med:.3f} over {len(vals)} models "
                                                          f"(min {min(vals):.3f}, max {max(vals):.3f})"}


@mechanism
def poly_block_linear(interp: dict) -> dict:
    result = {"id": "poly_linear_low_rank_plus_offset", "studies": sorted(interp),
              "claim": "The polysemantic neurons act as an almost linear map of rank <= m plus a shared offset.",
              "criterion": "over all models with polysemantic neurons: median R² of the best rank-m linear map plus "
                           "a constant (from x to the polysemantic block's output, eval set) >= 0.9, and the "
                           "median fraction of eval samples in which a polysemantic neuron is active >= 0.5"}
    r2 = _pooled(interp, "poly_r2_rank_m", "n_poly")
    regime = _pooled(interp, "poly_linear_regime_mean", "n_poly")
    if not r2:
        return result | {"holds": None, "evidence": "no model has polysemantic neurons"}
    m_r2, m_reg = statistics.median(r2), statistics.median(regime)
    return result | {"holds": bool(m_r2 >= 0.9 and m_reg >= 0.5),
                     "evidence": f"{len(r2)} models: median R² at rank m {m_r2:.3f} (min {min(r2):.3f}); median "
                                 f"active fraction {m_reg:.3f} (min {min(regime):.3f}, max {max(regime):.3f})"}


@mechanism
def poly_block_identity(interp: dict) -> dict:
    result = {"id": "poly_low_rank_identity", "studies": sorted(interp),
              "claim": "The polysemantic block's linear path W2·W1·P is a low-rank approximation of the identity.",
              "criterion": "median over models of cos(L_poly, target map) / sqrt(m/N) >= 0.5, where sqrt(m/N) is "
                           "the cosine of the best rank-m approximation of the identity"}
    return _median_claim(result, _pooled(interp, "identity_fit_poly", "n_poly"), lambda v: v >= 0.5,
                         "polysemantic neurons")


@mechanism
def mono_thresholded(interp: dict) -> dict:
    result = {"id": "mono_thresholded_per_feature", "studies": sorted(interp),
              "claim": "Monosemantic neurons add a thresholded per-feature term: off below an input amplitude "
                       "a* = -b/s in (0, 1), linear above.",
              "criterion": "median over models of the mean turn-on amplitude a* of their monosemantic neurons in "
                           "[0.05, 1)"}
    return _median_claim(result, _pooled(interp, "mono_threshold_mean", "n_mono"), lambda v: 0.05 <= v < 1,
                         "monosemantic neurons")


def evaluate(studies: Studies, interp: dict | None = None) -> list[dict]:
    return [fn(studies) for fn in CHECKS] + [fn(interp or {}) for fn in MECHANISM]
