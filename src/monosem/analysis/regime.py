"""Where the bias trick works: its effect per calibration cell, and the quantities that can predict it.

A calibration study trains, at each (steps, batch) cell of one model size, the plain model (bias offset 0, no
decay) and the trick (offset −1, decay d) at several decay strengths, on the same seeds. A cell's effect is
Δ = #mono/#features(trick) − #mono/#features(plain), paired by seed, with a bootstrap 95% interval over the
seeds, and the loss cost is the median loss ratio trick/plain.

The quantities a shrunken schedule can change (Jermyn et al. train 2^17 steps of batch 2^13 with decay 0.03):
  d          the decay's strength per step against LAMB's: the bias shrinks by d·lr per step while LAMB moves it
             by about lr·‖b‖ (its trust ratio), so d is the per-step ratio (paper: 0.03)
  E          e-folds of decay over the first half, d·lr·S/2 (paper, LR3: 2 to 59)
  R          the steps after the decay ends, in units of 1/lr: lr·S/2 (paper at lr 0.01: 655)
  B          the batch (gradient noise), and the model size (N, m, k at fixed ratios)
"""

from __future__ import annotations

import statistics

from monosem.analysis.stats import bootstrap_ci


def _value(row: dict, key: str, default: float) -> float:
    v = row.get(f"sweep.train.{key}")
    return default if v in (None, "") else float(v)


def cells(rows: list[dict], lr: float, steps: int, batch: int, size: str) -> list[dict]:
    """One dict per (steps, batch, decay) cell of a calibration study's instance rows: Δ, its interval, the
    loss ratio and the predictors. Rows need `seed`, `mono_per_feature`, `loss`, `diverged_at` and the swept
    `sweep.train.*` values (steps and batch default to the study's)."""
    by_cell: dict[tuple, dict[float, dict[int, dict]]] = {}
    for r in rows:
        if r.get("diverged_at") not in (None, ""):
            continue
        S, B = int(_value(r, "steps", steps)), int(_value(r, "batch_size", batch))
        d = _value(r, "bias_decay", 0.0) if _value(r, "bias_offset", 0.0) != 0 else 0.0
        by_cell.setdefault((S, B), {}).setdefault(d, {})[int(r["seed"])] = r
    out = []
    for (S, B), arms in sorted(by_cell.items()):
        plain = arms.get(0.0, {})
        for d, trick in sorted(arms.items()):
            if d == 0.0:
                continue
            seeds = sorted(plain.keys() & trick.keys())
            deltas = [float(trick[s]["mono_per_feature"]) - float(plain[s]["mono_per_feature"]) for s in seeds]
            ratios = [float(trick[s]["loss"]) / float(plain[s]["loss"]) for s in seeds]
            if not deltas:
                continue
            lo, hi = bootstrap_ci(deltas)
            out.append({"size": size, "steps": S, "batch": B, "seeds": len(seeds),
                        "mono_trick": statistics.fmean(float(trick[s]["mono_per_feature"]) for s in seeds),
                        "mono_plain": statistics.fmean(float(plain[s]["mono_per_feature"]) for s in seeds),
                        "delta": statistics.fmean(deltas), "delta_lo": lo, "delta_hi": hi,
                        "loss_ratio": statistics.median(ratios),
                        "E": d * lr * S / 2, "R": lr * S / 2, "d": d})
    return out
