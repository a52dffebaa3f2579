"""The Table 1 claims along a scale ladder: the same studies at several sizes (profiles/ladder.yaml, made by
profiles/make.py), each copy named `<study>_n<N>`. Every claim is judged at each rung as at the default, and
the ladder says where it first holds and whether its effect moves toward the paper's as N grows.

"Toward the paper's": each judged part has a target, the effects that meet its criterion ([low, high], null
unbounded); its margin is how far the effect lies inside the target (effect − low, high − effect, or the
smaller of the two; negative outside). A claim's effect moves *toward* when every part's margin is larger at the
largest rung than at the smallest, *away* when every one is smaller, *mixed* otherwise; *monotonic* when it moves
the same way at each step up.
"""

from __future__ import annotations

import math
import re

from monosem.analysis.stats import HOLDS
from monosem.claims.common import Studies

RUNG = re.compile(r"^(?P<study>.+)_n(?P<n>\d+)$")


def rungs(studies: Studies) -> dict[int, Studies]:
    """The ladder's studies by rung, {N: {study: measured}}, from names `<study>_n<N>`."""
    out: dict[int, Studies] = {}
    for name, measured in studies.items():
        if m := RUNG.match(name):
            out.setdefault(int(m["n"]), {})[m["study"]] = measured
    return dict(sorted(out.items()))


def margin(effect: float | None, target: list | None) -> float | None:
    """How far an effect lies inside its target (negative: outside); None without an effect."""
    if effect is None or target is None or not math.isfinite(effect):
        return None
    low, high = target
    inside = [x for x in (None if low is None else effect - low, None if high is None else high - effect) if x is not None]
    return min(inside)


def parts(claim: dict) -> dict[str, tuple[float | None, list | None, list | None]]:
    """A judged claim's parts: {name: (effect, 95% interval, target)}."""
    if isinstance(claim.get("effect"), dict):
        return {k: (v, claim["ci95"][k], claim["target"][k]) for k, v in claim["effect"].items()}
    if claim.get("effect") is None:
        return {}
    return {"effect": (claim["effect"], claim["ci95"], claim["target"])}


def margins(claim: dict) -> dict[str, list[float]]:
    """Each part's margin and the range its 95% interval spans: {part: [margin, low, high]}."""
    out = {}
    for name, (effect, ci, target) in parts(claim).items():
        ends = [margin(x, target) for x in (ci or [])]
        if (m := margin(effect, target)) is not None and None not in ends and ends:
            out[name] = [m, min(ends), max(ends + [m])]
    return out


def trend(by_rung: dict[int, dict]) -> str:
    """toward / away / mixed (with ", monotonic" when every step agrees), or "n/a" without two rungs to compare."""
    names = set.intersection(*(set(parts(c)) for c in by_rung.values())) if by_rung else set()
    ways = []
    for name in sorted(names):
        ms = [margin(*parts(c)[name][::2]) for c in by_rung.values()]
        ms = [m for m in ms if m is not None]
        if len(ms) < 2 or ms[-1] == ms[0]:
            continue
        steps = [b > a for a, b in zip(ms, ms[1:]) if b != a]
        ways.append((ms[-1] > ms[0], all(s == steps[0] for s in steps)))
    if not ways:
        return "n/a"
    direction = "toward" if all(w for w, _ in ways) else "away" if not any(w for w, _ in ways) else "mixed"
    return direction + (", monotonic" if direction != "mixed" and all(m for _, m in ways) else "")


def ladder(claims_by_rung: dict[int, list[dict]]) -> list[dict]:
    """Per Table 1 claim: its judgement at every rung, the smallest rung where it holds and its trend.
    `claims_by_rung`: {N: the claims judged on that rung's studies (monosem.claims.evaluate)}."""
    out = []
    first = next(iter(claims_by_rung.values()), [])
    for c0 in (c for c in first if c["family"] == "paper"):
        by_rung = {n: next(c for c in claims if c["id"] == c0["id"]) for n, claims in claims_by_rung.items()}
        judged = {n: c for n, c in by_rung.items() if c["effect"] is not None}
        holding = [n for n, c in by_rung.items() if c["verdict"] == HOLDS]
        out.append({"id": c0["id"], "claim": c0["claim"], "criterion": c0["criterion"],
                    "rungs": {str(n): {k: c.get(k) for k in ("verdict", "stability", "effect", "ci95", "target")}
                              | {"margins": margins(c)} for n, c in by_rung.items()},
                    "smallest_holding": min(holding) if holding else None, "trend": trend(judged)})
    return out

