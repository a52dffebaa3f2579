"""Superposition geometry and the loss bounds, on the tied models: Elhage et al. 2022 (*Toy Models of
Superposition*: dimensions per feature, feature dimensionalities, sparsity and superposition) and Basu Roy
Chowdhury & Weiner 2026 (Theorem 2.2: the gain's order curves and log-log slopes in p). These claims keep their
tests' p-values or fixed rules: their verdict follows `holds`, `effect` is the number the criterion reads.
"""

from __future__ import annotations

from typing import Callable

from scipy import stats

from monosem.analysis.theory import crossovers, gain_by_width, loglog_slope
from monosem.claims.common import Studies, claim, instances, missing, num

GEOMETRY_TOL = 0.02  # |D_i − fraction| counted as "at" a fraction
STICKY_TOL, STICKY_SPAN = 0.05, 2.0
SLOPE_TOL, BOUND_FACTOR = 0.2, 2.0


def _best_per_point(study: dict) -> list[dict]:
    """The lowest-loss seed of each sweep point (TMS' best-of-K restarts), ordered by density, descending."""
    best: dict[str, dict] = {}
    for r in instances(study):
        if num(r.get("loss")) and (r["point"] not in best or r["loss"] < best[r["point"]]["loss"]):
            best[r["point"]] = r
    return sorted(best.values(), key=lambda r: (r.get("neurons", 0), -r["density"]))


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


@claim("tms")
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


@claim("tms")
def feature_dims_cluster(studies: Studies) -> dict:
    from monosem.analysis.superposition import GEOMETRIC_FRACTIONS, REPRESENTED

    result = {"id": "feature_dims_cluster", "studies": ["TMS2"],
              "claim": "Feature dimensionalities D_i cluster at the geometric fractions 1, 3/4, 2/3, 1/2, 2/5, 3/8.",
              "criterion": f"represented features (‖W_i‖ > {REPRESENTED}) of the lowest-loss seed of every density "
                           f"where the model holds more features than dimensions (‖W‖²_F > m): the share within "
                           f"±{GEOMETRY_TOL} of a fraction is >= 2× the share those windows cover of [min D_i, max D_i] "
                           f"(uniform null) and a one-sided binomial test against that null gives p < 0.01"}
    if (miss := missing(result, studies, ["TMS2"])) is not None:
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
    # null 0: the D_i's range meets no fraction's window, so none lies at one (k = 0): does not hold, no ratio
    p = float(stats.binomtest(k, len(dims), null, alternative="greater").pvalue) if 0 < null < 1 else 1.0
    return result | {"holds": bool(share >= 2 * null and p < 0.01), "effect": share / null if null else None,
                     "evidence": f"{k}/{len(dims)} features at a fraction ({share:.3f}) vs null {null:.3f} "
                                 f"(D_i in [{lo:.3f}, {hi:.3f}]), binomial p = {p:.2g}; per fraction "
                                 + ", ".join(f"{n}: {c}" for n, c in near.items())}


@claim("tms")
def sparsity_more_superposition(studies: Studies) -> dict:
    names = ["TMS1", "TMS2", "TMS3"]
    result = {"id": "sparsity_more_superposition", "studies": names,
              "claim": "Sparser inputs put more features in superposition (TMS).",
              "criterion": "per study, over every model: Spearman correlation between sparsity S and the features "
                           "learned ‖W‖²_F > 0 with p < 0.01, and likewise for the mean superposition Σ_{j≠i}(Ŵ_i·W_j)² "
                           "of the represented features"}

    def judge(name, study):
        rows = [r for r in instances(study) if num(r.get("features_learned"))]
        parts, ok, rhos = [], True, {}
        for metric in ("features_learned", "mean_superposition"):
            pts = [(1 - r["density"], r[metric]) for r in rows if num(r.get(metric))]
            if len({x for x, _ in pts}) < 2:
                return None, "fewer than two densities", {}
            ys = [y for _, y in pts]
            rho, p = stats.spearmanr([x for x, _ in pts], ys) if len(set(ys)) > 1 else (float("nan"), 1.0)
            ok &= bool(rho > 0 and p < 0.01)
            rhos[f"{metric}.rho"] = float(rho)
            parts.append(f"{metric} ρ = {rho:.2f} (p = {p:.2g})")
        return ok, ", ".join(parts) + f" over {len(rows)} models", rhos
    return _each(result, studies, names, judge)


@claim("tms")
def gain_within_bounds(studies: Studies) -> dict:
    result = {"id": "gain_within_bounds", "studies": ["BOUNDS"],
              "claim": "The trained power models' gain L̃ = pnμ₂ − L stays within the bounds' order curves "
                       "(Basu Roy Chowdhury & Weiner 2026, Theorem 2.2).",
              "criterion": f"per hidden size d, with one constant C fitted at the smallest density (where both "
                           f"curves equal p·d^k): every density's mean gain lies in [C·min(pd^k, dp^(1/k)) / "
                           f"{BOUND_FACTOR:g}, {BOUND_FACTOR:g}·C·min(pd^k, d)] (the factor allows the theorem's "
                           f"different unknown constants)"}
    if (miss := missing(result, studies, ["BOUNDS"])) is not None:
        return miss
    parts, ok = [], True
    for d, pts in gain_by_width(instances(studies["BOUNDS"])).items():
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


@claim("tms")
def gain_slopes(studies: Studies) -> dict:

    result = {"id": "gain_slopes", "studies": ["BOUNDS"],
              "claim": "The gain follows the predicted log–log slopes in p: 1 below p = d^−k, 1/k above.",
              "criterion": f"per hidden size d, least-squares slope of log mean gain on log p: within ±{SLOPE_TOL} "
                           f"of 1 over the densities <= d^−k, and within ±{SLOPE_TOL} of 1/k over those >= d^−k "
                           f"(each needs two densities or more)"}
    if (miss := missing(result, studies, ["BOUNDS"])) is not None:
        return miss
    parts, verdicts, slopes = [], [], {}
    for d, pts in gain_by_width(instances(studies["BOUNDS"])).items():
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

