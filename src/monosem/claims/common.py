"""What every claim family shares: the one registry of claims (`@claim(family)`), the verdict fields, and the
helpers that read a study's measured instances and format their numbers.

A family's claims are judged on one input: the measured studies (`results/<study>/measured.json` contents, by
study name) or the interpret stage's summaries ({study: {label: summary}} from
`results/<study>/interp/summary.json`). `FAMILIES` names the families in the order `evaluate` lists them.
"""

from __future__ import annotations

import math
import statistics
from typing import Callable, NamedTuple

from monosem.analysis.stats import FAILS, HOLDS, NOT_RUN, UNSURE

Studies = dict[str, dict]
AS_HOLDS = {HOLDS: True, FAILS: False, UNSURE: None, NOT_RUN: None}

# Family -> what its claims read: "studies" (measured studies by name), "interp" (interpret summaries) or "saes"
# (the SAE studies' measured.json by name).
FAMILIES = {"paper": "studies", "interventions": "studies", "tms": "studies", "mechanism": "interp", "gated": "saes"}


class Claim(NamedTuple):
    family: str
    judge: Callable[[dict], dict | list[dict]]  # one claim, or one per study it judges


REGISTRY: list[Claim] = []


def claim(family: str):
    """Register a claim of `family` (a key of FAMILIES); within a family, claims keep their definition order."""
    if family not in FAMILIES:
        raise ValueError(f"unknown claim family {family!r}: one of {', '.join(FAMILIES)}")

    def register(fn):
        REGISTRY.append(Claim(family, fn))
        return fn
    return register


def with_verdict(claim: dict) -> dict:
    """A claim judged by `holds` alone, with the three-way fields added (None there means not run)."""
    return {"effect": None, "ci95": None, "target": None} | claim | {
        "verdict": claim.get("verdict") or {True: HOLDS, False: FAILS, None: NOT_RUN}[claim["holds"]]}


def instances(study: dict) -> list[dict]:
    return [r for r in study["instances"].values() if r["diverged_at"] is None]


def by_point(study: dict, key: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for r in instances(study):
        out.setdefault(r["point"], []).append(r[key])
    return out


def fmt(xs: list[float]) -> str:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    if not xs:
        return "n/a"
    return f"{statistics.fmean(xs):.3f} ± {statistics.stdev(xs) if len(xs) > 1 else 0:.3f}"


def missing(result: dict, studies: Studies, names: list[str]) -> dict | None:
    absent = [n for n in names if n not in studies]
    if absent:
        return result | {"holds": None, "evidence": f"studies not run: {', '.join(absent)}"}
    return None


def num(v) -> bool:
    """A measured number: not null (NaN in measured.json) and not NaN."""
    return v is not None and v == v


def sweep_value(row: dict, key: str) -> float:
    return float(row[f"sweep.{key}"])


def swept(rows: list[dict], key: str) -> list[dict]:
    """The rows of a study that sweeps `key` (a study edited to sweep something else has none)."""
    return [r for r in rows if f"sweep.{key}" in r]
