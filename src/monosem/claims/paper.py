"""The paper's Table 1 claims (Jermyn, Schiefer & Hubinger 2022, *Engineering Monosemanticity in Toy Models*),
judged on effect sizes with bootstrap intervals and three-way verdicts.

Each claim is judged on an effect size and its bootstrap 95% interval (`monosem.analysis.stats`): the verdict is "holds"
when the whole interval meets the criterion, "does not hold" when none of it does, "inconclusive" when it straddles
the criterion, so float differences between machines of the size of seed noise cannot flip a verdict. A compound
claim (several parts, or several studies) holds when every part holds; `effect` and `ci95` are then dicts by
"<study>.<part>".
"""

from __future__ import annotations

import math
import statistics
from typing import Callable

import numpy as np

from monosem.analysis.stats import (
    NOT_RUN,
    UNSURE,
    bootstrap_ci,
    combine,
    mean_gap,
    median,
    slope,
    spearman,
    spread_of_means,
    verdict,
    within,
)
from monosem.claims.common import AS_HOLDS, Studies, by_point, claim, fmt, instances, missing, num, sweep_value, swept

Part = tuple[str, float, tuple[float, float], str, "Target"]  # name, effect, 95% interval, verdict, target
Target = tuple[float | None, float | None]  # the effects that meet the criterion: (low, high), None unbounded


def _ci(effect: float, ci: tuple[float, float], pct: bool = False) -> str:
    f = (lambda v: f"{v:.1%}") if pct else (lambda v: f"{v:.3f}")
    return f"{f(effect)} [{f(ci[0])}, {f(ci[1])}]"


def _part(name: str, effect: float, ci: tuple[float, float], target: Target, label: str | None = None,
          pct: bool = False, judged: str | None = None) -> tuple[Part, str]:
    """A part judged against its target (an effect above `low`, below `high`, or between), unless `judged` says
    otherwise; and its evidence: "label effect [interval] (verdict)"."""
    low, high = target
    if judged is None:
        judged = within(ci, low, high) if low is not None and high is not None else (
            verdict(ci, low) if low is not None else verdict(ci, high, above=False))
    return (name, effect, ci, judged, target), f"{label or name.replace('_', ' ')} {_ci(effect, ci, pct)} ({judged})"


def _side(above: bool, threshold: float = 0.0) -> Target:
    return (threshold, None) if above else (None, threshold)


def _three_way(result: dict, parts: list[Part], evidence: str, named: bool = True) -> dict:
    """Effect, interval, target (the effects that meet the criterion: [low, high], null unbounded), verdict and
    holds from judged parts (no parts: not run)."""
    if not parts:
        return result | {"effect": None, "ci95": None, "target": None, "verdict": NOT_RUN, "holds": None,
                         "evidence": evidence}
    judged = combine([p[3] for p in parts])
    if named:
        effect, ci95 = {p[0]: p[1] for p in parts}, {p[0]: list(p[2]) for p in parts}
        target = {p[0]: list(p[4]) for p in parts}
    else:
        effect, ci95, target = parts[0][1], list(parts[0][2]), list(parts[0][4])
    return result | {"effect": effect, "ci95": ci95, "target": target, "verdict": judged, "holds": AS_HOLDS[judged],
                     "evidence": evidence}


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
    for r in sorted(swept(rows, key), key=lambda r: sweep_value(r, key)):
        if num(r.get(metric)):
            out.setdefault(sweep_value(r, key), []).append(r[metric])
    return out


def _trend(study: dict, key: str, above: bool, label: str = "Spearman", metric: str = "mono_per_feature"
           ) -> list[tuple[Part, str]]:
    """Spearman correlation of a swept value with a metric over all instances, its interval over resampled
    instances, judged > 0 (`above`) or < 0; no part when the study does not sweep `key`."""
    rows = [r for r in swept(instances(study), key) if num(r.get(metric))]
    x, y = [sweep_value(r, key) for r in rows], [r[metric] for r in rows]
    if len(set(x)) < 2:
        return []
    ci = bootstrap_ci([x, y], spearman, vectorized=True)
    rho = float(spearman(np.array(x), np.array(y)))
    part, text = _part("rho", rho, ci, _side(above), label)
    return [(part, f"{text} over {len(rows)} models")]


def _per_point(study: dict, metric: str = "mono_per_feature") -> str:
    return "; ".join(f"{pt} {fmt(v)}" for pt, v in by_point(study, metric).items())


@claim("paper")
def same_loss_different_monosemanticity(studies: Studies) -> dict:
    result = {"id": "lr_same_loss_different_mono", "studies": ["LR1", "LR2"],
              "claim": "Different learning rates reach about the same loss with different monosemanticity "
                       "(LR1, LR2).",
              "criterion": "in each study: the spread of the LRs' mean eval losses (max−min)/min < 10%, and mean "
                           "#mono/#features at the highest LR minus at the lowest > 0; both as 95% intervals over "
                           "seeds resampled within each LR"}

    def judge(name, study):
        rows = instances(study)
        loss, mono = _groups(rows, "train.lr", "loss"), _groups(rows, "train.lr", "mono_per_feature")
        if len(loss) < 2 or len(mono) < 2:
            return [], "fewer than two learning rates"
        spread_ci = bootstrap_ci(list(loss.values()), spread_of_means, paired=False, vectorized=True)
        spread = float(spread_of_means(*map(np.array, loss.values())))
        low, high = mono[min(mono)], mono[max(mono)]
        gap_ci = bootstrap_ci([low, high], mean_gap, paired=False, vectorized=True)
        parts = [_part("loss_spread", spread, spread_ci, _side(False, 0.10), pct=True),
                 _part("mono_change", float(mean_gap(np.array(low), np.array(high))), gap_ci, _side(True))]
        return parts, "; ".join(f"lr {lr:g}: loss {fmt(loss[lr])}, mono/feat {fmt(mono.get(lr, []))}" for lr in loss)

    return _each3(result, studies, ["LR1", "LR2"], judge)


@claim("paper")
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
        plain = {r["label"]: r for r in instances(studies[pairs_of[name]])}
        trick = {r["label"]: r for r in instances(study)}
        pairs = [(plain[k], trick[k]) for k in sorted(plain.keys() & trick.keys())]
        if len(pairs) < 2:
            return [], "fewer than 2 (lr, seed) pairs in common"
        gain = [t["mono_per_feature"] - b["mono_per_feature"] for b, t in pairs]
        ratio = [t["loss"] / b["loss"] for b, t in pairs]
        gain_ci, ratio_ci = bootstrap_ci(gain), bootstrap_ci(ratio, median, vectorized=True)
        parts = [_part("mono_gain", statistics.fmean(gain), gain_ci, _side(True)),
                 _part("loss_ratio", statistics.median(ratio), ratio_ci, _side(False, 1.05))]
        plain_mono, trick_mono = [b["mono_per_feature"] for b, _ in pairs], [t["mono_per_feature"] for _, t in pairs]
        return parts, f"{len(pairs)} pairs; mono/feat {pairs_of[name]} {fmt(plain_mono)} vs {name} {fmt(trick_mono)}"

    return _each3(result, studies, ["LR3", "LR4"], judge)


@claim("paper")
def mono_neurons_negative_bias(studies: Studies) -> dict:
    result = {"id": "mono_negative_bias", "studies": ["LR3", "LR4"],
              "claim": "Monosemantic neurons have moderately negative biases; the remaining polysemantic ones "
                       "small positive ones (LR3, LR4).",
              "criterion": "in each study, over the instances with both classes (95% intervals over resampled "
                           "instances): mean mono bias < 0, mean (mono − poly bias) < 0, and mean poly bias > 0"}

    def judge(name, study):
        both = [r for r in instances(study) if r["n_mono"] > 0 and r["n_poly"] > 0]
        if not both:
            return [], "no instance has both monosemantic and polysemantic neurons"
        mono, poly = [r["bias_mean_mono"] for r in both], [r["bias_mean_poly"] for r in both]
        gap = [a - b for a, b in zip(mono, poly)]
        parts = []
        for part, xs, above in (("mono_bias", mono, False), ("mono_minus_poly", gap, False), ("poly_bias", poly, True)):
            ci = bootstrap_ci(xs)
            parts.append(_part(part, statistics.fmean(xs), ci, _side(above)))
        return parts, f"{len(both)} instances with both classes; mean bias mono {fmt(mono)}, poly {fmt(poly)}"

    return _each3(result, studies, ["LR3", "LR4"], judge)


@claim("paper")
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
            rows = swept(instances(study), "model.neurons")
            widest = max(sweep_value(r, "model.neurons") for r in rows)
            top = [r["mono_per_feature"] for r in rows if sweep_value(r, "model.neurons") == widest]
            ci = bootstrap_ci(top)
            short = widest < study["n_features"]  # the study cannot show the claim's k >= N part
            label = f"at k = {widest:g}{' < N' * short}:"
            parts.append(_part("top", statistics.fmean(top), ci, _side(True, 0.75), label, judged=UNSURE if short else None))
        return parts, f"mono/feat {_per_point(study)}"

    return _each3(result, studies, ["K0", "K1", "K2"], judge)


@claim("paper")
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


@claim("paper")
def bias_scales_as_sqrt_density(studies: Studies) -> dict:
    names = ["E1", "E2", "E3", "E4"]
    result = {"id": "bias_scales_sqrt_eps", "studies": names,
              "claim": "The learned negative bias scales about as √ε (E1-E4).",
              "criterion": "over all instances of the E studies whose live neurons have a negative mean bias: the "
                           "least-squares slope of log(-bias) on log ε, 95% interval over resampled instances, lies "
                           "in [0.25, 0.75] (√ε gives 0.5; wholly outside: does not hold)"}
    rows = [r for n in names if n in studies for r in swept(instances(studies[n]), "data.eps")
            if num(r.get("bias_mean_live")) and r["bias_mean_live"] < 0]
    if len({sweep_value(r, "data.eps") for r in rows}) < 2:
        return _three_way(result, [], "fewer than two densities with negative biases")
    x = [math.log(sweep_value(r, "data.eps")) for r in rows]
    y = [math.log(-r["bias_mean_live"]) for r in rows]
    ci = bootstrap_ci([x, y], slope, vectorized=True)
    part, text = _part("slope", float(slope(np.array(x), np.array(y))), ci, (0.25, 0.75))
    per = "; ".join(f"{n}: " + _per_point(studies[n], "bias_mean_live") for n in names if n in studies)
    with np.errstate(all="ignore"):  # a constant bias has no correlation: r = nan
        r = np.corrcoef(x, y)[0, 1]
    return _three_way(result, [part], f"{text} over {len(rows)} models (r = {r:.2f}); "
                                      f"live-neuron bias {per}", named=False)


@claim("paper")
def l1_raises_monosemanticity(studies: Studies) -> dict:
    result = {"id": "l1_raises_mono", "studies": ["RG1"],
              "claim": "Moderate L1 on the hidden activations raises monosemanticity (RG1).",
              "criterion": "the best L1 strength's gain in mean #mono/#features over L1 = 0 > 0: the gain of each "
                           "strength gets a (1 − 0.05/#strengths) interval over seeds resampled within each strength "
                           "(Bonferroni, so all hold together at 95%) and the best gain's 95% interval runs from the "
                           "largest lower to the largest upper bound"}
    if (miss := missing(result, studies, ["RG1"])) is not None:
        return _three_way(miss, [], miss["evidence"], named=False)
    groups = _groups(instances(studies["RG1"]), "train.l1", "mono_per_feature")
    control = groups.pop(0.0, [])
    if len(control) < 2 or not groups:
        return _three_way(result, [], "needs L1 = 0 and another strength, each with 2+ seeds", named=False)
    gains = {lv: float(mean_gap(np.array(control), np.array(v))) for lv, v in groups.items()}
    cis = {lv: bootstrap_ci([control, v], mean_gap, paired=False, level=1 - 0.05 / len(groups), vectorized=True)
           for lv, v in groups.items()}
    ci = (max(c[0] for c in cis.values()), max(c[1] for c in cis.values()))
    best = max(gains, key=gains.get)
    part, text = _part("best_gain", gains[best], ci, _side(True), f"best gain (L1 {best:g})")
    per = "; ".join(f"L1 {lv:g}: {fmt(groups[lv])}, gain {_ci(gains[lv], cis[lv])}" for lv in groups)
    return _three_way(result, [part], f"{text}; L1 0: {fmt(control)}; {per} (each gain's interval at "
                                      f"{1 - 0.05 / len(groups):.1%})", named=False)


@claim("paper")
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

