"""The Gated SAE paper's claims (Rajamanoharan et al. 2024a), judged on each SAE study that trains both the
paper-mode Gated SAE ("gated") and the ReLU-L1 baseline ("relu"): less shrinkage, half the L0 at equal fidelity,
a Pareto improvement. Criteria written before the pipeline first ran them, on a grid of L0 values inside both
sweeps (GRID points, log-spaced). The claims are about those two architectures, so they name them.
"""

from __future__ import annotations

import math
import statistics

import numpy as np

from monosem.analysis.sae_eval import at_l0, by_architecture
from monosem.claims.common import claim, with_verdict

GRID = 8
SHRINK_RATIO = 0.5  # Gated's |1 − γ| at most half the baseline's ("shrinkage is solved")
L0_RATIO = 0.6  # "about half as many firing features for comparable reconstruction fidelity": ≤ 0.6
EV_SLACK = 0.01  # a Pareto improvement: nowhere worse than this, better on average


def _grid(a: list[tuple], b: list[tuple]) -> list[float]:
    if not (a and b):
        return []
    lo, hi = max(a[0][0], b[0][0]), min(a[-1][0], b[-1][0])
    if lo >= hi:
        return []
    return [float(v) for v in np.geomspace(lo, hi, GRID)]


def _l0_at(points: list[tuple], value: float) -> float:
    """L0 at which a sweep reaches `value` of a metric increasing with L0 (log-linear), NaN outside."""
    pts = sorted((p[1], math.log(p[0])) for p in points if p[0] > 0)
    if not pts or not pts[0][0] <= value <= pts[-1][0]:
        return float("nan")
    xs, ys = zip(*pts)
    return math.exp(float(np.interp(value, xs, ys)))


@claim("gated")
def gated_saes(saes: dict[str, dict]) -> list[dict]:
    """Every SAE study's three claims ({name: its measured.json})."""
    return [c for name, measured in saes.items() for c in gated_claims(name, list(measured["saes"].values()))]


def gated_claims(name: str, rows: list[dict]) -> list[dict]:
    """One SAE study's three claims, from its SAEs' measured rows."""
    archs = {r["architecture"] for r in rows}
    base = {"studies": [name]}
    claims = [
        base | {"id": f"gated_less_shrinkage@{name}",
                "claim": "Gated SAEs remove shrinkage: their relative reconstruction bias γ is near 1 where ReLU-L1's "
                         "is below it.",
                "criterion": f"on {GRID} L0 values inside both sweeps (seed means, log-linear in L0): the median of "
                             f"|1 − γ_gated| / |1 − γ_relu| <= {SHRINK_RATIO}"},
        base | {"id": f"gated_half_l0@{name}",
                "claim": "Gated SAEs need about half the L0 of ReLU-L1 for the same reconstruction fidelity.",
                "criterion": f"on {GRID} explained-variance levels inside both sweeps: the median of L0_gated / L0_relu "
                             f"<= {L0_RATIO}"},
        base | {"id": f"gated_pareto@{name}",
                "claim": "Gated SAEs are a Pareto improvement over ReLU-L1 (explained variance at equal L0).",
                "criterion": f"on {GRID} L0 values inside both sweeps: EV_gated − EV_relu > 0 on average and "
                             f">= −{EV_SLACK} everywhere"},
    ]
    if not {"relu", "gated"} <= archs:
        return [with_verdict(c | {"holds": None, "evidence": "needs both relu and gated SAEs"}) for c in claims]
    ev, gamma = by_architecture(rows, "explained_variance"), by_architecture(rows, "shrinkage_gamma")
    grid = _grid(ev["relu"], ev["gated"])
    if not grid:
        return [with_verdict(c | {"holds": None, "evidence": "the two sweeps do not overlap in L0"}) for c in claims]
    span = f"L0 {grid[0]:.3g}–{grid[-1]:.3g}"

    g_r = [at_l0(gamma["relu"], t) for t in grid]
    g_g = [at_l0(gamma["gated"], t) for t in grid]
    ratios = [abs(1 - g) / abs(1 - r) for g, r in zip(g_g, g_r) if abs(1 - r) > 0]
    shrink = statistics.median(ratios)
    claims[0] |= {"holds": bool(shrink <= SHRINK_RATIO), "effect": shrink,
                  "evidence": f"median ratio {shrink:.2f} over {span}; γ relu {min(g_r):.3f}–{max(g_r):.3f}, "
                              f"gated {min(g_g):.3f}–{max(g_g):.3f}"}

    lo = max(min(p[1] for p in ev["relu"]), min(p[1] for p in ev["gated"]))
    hi = min(max(p[1] for p in ev["relu"]), max(p[1] for p in ev["gated"]))
    if lo < hi:
        levels = np.linspace(lo, hi, GRID)
        l0r = [_l0_at(ev["relu"], v) for v in levels]
        l0g = [_l0_at(ev["gated"], v) for v in levels]
        half = statistics.median(g / r for g, r in zip(l0g, l0r))
        claims[1] |= {"holds": bool(half <= L0_RATIO), "effect": half,
                      "evidence": f"median L0 ratio {half:.2f} over EV {lo:.3f}–{hi:.3f} (relu L0 "
                                  f"{min(l0r):.2f}–{max(l0r):.2f}, gated {min(l0g):.2f}–{max(l0g):.2f})"}
    else:
        claims[1] |= {"holds": None, "evidence": "the two sweeps do not overlap in explained variance"}

    diff = [at_l0(ev["gated"], t) - at_l0(ev["relu"], t) for t in grid]
    mean = statistics.fmean(diff)
    claims[2] |= {"holds": bool(mean > 0 and min(diff) >= -EV_SLACK), "effect": mean,
                  "evidence": f"EV_gated − EV_relu over {span}: mean {mean:+.4f}, min {min(diff):+.4f}, "
                              f"max {max(diff):+.4f}"}
    return [with_verdict(c) for c in claims]
