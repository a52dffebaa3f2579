"""The algorithm of the residual polysemantic neurons: the hypothesis drawn from the paper's description (Jermyn,
Schiefer & Hubinger 2022; the report's "residual polysemantic neurons" section), judged on the interpret stage's
summaries.

These take {study: {label: summary}} from results/<study>/interp/summary.json, over every study and seed.
"""

from __future__ import annotations

import statistics

from monosem.claims.common import claim


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


@claim("mechanism")
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


@claim("mechanism")
def poly_block_identity(interp: dict) -> dict:
    result = {"id": "poly_low_rank_identity", "studies": sorted(interp),
              "claim": "The polysemantic block's linear path W2·W1·P is a low-rank approximation of the identity.",
              "criterion": "median over models of cos(L_poly, target map) / sqrt(m/N) >= 0.5, where sqrt(m/N) is "
                           "the cosine of the best rank-m approximation of the identity"}
    return _median_claim(result, _pooled(interp, "identity_fit_poly", "n_poly"), lambda v: v >= 0.5,
                         "polysemantic neurons")


@claim("mechanism")
def mono_thresholded(interp: dict) -> dict:
    result = {"id": "mono_thresholded_per_feature", "studies": sorted(interp),
              "claim": "Monosemantic neurons add a thresholded per-feature term: off below an input amplitude "
                       "a* = -b/s in (0, 1), linear above.",
              "criterion": "median over models of the mean turn-on amplitude a* of their monosemantic neurons in "
                           "[0.05, 1)"}
    return _median_claim(result, _pooled(interp, "mono_threshold_mean", "n_mono"), lambda v: 0.05 <= v < 1,
                         "monosemantic neurons")

