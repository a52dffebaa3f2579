"""Effect sizes with bootstrap intervals, and verdicts that say when the data cannot decide.

A verdict on "the effect is above (below) a criterion" is *holds* when the whole 95% interval is on that side,
*does not hold* when it is wholly on the other side, and *inconclusive* when the interval straddles it: two
machines whose float rounding differs by about one seed's noise then cannot give opposite verdicts.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
from scipy.stats import rankdata

HOLDS, FAILS, UNSURE, NOT_RUN = "holds", "does not hold", "inconclusive", "not run"


def bootstrap_ci(samples: Sequence[Sequence[float]] | Sequence[float], stat: Callable[..., float] | None = None,
                 n: int = 2000, seed: int = 0, paired: bool = True, level: float = 0.95,
                 vectorized: bool = False) -> tuple[float, float]:
    """Percentile interval (95% unless `level` says otherwise) of `stat` (default: the mean) over resamples.

    `samples` is one list of values, or several lists that `stat` takes one array each of: resampled together
    row by row when `paired` (equal lengths, e.g. (x, y) for a correlation), each on its own otherwise (groups
    of different sizes, e.g. the seeds of each sweep point: a stratified bootstrap). Every list needs two
    values or more. A `vectorized` stat takes all resamples at once, one 2-D array (resample, value) per list,
    and gives one value per resample. Fixed seed: the interval of the same data is the same on every machine."""
    arrays = [np.asarray(s, dtype=float) for s in samples] if samples and np.ndim(samples[0]) else [
        np.asarray(samples, dtype=float)]
    if min(len(a) for a in arrays) < 2:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    if paired:
        idx = rng.integers(0, len(arrays[0]), size=(n, len(arrays[0])))
        draws = [a[idx] for a in arrays]
    else:
        draws = [a[rng.integers(0, len(a), size=(n, len(a)))] for a in arrays]
    with np.errstate(all="ignore"):  # a resample of constant values has no correlation: NaN, dropped below
        if stat is None:
            values = draws[0].mean(1)
        elif vectorized:
            values = np.asarray(stat(*draws), dtype=float)
        else:
            values = np.array([stat(*row) for row in zip(*draws)], dtype=float)
    values = values[np.isfinite(values)]
    if len(values) < n / 2:  # most resamples undefined (e.g. a correlation of constant values)
        return (math.nan, math.nan)
    tail = (1 - level) / 2
    return float(np.quantile(values, tail)), float(np.quantile(values, 1 - tail))


# Effect sizes, each of one sample (1-D arrays) or of every bootstrap resample at once (rows of 2-D arrays).

def spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's ρ (ties ranked by their mean rank); 0 where y is constant (no trend at all), NaN where x is."""
    rx, ry = rankdata(x, axis=-1), rankdata(y, axis=-1)
    rx, ry = rx - rx.mean(-1, keepdims=True), ry - ry.mean(-1, keepdims=True)
    with np.errstate(all="ignore"):
        rho = (rx * ry).sum(-1) / np.sqrt((rx * rx).sum(-1) * (ry * ry).sum(-1))
    rho = np.where(np.ptp(y, axis=-1) == 0, 0.0, rho)
    return np.where(np.ptp(x, axis=-1) == 0, math.nan, rho)


def slope(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares slope of y on x (NaN where x is constant)."""
    xc, yc = x - x.mean(-1, keepdims=True), y - y.mean(-1, keepdims=True)
    with np.errstate(all="ignore"):
        return np.where(np.ptp(x, axis=-1) > 0, (xc * yc).sum(-1) / (xc * xc).sum(-1), math.nan)


def mean_gap(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    return high.mean(-1) - low.mean(-1)


def spread_of_means(*groups: np.ndarray) -> np.ndarray:
    """(max − min) / min of the groups' means."""
    means = np.stack([g.mean(-1) for g in groups])
    return (means.max(0) - means.min(0)) / means.min(0)


def median(x: np.ndarray) -> np.ndarray:
    return np.median(x, axis=-1)


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


def within(ci: tuple[float, float], low: float, high: float) -> str:
    """Three-way verdict of low < effect < high: holds when the interval lies inside, does not hold when it
    lies wholly outside, inconclusive when it crosses a bound."""
    return combine([verdict(ci, low), verdict(ci, high, above=False)])
