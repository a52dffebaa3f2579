"""The seed rule (params.yaml's header): how many seeds each Table 1 study of the default profile gets, from a
3-seed default run's claims.

    python profiles/seeds.py reports/claims.json

A Table 1 study gets the smallest n at which every judged part of its claims is projected to be decided with
margin: the part's 95% interval half-width h at 3 seeds, scaled by √(3/n) (an interval of a mean shrinks so),
is at most half the distance from its effect to the criterion's nearest bound, |e − c|/2; that is
n = ⌈3·(2h/|e − c|)²⌉. A part named `<study>.<part>` asks it of that study (and of its pair in claim 2:
LR3 with LR1, LR4 with LR2, paired by seed), a claim's single pooled part of every study the claim reads; a
study takes the largest n asked of it, clipped to [3, 4], and LR1–LR4, the studies of claims 1 and 2, get at least
5: 3 is the least a bootstrap interval allows after the stability jackknife leaves one seed out; 4 is the largest
common cap whose projected default run fits the budget (`make repro` within 20 minutes at 250 GFLOP/s). The
projection is the measured default run of 2026-12-07 at cap 6 (21:24 scaled to 250 GFLOP/s; the 3-seed run's
projection had said 19.2 minutes, so it was recalibrated on the measurement) less 6.5 s per seed a study drops:
caps 4 / 5 / 6 give 19:40 / 20:19 / 21:24. A part whose interval is not defined (NaN) asks for the most.
"""

from __future__ import annotations

import json
import math
import sys

LOW, HIGH, CENTRAL = 3, 4, {"LR1": 5, "LR2": 5, "LR3": 5, "LR4": 5}
PAIRS = {"LR3": "LR1", "LR4": "LR2"}  # claim 2 pairs these by (lr, seed)


def needed(effect: float, ci: list[float], target: list[float | None], seeds: int = 3) -> int:
    """Seeds for one part: ⌈seeds·(2h/|e − c|)²⌉, c the target's bound nearest the effect."""
    if effect is None or ci is None or any(x is None or not math.isfinite(x) for x in [effect, *ci]):
        return HIGH
    h = (ci[1] - ci[0]) / 2
    distance = min(abs(effect - c) for c in target if c is not None)
    return HIGH if distance == 0 else math.ceil(seeds * (2 * h / distance) ** 2)


def rule(claims: list[dict]) -> dict[str, tuple[int, str]]:
    """{study: (seeds, the part that asks for them)} for every study a Table 1 claim reads."""
    out: dict[str, tuple[int, str]] = {}
    for c in (c for c in claims if c.get("family") == "paper" and c.get("target") is not None):
        if isinstance(c["effect"], dict):
            asks = [(k.split(".")[0], k, (c["effect"][k], c["ci95"][k], c["target"][k])) for k in c["effect"]]
            asks += [(PAIRS[s], k, p) for s, k, p in asks if s in PAIRS]
        else:
            asks = [(s, c["id"], (c["effect"], c["ci95"], c["target"])) for s in c["studies"]]
        for study, part, p in asks:
            want = needed(*p)
            n = max(CENTRAL.get(study, LOW), min(HIGH, max(LOW, want)))
            if n > out.get(study, (0, ""))[0]:
                out[study] = (n, f"{c['id']}: {part} asks {want}")
    for study in (s for c in claims if c.get("family") == "paper" for s in c["studies"]):
        out.setdefault(study, (max(LOW, CENTRAL.get(study, LOW)), "no judged part"))
    return out


def main() -> None:
    claims = json.loads(open(sys.argv[1]).read())
    for study, (n, why) in sorted(rule(claims).items(), key=lambda kv: (-kv[1][0], kv[0])):
        print(f"{study:5} {n}  ({why})")


if __name__ == "__main__":
    main()
