"""The paper's claims, each judged on all seeds by a criterion fixed before looking at the results.

Each check takes the measured studies (`results/<study>/measured.json` contents, by study name) and returns
{claim, holds: True/False/None, evidence}. None means the studies it needs were not run (or had no data).
Criteria live in the docstrings and in `criterion` so the report states them next to the verdict.
"""

from __future__ import annotations

import math
import statistics
from typing import Callable

from scipy import stats

from .theory import crossovers, gain_by_width, loglog_slope

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


def _num(v) -> bool:
    """A measured number: not null (NaN in measured.json) and not NaN."""
    return v is not None and v == v


def _sweep_value(row: dict, key: str) -> float:
    return float(row[f"sweep.{key}"])


def _swept(rows: list[dict], key: str) -> list[dict]:
    """The rows of a study that sweeps `key` (a study edited to sweep something else has none)."""
    return [r for r in rows if f"sweep.{key}" in r]


def _paired_wilcoxon(diff: list[float], alternative: str) -> float:
    if all(d == 0 for d in diff):
        return 1.0
    try:
        return float(stats.wilcoxon(diff, alternative=alternative).pvalue)
    except ValueError:  # every difference zero
        return 1.0


def _each(result: dict, studies: Studies, names: list[str], judge: Callable[[str, dict], tuple[bool | None, str]]) -> dict:
    """Judge every named study that was run; the claim holds if it holds in each of them (None if none ran
    or none had the data)."""
    present = [n for n in names if n in studies]
    if not present:
        return result | {"holds": None, "evidence": f"studies not run: {', '.join(names)}"}
    verdicts, parts = [], []
    for name in present:
        holds, evidence = judge(name, studies[name])
        verdicts.append(holds)
        parts.append(f"{name}: {evidence}")
    judged = [v for v in verdicts if v is not None]
    return result | {"holds": all(judged) if judged else None, "evidence": ". ".join(parts)}


def _trend(study: dict, key: str, metric: str = "mono_per_feature") -> tuple[float, float, int]:
    """Spearman correlation (rho, p, n) between a swept value and a metric over all instances."""
    rows = [r for r in _swept(_instances(study), key) if _num(r.get(metric))]
    x, y = [_sweep_value(r, key) for r in rows], [r[metric] for r in rows]
    if len(set(x)) < 2 or len(set(y)) < 2:
        return float("nan"), 1.0, len(rows)
    rho, p = stats.spearmanr(x, y)
    return float(rho), float(p), len(rows)


def _per_point(study: dict, metric: str = "mono_per_feature") -> str:
    return "; ".join(f"{pt} {_fmt(v)}" for pt, v in _by_point(study, metric).items())


@check
def same_loss_different_monosemanticity(studies: Studies) -> dict:
    result = {"id": "lr_same_loss_different_mono", "studies": ["LR1", "LR2"],
              "claim": "Different learning rates reach about the same loss with different monosemanticity "
                       "(LR1, LR2).",
              "criterion": "in each study: spread of mean eval loss across LRs (max-min)/min <= 10%, and "
                           "#mono/#features differs across LRs (Kruskal-Wallis over seeds, p < 0.05)"}

    def judge(name, study):
        loss, mono = _by_point(study, "loss"), _by_point(study, "mono_per_feature")
        if len(loss) < 2:
            return None, "fewer than two learning rates"
        means = {p: statistics.fmean(v) for p, v in loss.items()}
        spread = (max(means.values()) - min(means.values())) / min(means.values())
        try:
            p = stats.kruskal(*mono.values()).pvalue
        except ValueError:  # all values identical: no difference at all
            p = 1.0
        per_point = "; ".join(f"{pt}: loss {_fmt(loss[pt])}, mono/feat {_fmt(mono[pt])}" for pt in loss)
        return bool(spread <= 0.10 and p < 0.05), f"loss spread {spread:.1%}, Kruskal-Wallis p = {p:.3g}; {per_point}"

    return _each(result, studies, ["LR1", "LR2"], judge)


@check
def bias_trick_more_monosemantic(studies: Studies) -> dict:
    result = {"id": "bias_trick_more_mono_no_loss_cost", "studies": ["LR1", "LR3", "LR2", "LR4"],
              "claim": "A negative bias offset with bias decay gives more monosemantic models at no loss cost "
                       "(LR3 vs LR1, LR4 vs LR2).",
              "criterion": "for each pair of studies, instances paired by (lr, seed): #mono/#features higher with "
                           "the trick (one-sided Wilcoxon signed-rank, p < 0.05) and median loss ratio trick/plain "
                           "<= 1.05"}
    pairs_of = {"LR3": "LR1", "LR4": "LR2"}

    def judge(name, study):
        if pairs_of[name] not in studies:
            return None, f"{pairs_of[name]} not run"
        plain = {r["label"]: r for r in _instances(studies[pairs_of[name]])}
        trick = {r["label"]: r for r in _instances(study)}
        pairs = [(plain[k], trick[k]) for k in sorted(plain.keys() & trick.keys())]
        if len(pairs) < 2:
            return None, "fewer than 2 (lr, seed) pairs in common"
        p = _paired_wilcoxon([t["mono_per_feature"] - b["mono_per_feature"] for b, t in pairs], "greater")
        ratio = statistics.median(t["loss"] / b["loss"] for b, t in pairs)
        return bool(p < 0.05 and ratio <= 1.05), (
            f"{len(pairs)} pairs; mono/feat {pairs_of[name]} {_fmt([b['mono_per_feature'] for b, _ in pairs])} vs "
            f"{name} {_fmt([t['mono_per_feature'] for _, t in pairs])}, Wilcoxon p = {p:.3g}; median loss ratio "
            f"{ratio:.3f}")

    return _each(result, studies, ["LR3", "LR4"], judge)


@check
def mono_neurons_negative_bias(studies: Studies) -> dict:
    result = {"id": "mono_negative_bias", "studies": ["LR3", "LR4"],
              "claim": "Monosemantic neurons have moderately negative biases; the remaining polysemantic ones "
                       "small positive ones (LR3, LR4).",
              "criterion": "in each study: in every instance with both classes, mean mono bias < 0 and below the "
                           "mean poly bias; and the median over instances of the mean poly bias >= 0"}

    def judge(name, study):
        both = [r for r in _instances(study) if r["n_mono"] > 0 and r["n_poly"] > 0]
        if not both:
            return None, "no instance has both monosemantic and polysemantic neurons"
        ok = [r for r in both if r["bias_mean_mono"] < 0 and r["bias_mean_mono"] < r["bias_mean_poly"]]
        poly = statistics.median(r["bias_mean_poly"] for r in both)
        return bool(len(ok) == len(both) and poly >= 0), (
            f"mono below zero and below poly in {len(ok)}/{len(both)} instances; mean bias mono "
            f"{_fmt([r['bias_mean_mono'] for r in both])}, poly {_fmt([r['bias_mean_poly'] for r in both])} "
            f"(median {poly:.3f})")

    return _each(result, studies, ["LR3", "LR4"], judge)


@check
def width_raises_monosemanticity(studies: Studies) -> dict:
    result = {"id": "width_raises_mono", "studies": ["K0", "K1", "K2"],
              "claim": "Monosemanticity rises with width, approaching one monosemantic neuron per feature for "
                       "k >= N with the bias trick (K0-K2).",
              "criterion": "in each study: Spearman correlation of k with #mono/#features > 0, p < 0.05; and in "
                           "K1 (uniform, bias trick) mean #mono/#features >= 0.75 at its largest k (>= N)"}

    def judge(name, study):
        rho, p, n = _trend(study, "model.neurons")
        if not n:
            return None, "does not sweep model.neurons"
        holds = bool(rho > 0 and p < 0.05)
        text = f"Spearman {rho:.2f} (p = {p:.2g}, {n} models); mono/feat {_per_point(study)}"
        if name == "K1":
            rows = _instances(study)
            widest = max(_sweep_value(r, "model.neurons") for r in rows)
            top = statistics.fmean(r["mono_per_feature"] for r in rows if _sweep_value(r, "model.neurons") == widest)
            holds = holds and widest >= study["n_features"] and top >= 0.75
            text += f"; at k = {widest:g}: {top:.3f}"
        return holds, text

    return _each(result, studies, ["K0", "K1", "K2"], judge)


@check
def density_lowers_monosemanticity(studies: Studies) -> dict:
    names = ["E1", "E2", "E3", "E4"]
    result = {"id": "density_lowers_mono", "studies": names,
              "claim": "Monosemanticity falls as the feature density ε rises (E1-E4).",
              "criterion": "in each study: Spearman correlation of ε with #mono/#features < 0, p < 0.05"}

    def judge(name, study):
        rho, p, n = _trend(study, "data.eps")
        if not n:
            return None, "does not sweep data.eps"
        return bool(rho < 0 and p < 0.05), f"Spearman {rho:.2f} (p = {p:.2g}, {n} models); mono/feat {_per_point(study)}"

    return _each(result, studies, names, judge)


@check
def bias_scales_as_sqrt_density(studies: Studies) -> dict:
    names = ["E1", "E2", "E3", "E4"]
    result = {"id": "bias_scales_sqrt_eps", "studies": names,
              "claim": "The learned negative bias scales about as √ε (E1-E4).",
              "criterion": "over all instances of the E studies whose live neurons have a negative mean bias: the "
                           "least-squares slope of log(-bias) on log ε is in [0.25, 0.75] (√ε gives 0.5)"}
    rows = [r for n in names if n in studies for r in _swept(_instances(studies[n]), "data.eps")
            if _num(r.get("bias_mean_live")) and r["bias_mean_live"] < 0]
    if len({_sweep_value(r, "data.eps") for r in rows}) < 2:
        return result | {"holds": None, "evidence": "fewer than two densities with negative biases"}
    fit = stats.linregress([math.log(_sweep_value(r, "data.eps")) for r in rows],
                           [math.log(-r["bias_mean_live"]) for r in rows])
    per = "; ".join(f"{n}: " + _per_point(studies[n], "bias_mean_live") for n in names if n in studies)
    return result | {"holds": bool(0.25 <= fit.slope <= 0.75),
                     "evidence": f"slope {fit.slope:.3f} ± {fit.stderr:.3f} over {len(rows)} models (r = {fit.rvalue:.2f})"
                                 f"; live-neuron bias {per}"}


@check
def l1_raises_monosemanticity(studies: Studies) -> dict:
    result = {"id": "l1_raises_mono", "studies": ["RG1"],
              "claim": "Moderate L1 on the hidden activations raises monosemanticity (RG1).",
              "criterion": "some L1 strength > 0 has a higher mean #mono/#features than L1 = 0 (one-sided Welch "
                           "t-test over seeds, p < 0.05 divided by the number of strengths tested)"}
    if (miss := _missing(result, studies, ["RG1"])) is not None:
        return miss
    rows = _swept(_instances(studies["RG1"]), "train.l1")
    control = [r["mono_per_feature"] for r in rows if _sweep_value(r, "train.l1") == 0]
    levels = sorted({_sweep_value(r, "train.l1") for r in rows} - {0.0})
    if len(control) < 2 or not levels:
        return result | {"holds": None, "evidence": "needs L1 = 0 and another strength, each with 2+ seeds"}
    tests = {}
    for level in levels:
        treated = [r["mono_per_feature"] for r in rows if _sweep_value(r, "train.l1") == level]
        if len(set(treated + control)) < 2:
            tests[level] = 1.0
            continue
        tests[level] = float(stats.ttest_ind(treated, control, equal_var=False, alternative="greater").pvalue)
    best = min(tests, key=tests.get)
    alpha = 0.05 / len(levels)
    return result | {"holds": bool(tests[best] < alpha),
                     "evidence": f"best L1 {best:g}: Welch p = {tests[best]:.3g} (needs < {alpha:.3g}); mono/feat "
                                 + _per_point(studies["RG1"])}


@check
def effects_hold_on_other_tasks(studies: Studies) -> dict:
    result = {"id": "other_tasks", "studies": ["RP1", "LR5", "D1"],
              "claim": "The effects hold for the re-projector and absolute-value tasks (RP1, LR5, D1).",
              "criterion": "Spearman correlation > 0 with p < 0.05 of #mono/#features with the learning rate in RP1 "
                           "and LR5 (both with the bias trick) and with the bias decay in D1"}

    def judge(name, study):
        key = "train.bias_decay" if name == "D1" else "train.lr"
        rho, p, n = _trend(study, key)
        if not n:
            return None, f"does not sweep {key}"
        return bool(rho > 0 and p < 0.05), f"{key.split('.')[-1]}: Spearman {rho:.2f} (p = {p:.2g}, {n} models); " \
                                           f"mono/feat {_per_point(study)}"

    return _each(result, studies, ["RP1", "LR5", "D1"], judge)


# --- beyond the paper: interventions (the paper's discussion; Wang et al. 2023) ------------------------------
# Studies by name: NOISE and NOISE_TRICK sweep train.noise_std, LASSO sweeps train.l1 × train.l1_out,
# INHIBIT sweeps train.inhibit (params.yaml). A study that is absent leaves its claim untested.

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
        rows = [r for r in _swept(_instances(studies[name]), "train.noise_std") if _num(r["bias_mean_live"])]
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
    rows = [r for n in present for r in _swept(_instances(studies[n]), "train.noise_std")
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
    rows = [r for r in _swept(rows, key) if all(f"sweep.{k}" in r for k in match)]
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
    if out["holds"] is None:
        return out
    scale = _by_point(studies["INHIBIT"], "mono_scale_mean")
    return out | {"evidence": out["evidence"] + "; mean monosemantic scale per point: "
                  + "; ".join(f"{pt} {_fmt(v)}" for pt, v in scale.items())}


# --- superposition geometry and the loss bounds (tied models; Elhage et al. 2022, Basu Roy Chowdhury & Weiner) ---

GEOMETRY_TOL = 0.02  # |D_i − fraction| counted as "at" a fraction
STICKY_TOL, STICKY_SPAN = 0.05, 2.0
SLOPE_TOL, BOUND_FACTOR = 0.2, 2.0


def _best_per_point(study: dict) -> list[dict]:
    """The lowest-loss seed of each sweep point (TMS' best-of-K restarts), ordered by density, descending."""
    best: dict[str, dict] = {}
    for r in _instances(study):
        if _num(r.get("loss")) and (r["point"] not in best or r["loss"] < best[r["point"]]["loss"]):
            best[r["point"]] = r
    return sorted(best.values(), key=lambda r: (r.get("neurons", 0), -r["density"]))


@check
def dims_per_feature_sticky(studies: Studies) -> dict:
    result = {"id": "dims_per_feature_sticky", "studies": ["TMS1", "TMS2"],
              "claim": "Dimensions per feature m/‖W‖²_F sticks at 1 and at 1/2 as sparsity grows (TMS).",
              "criterion": f"per study, on the lowest-loss seed of each density: the densities whose D* lies within "
                           f"±{STICKY_TOL} of 1 span a factor >= {STICKY_SPAN:g} in 1/(1−S), and likewise for 1/2"}

    def judge(name, study):
        best = _best_per_point(study)
        if len(best) < 2:
            return None, "fewer than two densities"
        parts, ok = [], True
        for target in (1.0, 0.5):
            at = [r["density"] for r in best if abs(r["dims_per_feature"] - target) <= STICKY_TOL]
            span = max(at) / min(at) if at else 0.0
            ok &= span >= STICKY_SPAN
            parts.append(f"at {target:g}: {len(at)} densities, span ×{span:.2g}")
        curve = ", ".join(f"{1 / r['density']:.3g}: {r['dims_per_feature']:.3f}" for r in best)
        return ok, "; ".join(parts) + f" (1/(1−S): D* = {curve})"
    return _each(result, studies, ["TMS1", "TMS2"], judge)


@check
def feature_dims_cluster(studies: Studies) -> dict:
    from .superposition import GEOMETRIC_FRACTIONS, REPRESENTED

    result = {"id": "feature_dims_cluster", "studies": ["TMS2"],
              "claim": "Feature dimensionalities D_i cluster at the geometric fractions 1, 3/4, 2/3, 1/2, 2/5, 3/8.",
              "criterion": f"represented features (‖W_i‖ > {REPRESENTED}) of the lowest-loss seed of every density "
                           f"where the model holds more features than dimensions (‖W‖²_F > m): the share within "
                           f"±{GEOMETRY_TOL} of a fraction is >= 2× the share those windows cover of [min D_i, max D_i] "
                           f"(uniform null) and a one-sided binomial test against that null gives p < 0.01"}
    if (miss := _missing(result, studies, ["TMS2"])) is not None:
        return miss
    study = studies["TMS2"]
    dims = []
    for r in _best_per_point(study):
        if r["features_learned"] > r["neurons"]:
            f = study["features"][r["label"]]
            dims += [d for d, n in zip(f["dimensionality"], f["norm"]) if n > REPRESENTED]
    if len(dims) < 10:
        return result | {"holds": None, "evidence": f"{len(dims)} features in superposition"}
    lo, hi = min(dims), max(dims)
    covered = sum(max(0.0, min(hi, v + GEOMETRY_TOL) - max(lo, v - GEOMETRY_TOL)) for v in GEOMETRIC_FRACTIONS.values())
    null = min(1.0, covered / (hi - lo)) if hi > lo else 1.0
    near = {name: sum(abs(d - v) <= GEOMETRY_TOL for d in dims) for name, v in GEOMETRIC_FRACTIONS.items()}
    k = sum(any(abs(d - v) <= GEOMETRY_TOL for v in GEOMETRIC_FRACTIONS.values()) for d in dims)
    share = k / len(dims)
    p = float(stats.binomtest(k, len(dims), null, alternative="greater").pvalue) if null < 1 else 1.0
    return result | {"holds": bool(share >= 2 * null and p < 0.01),
                     "evidence": f"{k}/{len(dims)} features at a fraction ({share:.3f}) vs null {null:.3f} "
                                 f"(D_i in [{lo:.3f}, {hi:.3f}]), binomial p = {p:.2g}; per fraction "
                                 + ", ".join(f"{n}: {c}" for n, c in near.items())}


@check
def sparsity_more_superposition(studies: Studies) -> dict:
    names = ["TMS1", "TMS2", "TMS3"]
    result = {"id": "sparsity_more_superposition", "studies": names,
              "claim": "Sparser inputs put more features in superposition (TMS).",
              "criterion": "per study, over every model: Spearman correlation between sparsity S and the features "
                           "learned ‖W‖²_F > 0 with p < 0.01, and likewise for the mean superposition Σ_{j≠i}(Ŵ_i·W_j)² "
                           "of the represented features"}

    def judge(name, study):
        rows = [r for r in _instances(study) if _num(r.get("features_learned"))]
        parts, ok = [], True
        for metric in ("features_learned", "mean_superposition"):
            pts = [(1 - r["density"], r[metric]) for r in rows if _num(r.get(metric))]
            if len({x for x, _ in pts}) < 2:
                return None, "fewer than two densities"
            ys = [y for _, y in pts]
            rho, p = stats.spearmanr([x for x, _ in pts], ys) if len(set(ys)) > 1 else (float("nan"), 1.0)
            ok &= bool(rho > 0 and p < 0.01)
            parts.append(f"{metric} ρ = {rho:.2f} (p = {p:.2g})")
        return ok, ", ".join(parts) + f" over {len(rows)} models"
    return _each(result, studies, names, judge)


@check
def gain_within_bounds(studies: Studies) -> dict:
    result = {"id": "gain_within_bounds", "studies": ["BOUNDS"],
              "claim": "The trained power models' gain L̃ = pnμ₂ − L stays within the bounds' order curves "
                       "(Basu Roy Chowdhury & Weiner 2026, Theorem 2.2).",
              "criterion": f"per hidden size d, with one constant C fitted at the smallest density (where both "
                           f"curves equal p·d^k): every density's mean gain lies in [C·min(pd^k, dp^(1/k)) / "
                           f"{BOUND_FACTOR:g}, {BOUND_FACTOR:g}·C·min(pd^k, d)] (the factor allows the theorem's "
                           f"different unknown constants)"}
    if (miss := _missing(result, studies, ["BOUNDS"])) is not None:
        return miss
    parts, ok = [], True
    for d, pts in gain_by_width(_instances(studies["BOUNDS"])).items():
        p0, g0, ref0 = pts[0]
        c = g0 / ref0["gain_order_upper"]
        ratios = [(p, g / (c * ref["gain_order_upper"]), g / (c * ref["gain_order_lower"])) for p, g, ref in pts]
        inside = [lo_ratio >= 1 / BOUND_FACTOR and up_ratio <= BOUND_FACTOR for _, up_ratio, lo_ratio in ratios]
        ok &= all(inside)
        parts.append(f"d = {d}: C = {c:.3g}; gain / (C·upper) from {min(r[1] for r in ratios):.2f} to "
                     f"{max(r[1] for r in ratios):.2f}, gain / (C·lower) from {min(r[2] for r in ratios):.2f} to "
                     f"{max(r[2] for r in ratios):.2f}; {sum(inside)}/{len(inside)} densities inside")
    if not parts:
        return result | {"holds": None, "evidence": "no trained power model"}
    return result | {"holds": ok, "evidence": "; ".join(parts)}


@check
def gain_slopes(studies: Studies) -> dict:

    result = {"id": "gain_slopes", "studies": ["BOUNDS"],
              "claim": "The gain follows the predicted log–log slopes in p: 1 below p = d^−k, 1/k above.",
              "criterion": f"per hidden size d, least-squares slope of log mean gain on log p: within ±{SLOPE_TOL} "
                           f"of 1 over the densities <= d^−k, and within ±{SLOPE_TOL} of 1/k over those >= d^−k "
                           f"(each needs two densities or more)"}
    if (miss := _missing(result, studies, ["BOUNDS"])) is not None:
        return miss
    parts, verdicts = [], []
    for d, pts in gain_by_width(_instances(studies["BOUNDS"])).items():
        k = pts[0][2].get("power", 3)
        cross = crossovers(d, k)[0]
        below = [(p, g) for p, g, _ in pts if p <= cross * (1 + 1e-9)]
        above = [(p, g) for p, g, _ in pts if p >= cross * (1 - 1e-9)]
        s_below = loglog_slope(*zip(*below)) if len(below) >= 2 else float("nan")
        s_above = loglog_slope(*zip(*above)) if len(above) >= 2 else float("nan")
        if s_below != s_below or s_above != s_above:
            verdicts.append(None)
        else:
            verdicts.append(abs(s_below - 1) <= SLOPE_TOL and abs(s_above - 1 / k) <= SLOPE_TOL)
        parts.append(f"d = {d} (d^-k = {cross:.3g}): slope {s_below:.2f} over {len(below)} densities below, "
                     f"{s_above:.2f} over {len(above)} above (1/k = {1 / k:.2f})")
    judged = [v for v in verdicts if v is not None]
    if not judged:
        return result | {"holds": None, "evidence": "; ".join(parts) or "no trained power model"}
    return result | {"holds": all(judged), "evidence": "; ".join(parts)}


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
