"""The paper's claims and those beyond it, each judged on all seeds by a criterion fixed before looking at the results.

Each claim takes the measured studies (`results/<study>/measured.json` contents, by study name), or for the
mechanism claims the interpret summaries, or for the Gated SAE claims (`gated`) the SAE studies, and returns {id, claim, criterion, holds, verdict, effect, ci95,
evidence}. The paper's Table 1 claims (`paper`) are judged on an effect size and its bootstrap 95% interval
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

from monosem.claims import gated, interventions, mechanism, paper, tms  # each registers its claims on import
from monosem.claims.common import FAMILIES, REGISTRY, Studies, claim, with_verdict

__all__ = ["FAMILIES", "REGISTRY", "Studies", "claim", "evaluate", "with_verdict",
           "gated", "interventions", "mechanism", "paper", "tms"]


def evaluate(studies: Studies, interp: dict | None = None, saes: dict | None = None) -> list[dict]:
    inputs = {"studies": studies, "interp": interp or {}, "saes": saes or {}}
    order = list(FAMILIES)
    out = []
    for c in sorted(REGISTRY, key=lambda c: order.index(c.family)):
        judged = c.judge(inputs[FAMILIES[c.family]])
        out += [with_verdict(j) for j in (judged if isinstance(judged, list) else [judged])]
    return out
