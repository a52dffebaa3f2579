"""Reference curves of the loss bounds for the power-activation autoencoder (Basu Roy Chowdhury & Weiner 2026,
arXiv:2606.18538, Theorem 2.2 and Eqs. 6–10 as transcribed in the brief; the paper body was not read).

Model: x = (ξ_i b_i)_i with ξ symmetric, b_i ~ Bernoulli(p); x̂ = (WᵀWx)^k elementwise, W ∈ R^{d×n}, odd k, tied,
no bias. L(W) = E‖x̂ − x‖² = p·n·μ₂ − L̃(W), L̃ the gain over outputting 0. For d > d₀ and n > d^k:
C₁·min(p·d^k, d·p^{1/k}) ≤ sup L̃ ≤ C₂·p·d^k, and ≤ C₃·d for strongly log-concave ξ (a Gaussian).
"""

from __future__ import annotations

import math
import statistics

from monosem.worlds import value_moment


def crossovers(d: int, k: int) -> tuple[float, float]:
    """Densities where the order curves change: p·d^k = d·p^{1/k} at p = d^−k, p·d^k = d at p = d^(1−k)."""
    return d ** -k, d ** (1 - k)


def gain_references(p: float, n: int, d: int, k: int, values: str) -> dict[str, float]:
    """Reference lines for the gain L̃ = p·n·μ₂ − L of the power model x̂ = (WᵀWx)^k (the bounds' Eqs. 6–10):
    the best linear model p·μ₂·min(d, n); the best unsuperposed (diagonal WᵀW) model p·d·μ_{k+1}²/μ_{2k};
    and the theorem's order curves min(p·d^k, d·p^{1/k}) (lower) and min(p·d^k, d) (upper), both up to
    unknown constants; and the total p·n·μ₂ (L̃ of a perfect reconstruction)."""
    mu2, mu_k1, mu_2k = (value_moment(values, j) for j in (2, k + 1, 2 * k))
    return {"total": p * n * mu2, "linear": p * mu2 * min(d, n), "unsuperposed": p * d * mu_k1 ** 2 / mu_2k,
            "order_lower": min(p * d ** k, d * p ** (1 / k)), "order_upper": min(p * d ** k, d)}


def gain_by_width(rows) -> dict[int, list[tuple[float, float, dict]]]:
    """Per hidden size d, in increasing density: (p, mean gain over seeds, one row's values) from measured rows
    (`measured.json` instances of a power study: `neurons`, `density`, `gain` and the `gain_*` references,
    which depend on p and d only). Rows without a finite gain (diverged) are left out."""
    out: dict[int, dict[float, list[dict]]] = {}
    for r in rows:
        g = r.get("gain")
        if g is not None and g == g:
            out.setdefault(r["neurons"], {}).setdefault(r["density"], []).append(r)
    return {d: [(p, statistics.fmean(x["gain"] for x in rs), rs[0]) for p, rs in sorted(by_p.items())]
            for d, by_p in sorted(out.items())}


def loglog_slope(p: list[float], gain: list[float]) -> float:
    """Least-squares slope of log gain against log p (NaN with fewer than two usable points)."""
    pts = [(math.log(a), math.log(b)) for a, b in zip(p, gain) if a > 0 and b > 0]
    if len({x for x, _ in pts}) < 2:
        return float("nan")
    mx, my = sum(x for x, _ in pts) / len(pts), sum(y for _, y in pts) / len(pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)
