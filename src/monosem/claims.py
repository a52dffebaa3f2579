"""The paper's claims, each judged on all seeds by a criterion fixed before looking at the results.

Each check takes the measured studies (`results/<study>/measured.json` contents, by study name) and returns
{id, claim, criterion, holds, verdict, effect, ci95, evidence}. The paper's Table 1 claims are judged on an
effect size and its bootstrap 95% interval (`monosem.stats`): the verdict is "holds" when the whole interval
meets the criterion, "does not hold" when none of it does, "inconclusive" when it straddles the criterion,
so float differences between machines of the size of seed noise cannot flip a verdict. A compound claim (several
parts, or several studies) holds when every part holds; `effect` and `ci95` are then dicts by "<study>.<part>".
The other claims keep their tests' p-values or fixed rules: their verdict follows `holds`, `effect` is the
number the criterion reads (null where there is none) and `ci95` is null. `holds` is True / False / None (not
run or inconclusive) for consumers that predate the three-way verdict.
"""

from __future__ import annotations

import math
import statistics
from typing import Callable

import numpy as np
from scipy import stats

from .stats import (FAILS, HOLDS, NOT_RUN, UNSURE, bootstrap_ci, combine, mean_gap, median, slope, spearman,
                    spread_of_means, verdict, within)
from .theory import crossovers, gain_by_width, loglog_slope

Studies = dict[str, dict]
CHECKS: list[Callable[[Studies], dict]] = []
Part = tuple[str, float, tuple[float, float], str]  # name, effect, 95% interval, verdict
AS_HOLDS = {HOLDS: True, FAILS: False, UNSURE: None, NOT_RUN: None}


def check(fn):
    CHECKS.append(fn)
    return fn


def with_verdict(claim: dict) -> dict:
    """A claim judged by `holds` alone, with the three-way fields added (None there means not run)."""
    return {"effect": None, "ci95": None} | claim | {
        "verdict": claim.get("verdict") or {True: HOLDS, False: FAILS, None: NOT_RUN}[claim["holds"]]}


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


def _each(result: dict, studies: Studies, names: list[str],
          judge: Callable[[str, dict], tuple[bool | None, str, dict]]) -> dict:
    """Judge every named study that was run; the claim holds if it holds in each of them (None if none ran
    or none had the data). `judge` gives (holds, evidence, effects by name)."""
    present = [n for n in names if n in studies]
    if not present:
        return result | {"holds": None, "evidence": f"studies not run: {', '.join(names)}"}
    verdicts, parts, effect = [], [], {}
    for name in present:
        holds, evidence, effects = judge(name, studies[name])
        verdicts.append(holds)
        parts.append(f"{name}: {evidence}")
        effect |= {f"{name}.{k}": v for k, v in effects.items()}
    judged = [v for v in verdicts if v is not None]
    return result | {"holds": all(judged) if judged else None, "evidence": ". ".join(parts), "effect": effect or None}


# --- the paper's Table 1: effect sizes with bootstrap intervals, three-way verdicts ---------------------------

def _ci(effect: float, ci: tuple[float, float], pct: bool = False) -> str:
    f = (lambda v: f"{v:.1%}") if pct else (lambda v: f"{v:.3f}")
    return f"{f(effect)} [{f(ci[0])}, {f(ci[1])}]"


def _part(name: str, effect: float, ci: tuple[float, float], judged: str, label: str | None = None,
          pct: bool = False) -> tuple[Part, str]:
    """A judged part and its evidence: "label effect [interval] (verdict)"."""
    return (name, effect, ci, judged), f"{label or name.replace('_', ' ')} {_ci(effect, ci, pct)} ({judged})"


def _three_way(result: dict, parts: list[Part], evidence: str, named: bool = True) -> dict:
    """Effect, interval, verdict and holds from judged parts (no parts: not run)."""
    if not parts:
        return result | {"effect": None, "ci95": None, "verdict": NOT_RUN, "holds": None, "evidence": evidence}
    judged = combine([p[3] for p in parts])
    if named:
        effect, ci95 = {p[0]: p[1] for p in parts}, {p[0]: list(p[2]) for p in parts}
    else:
        effect, ci95 = parts[0][1], list(parts[0][2])
    return result | {"effect": effect, "ci95": ci95, "verdict": judged, "holds": AS_HOLDS[judged], "evidence": evidence}


def _each3(result: dict, studies: Studies, names: list[str],
           judge: Callable[[str, dict], tuple[list[tuple[Part, str]], str]]) -> dict:
    """Judge every named study that was run and combine all their parts; `judge` gives the study's judged parts
    (none: the study has no data to judge, said in its evidence) and the rest of its evidence."""
    present = [n for n in names if n in studies]
    if not present:
        return _three_way(result, [], f"studies not run: {', '.join(names)}")
    parts, texts = [], []
    for name in present:
        judged, rest = judge(name, studies[name])
        parts += [(f"{name}.{p[0]}", *p[1:]) for p, _ in judged]
        texts.append(f"{name}: " + "; ".join([t for _, t in judged] + [rest]))
    return _three_way(result, parts, ". ".join(texts))


def _groups(rows: list[dict], key: str, metric: str) -> dict[float, list[float]]:
    """Values of `metric` by swept value of `key`, in increasing order of the swept value."""
    out: dict[float, list[float]] = {}
    for r in sorted(_swept(rows, key), key=lambda r: _sweep_value(r, key)):
        if _num(r.get(metric)):
            out.setdefault(_sweep_value(r, key), []).append(r[metric])
    return out


def _trend(study: dict, key: str, above: bool, label: str = "Spearman", metric: str = "mono_per_feature"
           ) -> list[tuple[Part, str]]:
    """Spearman correlation of a swept value with a metric over all instances, its interval over resampled
    instances, judged > 0 (`above`) or < 0; no part when the study does not sweep `key`."""
    rows = [r for r in _swept(_instances(study), key) if _num(r.get(metric))]
    x, y = [_sweep_value(r, key) for r in rows], [r[metric] for r in rows]
    if len(set(x)) < 2:
        return []
    ci = bootstrap_ci([x, y], spearman, vectorized=True)
    rho = float(spearman(np.array(x), np.array(y)))
    part, text = _part("rho", rho, ci, verdict(ci, 0.0, above), label)
    return [(part, f"{text} over {len(rows)} models")]


def _per_point(study: dict, metric: str = "mono_per_feature") -> str:
    return "; ".join(f"{pt} {_fmt(v)}" for pt, v in _by_point(study, metric).items())


@check
def same_loss_different_monosemanticity(studies: Studies) -> dict:
    result = {"id": "lr_same_loss_different_mono", "studies": ["LR1", "LR2"],
              "claim": "Different learning rates reach about the same loss with different monosemanticity "
                       "(LR1, LR2).",
              "criterion": "in each study: the spread of the LRs' mean eval losses (max−min)/min < 10%, and mean "
                           "#mono/#features at the highest LR minus at the lowest > 0; both as 95% intervals over "
                           "seeds resampled within each LR"}

    def judge(name, study):
        rows = _instances(study)
        loss, mono = _groups(rows, "train.lr", "loss"), _groups(rows, "train.lr", "mono_per_feature")
        if len(loss) < 2 or len(mono) < 2:
            return [], "fewer than two learning rates"
        spread_ci = bootstrap_ci(list(loss.values()), spread_of_means, paired=False, vectorized=True)
        spread = float(spread_of_means(*map(np.array, loss.values())))
        low, high = mono[min(mono)], mono[max(mono)]
        gap_ci = bootstrap_ci([low, high], mean_gap, paired=False, vectorized=True)
        parts = [_part("loss_spread", spread, spread_ci, verdict(spread_ci, 0.10, above=False), pct=True),
                 _part("mono_change", float(mean_gap(np.array(low), np.array(high))), gap_ci, verdict(gap_ci, 0.0))]
        return parts, "; ".join(f"lr {lr:g}: loss {_fmt(loss[lr])}, mono/feat {_fmt(mono.get(lr, []))}" for lr in loss)

    return _each3(result, studies, ["LR1", "LR2"], judge)


@check
def bias_trick_more_monosemantic(studies: Studies) -> dict:
    result = {"id": "bias_trick_more_mono_no_loss_cost", "studies": ["LR1", "LR3", "LR2", "LR4"],
              "claim": "A negative bias offset with bias decay gives more monosemantic models at no loss cost "
                       "(LR3 vs LR1, LR4 vs LR2).",
              "criterion": "for each pair of studies, instances paired by (lr, seed), 95% intervals over resampled "
                           "pairs: mean Δ #mono/#features (trick − plain) > 0, and median loss ratio trick/plain "
                           "< 1.05"}
    pairs_of = {"LR3": "LR1", "LR4": "LR2"}

    def judge(name, study):
        if pairs_of[name] not in studies:
            return [], f"{pairs_of[name]} not run"
        plain = {r["label"]: r for r in _instances(studies[pairs_of[name]])}
        trick = {r["label"]: r for r in _instances(study)}
        pairs = [(plain[k], trick[k]) for k in sorted(plain.keys() & trick.keys())]
        if len(pairs) < 2:
            return [], "fewer than 2 (lr, seed) pairs in common"
        gain = [t["mono_per_feature"] - b["mono_per_feature"] for b, t in pairs]
        ratio = [t["loss"] / b["loss"] for b, t in pairs]
        gain_ci, ratio_ci = bootstrap_ci(gain), bootstrap_ci(ratio, median, vectorized=True)
        parts = [_part("mono_gain", statistics.fmean(gain), gain_ci, verdict(gain_ci, 0.0)),
                 _part("loss_ratio", statistics.median(ratio), ratio_ci, verdict(ratio_ci, 1.05, above=False))]
        plain_mono, trick_mono = [b["mono_per_feature"] for b, _ in pairs], [t["mono_per_feature"] for _, t in pairs]
        return parts, f"{len(pairs)} pairs; mono/feat {pairs_of[name]} {_fmt(plain_mono)} vs {name} {_fmt(trick_mono)}"

    return _each3(result, studies, ["LR3", "LR4"], judge)


@check
def mono_neurons_negative_bias(studies: Studies) -> dict:
    result = {"id": "mono_negative_bias", "studies": ["LR3", "LR4"],
              "claim": "Monosemantic neurons have moderately negative biases; the remaining polysemantic ones "
                       "small positive ones (LR3, LR4).",
              "criterion": "in each study, over the instances with both classes (95% intervals over resampled "
                           "instances): mean mono bias < 0, mean (mono − poly bias) < 0, and mean poly bias > 0"}

    def judge(name, study):
        both = [r for r in _instances(study) if r["n_mono"] > 0 and r["n_poly"] > 0]
        if not both:
            return [], "no instance has both monosemantic and polysemantic neurons"
        mono, poly = [r["bias_mean_mono"] for r in both], [r["bias_mean_poly"] for r in both]
        gap = [a - b for a, b in zip(mono, poly)]
        parts = []
        for part, xs, above in (("mono_bias", mono, False), ("mono_minus_poly", gap, False), ("poly_bias", poly, True)):
            ci = bootstrap_ci(xs)
            parts.append(_part(part, statistics.fmean(xs), ci, verdict(ci, 0.0, above)))
        return parts, f"{len(both)} instances with both classes; mean bias mono {_fmt(mono)}, poly {_fmt(poly)}"

    return _each3(result, studies, ["LR3", "LR4"], judge)


@check
def width_raises_monosemanticity(studies: Studies) -> dict:
    result = {"id": "width_raises_mono", "studies": ["K0", "K1", "K2"],
              "claim": "Monosemanticity rises with width, approaching one monosemantic neuron per feature for "
                       "k >= N with the bias trick (K0-K2).",
              "criterion": "in each study: Spearman ρ of k with #mono/#features > 0 (95% interval over resampled "
                           "models; ρ = 0 when #mono/#features never changes); and in K1 (uniform, bias trick) mean "
                           "#mono/#features > 0.75 at its largest k, which must be >= N (interval over its seeds)"}

    def judge(name, study):
        parts = _trend(study, "model.neurons", above=True)
        if not parts:
            return [], "does not sweep model.neurons"
        if name == "K1":
            rows = _swept(_instances(study), "model.neurons")
            widest = max(_sweep_value(r, "model.neurons") for r in rows)
            top = [r["mono_per_feature"] for r in rows if _sweep_value(r, "model.neurons") == widest]
            ci = bootstrap_ci(top)
            short = widest < study["n_features"]  # the study cannot show the claim's k >= N part
            judged = UNSURE if short else verdict(ci, 0.75)
            label = f"at k = {widest:g}{' < N' * short}:"
            parts.append(_part("top", statistics.fmean(top), ci, judged, label))
        return parts, f"mono/feat {_per_point(study)}"

    return _each3(result, studies, ["K0", "K1", "K2"], judge)


@check
def density_lowers_monosemanticity(studies: Studies) -> dict:
    names = ["E1", "E2", "E3", "E4"]
    result = {"id": "density_lowers_mono", "studies": names,
              "claim": "Monosemanticity falls as the feature density ε rises (E1-E4).",
              "criterion": "in each study: Spearman ρ of ε with #mono/#features < 0 (95% interval over resampled "
                           "models; ρ = 0 when #mono/#features never changes)"}

    def judge(name, study):
        parts = _trend(study, "data.eps", above=False)
        return parts, f"mono/feat {_per_point(study)}" if parts else "does not sweep data.eps"

    return _each3(result, studies, names, judge)


@check
def bias_scales_as_sqrt_density(studies: Studies) -> dict:
    names = ["E1", "E2", "E3", "E4"]
    result = {"id": "bias_scales_sqrt_eps", "studies": names,
              "claim": "The learned negative bias scales about as √ε (E1-E4).",
              "criterion": "over all instances of the E studies whose live neurons have a negative mean bias: the "
                           "least-squares slope of log(-bias) on log ε, 95% interval over resampled instances, lies "
                           "in [0.25, 0.75] (√ε gives 0.5; wholly outside: does not hold)"}
    rows = [r for n in names if n in studies for r in _swept(_instances(studies[n]), "data.eps")
            if _num(r.get("bias_mean_live")) and r["bias_mean_live"] < 0]
    if len({_sweep_value(r, "data.eps") for r in rows}) < 2:
        return _three_way(result, [], "fewer than two densities with negative biases")
    x = [math.log(_sweep_value(r, "data.eps")) for r in rows]
    y = [math.log(-r["bias_mean_live"]) for r in rows]
    ci = bootstrap_ci([x, y], slope, vectorized=True)
    part, text = _part("slope", float(slope(np.array(x), np.array(y))), ci, within(ci, 0.25, 0.75))
    per = "; ".join(f"{n}: " + _per_point(studies[n], "bias_mean_live") for n in names if n in studies)
    with np.errstate(all="ignore"):  # a constant bias has no correlation: r = nan
        r = np.corrcoef(x, y)[0, 1]
    return _three_way(result, [part], f"{text} over {len(rows)} models (r = {r:.2f}); "
                                      f"live-neuron bias {per}", named=False)


@check
def l1_raises_monosemanticity(studies: Studies) -> dict:
    result = {"id": "l1_raises_mono", "studies": ["RG1"],
              "claim": "Moderate L1 on the hidden activations raises monosemanticity (RG1).",
              "criterion": "the best L1 strength's gain in mean #mono/#features over L1 = 0 > 0: the gain of each "
                           "strength gets a (1 − 0.05/#strengths) interval over seeds resampled within each strength "
                           "(Bonferroni, so all hold together at 95%) and the best gain's 95% interval runs from the "
                           "largest lower to the largest upper bound"}
    if (miss := _missing(result, studies, ["RG1"])) is not None:
        return _three_way(miss, [], miss["evidence"], named=False)
    groups = _groups(_instances(studies["RG1"]), "train.l1", "mono_per_feature")
    control = groups.pop(0.0, [])
    if len(control) < 2 or not groups:
        return _three_way(result, [], "needs L1 = 0 and another strength, each with 2+ seeds", named=False)
    gains = {lv: float(mean_gap(np.array(control), np.array(v))) for lv, v in groups.items()}
    cis = {lv: bootstrap_ci([control, v], mean_gap, paired=False, level=1 - 0.05 / len(groups), vectorized=True)
           for lv, v in groups.items()}
    ci = (max(c[0] for c in cis.values()), max(c[1] for c in cis.values()))
    best = max(gains, key=gains.get)
    part, text = _part("best_gain", gains[best], ci, verdict(ci, 0.0), f"best gain (L1 {best:g})")
    per = "; ".join(f"L1 {lv:g}: {_fmt(groups[lv])}, gain {_ci(gains[lv], cis[lv])}" for lv in groups)
    return _three_way(result, [part], f"{text}; L1 0: {_fmt(control)}; {per} (each gain's interval at "
                                      f"{1 - 0.05 / len(groups):.1%})", named=False)


@check
def effects_hold_on_other_tasks(studies: Studies) -> dict:
    result = {"id": "other_tasks", "studies": ["RP1", "LR5", "D1"],
              "claim": "The effects hold for the re-projector and absolute-value tasks (RP1, LR5, D1).",
              "criterion": "Spearman ρ > 0 (95% interval over resampled models; ρ = 0 when #mono/#features never "
                           "changes) of #mono/#features with the learning rate in RP1 and LR5 (both with the bias "
                           "trick) and with the bias decay in D1"}

    def judge(name, study):
        key = "train.bias_decay" if name == "D1" else "train.lr"
        parts = _trend(study, key, above=True, label=f"Spearman with {key.split('.')[-1]}")
        return parts, f"mono/feat {_per_point(study)}" if parts else f"does not sweep {key}"

    return _each3(result, studies, ["RP1", "LR5", "D1"], judge)


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
    ok, parts, rhos = [], [], {}
    for name in present:
        rows = [r for r in _swept(_instances(studies[name]), "train.noise_std") if _num(r["bias_mean_live"])]
        sigma = [_sweep_value(r, "train.noise_std") for r in rows]
        bias = [r["bias_mean_live"] for r in rows]
        if len(set(sigma)) < 2:
            return result | {"holds": None, "evidence": f"{name}: fewer than two noise levels"}
        rho, p = stats.spearmanr(sigma, bias)
        slope = stats.linregress(sigma, bias).slope
        ok.append(bool(rho <= -0.5 and p < 0.05))
        rhos[f"{name}.rho"] = float(rho)
        per = _by_point(studies[name], "bias_mean_live")
        parts.append(f"{name}: Spearman {rho:.2f} (p = {p:.2g}), slope d(bias)/dσ {slope:.2f}; live bias "
                     + "; ".join(f"{pt} {_fmt(v)}" for pt, v in per.items()))
    return result | {"holds": all(ok), "evidence": ". ".join(parts), "effect": rhos}


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
    return result | {"holds": bool(p < 0.05), "effect": statistics.fmean(b - a for a, b in zip(mono, poly)),
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
    gain = statistics.fmean(t["mono_per_feature"] - c["mono_per_feature"] for c, t in pairs)
    return result | {"holds": bool(p < 0.05), "effect": gain,
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
            return None, "fewer than two densities", {}
        parts, ok, spans = [], True, {}
        for target in (1.0, 0.5):
            at = [r["density"] for r in best if abs(r["dims_per_feature"] - target) <= STICKY_TOL]
            span = max(at) / min(at) if at else 0.0
            ok &= span >= STICKY_SPAN
            spans[f"span_at_{target:g}"] = span
            parts.append(f"at {target:g}: {len(at)} densities, span ×{span:.2g}")
        curve = ", ".join(f"{1 / r['density']:.3g}: {r['dims_per_feature']:.3f}" for r in best)
        return ok, "; ".join(parts) + f" (1/(1−S): D* = {curve})", spans
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
    return result | {"holds": bool(share >= 2 * null and p < 0.01), "effect": share / null,
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
        parts, ok, rhos = [], True, {}
        for metric in ("features_learned", "mean_superposition"):
            pts = [(1 - r["density"], r[metric]) for r in rows if _num(r.get(metric))]
            if len({x for x, _ in pts}) < 2:
                return None, "fewer than two densities", {}
            ys = [y for _, y in pts]
            rho, p = stats.spearmanr([x for x, _ in pts], ys) if len(set(ys)) > 1 else (float("nan"), 1.0)
            ok &= bool(rho > 0 and p < 0.01)
            rhos[f"{metric}.rho"] = float(rho)
            parts.append(f"{metric} ρ = {rho:.2f} (p = {p:.2g})")
        return ok, ", ".join(parts) + f" over {len(rows)} models", rhos
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
    return result | {"holds": ok, "evidence": "; ".join(parts) + " (no single effect size: each density's gain is "
                                                                "judged against its own bounds)"}


@check
def gain_slopes(studies: Studies) -> dict:

    result = {"id": "gain_slopes", "studies": ["BOUNDS"],
              "claim": "The gain follows the predicted log–log slopes in p: 1 below p = d^−k, 1/k above.",
              "criterion": f"per hidden size d, least-squares slope of log mean gain on log p: within ±{SLOPE_TOL} "
                           f"of 1 over the densities <= d^−k, and within ±{SLOPE_TOL} of 1/k over those >= d^−k "
                           f"(each needs two densities or more)"}
    if (miss := _missing(result, studies, ["BOUNDS"])) is not None:
        return miss
    parts, verdicts, slopes = [], [], {}
    for d, pts in gain_by_width(_instances(studies["BOUNDS"])).items():
        k = pts[0][2].get("power", 3)
        cross = crossovers(d, k)[0]
        below = [(p, g) for p, g, _ in pts if p <= cross * (1 + 1e-9)]
        above = [(p, g) for p, g, _ in pts if p >= cross * (1 - 1e-9)]
        s_below = loglog_slope(*zip(*below)) if len(below) >= 2 else float("nan")
        s_above = loglog_slope(*zip(*above)) if len(above) >= 2 else float("nan")
        slopes |= {f"d={d}.slope_below": s_below, f"d={d}.slope_above": s_above}
        if s_below != s_below or s_above != s_above:
            verdicts.append(None)
        else:
            verdicts.append(abs(s_below - 1) <= SLOPE_TOL and abs(s_above - 1 / k) <= SLOPE_TOL)
        parts.append(f"d = {d} (d^-k = {cross:.3g}): slope {s_below:.2f} over {len(below)} densities below, "
                     f"{s_above:.2f} over {len(above)} above (1/k = {1 / k:.2f})")
    judged = [v for v in verdicts if v is not None]
    if not judged:
        return result | {"holds": None, "evidence": "; ".join(parts) or "no trained power model"}
    return result | {"holds": all(judged), "evidence": "; ".join(parts), "effect": slopes}


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
    return result | {"holds": bool(ok(med)), "effect": med, "evidence": f"median {med:.3f} over {len(vals)} models "
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
    return result | {"holds": bool(m_r2 >= 0.9 and m_reg >= 0.5), "effect": {"r2": m_r2, "active_fraction": m_reg},
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
    return [with_verdict(fn(studies)) for fn in CHECKS] + [with_verdict(fn(interp or {})) for fn in MECHANISM]
