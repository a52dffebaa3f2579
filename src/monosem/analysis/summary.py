"""Seed statistics per sweep point, and what a study shows DVC.

DVC's tables (`dvc metrics show`, `dvc exp show`, `dvc metrics diff`) get one column per number in every
`metrics:` file of every stage, so a study's `metrics.json` holds one number: its headline, the highest seed
mean over its sweep points (`best`). `points.json` holds a few numbers per sweep point (`compact`: the seed
mean, the spread of those that vary continuously, and where the headline is); DVC reads it on request
(`dvc metrics diff --targets results/<study>/points.json`). Every number of every instance stays in the
stages' other outputs (`measured.json`, `instances.csv`) and in MLflow.
"""

from __future__ import annotations

import math
import statistics

DIGITS = 4  # significant digits kept in DVC's metrics: the rest is seed noise that widens every diff


def summarise(rows: list[dict], keys: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Mean and spread over the seeds of each sweep point (`point` of each row; rows with a `diverged_at`
    step are counted as diverged and left out)."""
    points: dict[str, list[dict]] = {}
    for row in rows:
        points.setdefault(row["point"], []).append(row)
    out = {}
    for point, members in points.items():
        ok = [r for r in members if r.get("diverged_at") is None]
        stats: dict[str, float] = {"seeds": len(ok), "diverged": len(members) - len(ok)}
        for key in keys:
            vals = [r[key] for r in ok if r.get(key) is not None and r[key] == r[key]]  # NaN: nothing to average
            stats[key] = statistics.fmean(vals) if vals else float("nan")
            stats[f"{key}_std"] = statistics.stdev(vals) if len(vals) > 1 else float("nan")
        out[point] = stats
    return out


def rounded(value: float) -> float:
    if isinstance(value, int) or value != value:  # counts stay whole; NaN stays (written as null)
        return value
    return float(f"{value:.{DIGITS}g}")


def compact(points: dict[str, dict[str, float]], spread: tuple[str, ...], plain: tuple[str, ...],
            headline: str) -> dict:
    """DVC's view of `summarise`d points, by point: `spread` keys with their std, `plain` keys as the mean (or
    count) alone; and the headline, the point with the highest seed mean of `headline` (a key of `spread`)."""
    out = {}
    for point, stats in points.items():
        out[point] = {k: rounded(stats[k]) for key in spread for k in (key, f"{key}_std")}
        out[point] |= {key: rounded(stats[key]) for key in plain}
    value, at = _best(points, headline)
    # Points at the top level (no "points." before every column name); a point's label has a "=" or is "base".
    return {"headline": {"metric": headline, "best": rounded(value), "at": at}} | out


def best(points: dict[str, dict[str, float]], headline: str) -> dict:
    """A study's DVC metrics: the highest seed mean of `headline` over its sweep points (null if none has one)."""
    return {"best": {headline: rounded(_best(points, headline)[0])}}


def _best(points: dict[str, dict[str, float]], headline: str) -> tuple[float, str | None]:
    scored = [(stats[headline], point) for point, stats in points.items() if stats[headline] == stats[headline]]
    return max(scored, default=(float("nan"), None), key=lambda s: s[0])


def cell(stats: dict, key: str, digits: int) -> str:
    """A report table's cell: a point's mean and seed std of `key` ("0.412 ± 0.031"), "–" where there is none."""
    mean, std = stats.get(key), stats.get(f"{key}_std")
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    return f"{mean:.{digits}f}" + ("" if std is None or std != std else f" ± {std:.{digits}f}")
