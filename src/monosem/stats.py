"""Effect sizes with bootstrap intervals, and verdicts that say when the data cannot decide.

A verdict on "the effect is above (below) a criterion" is *holds* when the whole 95% interval is on that side,
*does not hold* when it is wholly on the other side, and *inconclusive* when the interval straddles it: two
machines whose float rounding differs by about one seed's noise then cannot give opposite verdicts.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

HOLDS, FAILS, UNSURE, NOT_RUN = "holds", "does not hold", "inconclusive", "not run"


def bootstrap_ci(samples: Sequence[Sequence[float]] | Sequence[float], stat: Callable[..., float] | None = None,
                 n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile 95% interval of `stat` (default: the mean) over resamples of `samples`.

    `samples` is one list of values, or several lists of equal length that are resampled together (paired
    rows, e.g. (x, y) for a correlation); `stat` then takes one array per list. Fixed seed: the interval of
    the same data is the same on every machine."""
    arrays = [np.asarray(s, dtype=float) for s in samples] if samples and np.ndim(samples[0]) else [
        np.asarray(samples, dtype=float)]
    size = len(arrays[0])
    if size < 2:
        return (math.nan, math.nan)
    idx = np.random.default_rng(seed).integers(0, size, size=(n, size))
    if stat is None:
        values = arrays[0][idx].mean(1)
    else:
        with np.errstate(all="ignore"):  # a resample of constant values has no correlation: NaN, dropped below
            values = np.array([stat(*(a[i] for a in arrays)) for i in idx], dtype=float)
    values = values[np.isfinite(values)]
    if len(values) < n / 2:  # most resamples undefined (e.g. a correlation of constant values)
        return (math.nan, math.nan)
    return float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))


def verdict(ci: tuple[float, float], threshold: float, above: bool = True) -> str:
    """Three-way verdict of effect > threshold (or < threshold with `above=False`) from its interval."""
    lo, hi = ci
    if math.isnan(lo) or math.isnan(hi):
        return UNSURE
    if above:
        return HOLDS if lo > threshold else FAILS if hi <= threshold else UNSURE
    return HOLDS if hi < threshold else FAILS if lo >= threshold else UNSURE


def combine(verdicts: Sequence[str]) -> str:
    """All parts must hold: one part failing fails the whole, otherwise any doubt leaves it inconclusive."""
    judged = [v for v in verdicts if v != NOT_RUN]
    if not judged:
        return NOT_RUN
    if FAILS in judged:
        return FAILS
    return HOLDS if all(v == HOLDS for v in judged) else UNSURE
