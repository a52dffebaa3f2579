"""The paper's claims and those beyond it, each judged on all seeds by a criterion fixed before looking at the results.

Each claim takes the measured studies (`results/<study>/measured.json` contents, by study name), or for the
mechanism claims the interpret summaries, or for the Gated SAE claims (`gated`) the SAE studies, and returns {id, claim,
criterion, holds, verdict, effect, ci95, target, evidence}; `evaluate` adds each claim's stability (a jackknife over
seeds) and `ladder` judges the Table 1 claims at each size of a scale ladder. The paper's Table 1 claims (`paper`) are judged on an effect size and its bootstrap 95% interval
(`monosem.analysis.stats`): the verdict is "holds" when the whole interval meets the criterion, "does not hold" when none of
it does, "inconclusive" when it straddles the criterion, so float differences between machines of the size of seed
noise cannot flip a verdict. A compound claim (several parts, or several studies) holds when every part holds;
`effect` and `ci95` are then dicts by "<study>.<part>". The other claims (`interventions`, `tms`, `mechanism`) keep
their tests' p-values or fixed rules: their verdict follows `holds`, `effect` is the number the criterion reads
(null where there is none) and `ci95` is null. `holds` is True / False / None (not run or inconclusive) for
consumers that predate the three-way verdict.

One registry (`common.REGISTRY`, filled by `@claim(family)`); `evaluate` lists the claims family by family in the
order of `common.FAMILIES`, each family's in definition order.
"""

from __future__ import annotations

from monosem.analysis.stats import NOT_RUN
from monosem.claims import gated, interventions, mechanism, paper, tms  # each registers its claims on import
from monosem.claims.common import FAMILIES, REGISTRY, Studies, claim, with_verdict

__all__ = ["FAMILIES", "REGISTRY", "Studies", "claim", "evaluate", "judge", "with_verdict", "without",
           "gated", "interventions", "mechanism", "paper", "tms"]


def judge(studies: Studies, interp: dict | None = None, saes: dict | None = None) -> list[dict]:
    """Every registered claim judged on all the given instances, family by family."""
    inputs = {"studies": studies, "interp": interp or {}, "saes": saes or {}}
    order = list(FAMILIES)
    out = []
    for c in sorted(REGISTRY, key=lambda c: order.index(c.family)):
        judged = c.judge(inputs[FAMILIES[c.family]])
        out += [with_verdict(j) | {"family": c.family} for j in (judged if isinstance(judged, list) else [judged])]
    return out


def evaluate(studies: Studies, interp: dict | None = None, saes: dict | None = None) -> list[dict]:
    """`judge`, plus each claim's stability: its verdict judged again with each seed left out in turn (a
    jackknife over seeds). `stable` when every such verdict equals the whole's, `fragile` otherwise (a verdict
    that hinges on one seed shows it); `leave_one_out` lists them by the seed left out. A seed is left out of
    every input at once (toy instances, their interpret summaries, SAEs of that seed); a claim none of whose
    instances has that seed is judged on the same data again."""
    interp, saes = interp or {}, saes or {}
    claims = judge(studies, interp, saes)
    seeds = sorted({r["seed"] for s in studies.values() for r in s["instances"].values()}
                   | {r["seed"] for m in saes.values() for r in m["saes"].values()})
    again = {seed: {_key(c): c["verdict"] for c in judge(*without(seed, studies, interp, saes))} for seed in seeds}
    for c in claims:
        loo = {str(seed): again[seed].get(_key(c), NOT_RUN) for seed in seeds}
        c["stability"] = "stable" if all(v == c["verdict"] for v in loo.values()) else "fragile"
        c["leave_one_out"] = loo
    return claims


def without(seed: int, studies: Studies, interp: dict, saes: dict) -> tuple[Studies, dict, dict]:
    """The inputs with every instance and SAE of `seed` left out."""
    def kept(study: str, label: str) -> bool:
        return studies.get(study, {}).get("instances", {}).get(label, {}).get("seed") != seed

    return ({name: s | {"instances": {k: r for k, r in s["instances"].items() if r["seed"] != seed}}
             for name, s in studies.items()},
            {name: {label: v for label, v in summaries.items() if kept(name, label)} for name, summaries in interp.items()},
            {name: m | {"saes": {k: r for k, r in m["saes"].items() if r["seed"] != seed}} for name, m in saes.items()})


def _key(claim: dict) -> tuple:
    return claim["id"], tuple(claim.get("studies") or ())
