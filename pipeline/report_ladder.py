"""The report's section on the scale ladder (profiles/ladder.yaml): every Table 1 claim judged at each rung,
where it first holds, and whether its effect moves toward the paper's as N grows (monosem.claims.ladder)."""

from monosem.claims import evaluate
from monosem.claims.ladder import ladder, parts, rungs
from monosem.plots.ladder import ladder_plot
from monosem.store.artifacts import write_json

from common import REPORTS


def _effect(effect, ci) -> str:
    if effect is None or ci is None:
        return "n/a"
    return f"{effect:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]"


def ladder_section(studies: dict) -> str:
    """Empty unless studies named `<study>_n<N>` were run; else the section's markdown, with reports/ladder.json
    and reports/figures/ladder.png written."""
    by_rung = rungs(studies)
    if not by_rung:
        return ""
    rows = ladder({n: evaluate(st) for n, st in by_rung.items()})
    write_json(REPORTS / "ladder.json", rows)
    ladder_plot(rows, REPORTS / "figures" / "ladder.png")
    ns = list(by_rung)
    lines = ["## The scale ladder", "",
             "The Table 1 studies at " + ", ".join(f"N {n}" for n in ns) + " (profiles/ladder.yaml: the default's "
             "ratios, densities, decays and sweeps, B·k fixed, steps doubling with N), each claim judged at every "
             "rung as at the default. *Toward*: every part of the claim lies further inside its criterion at the "
             "largest rung than at the smallest (*away*: further outside; *monotonic*: at every step). Margins per "
             "rung: `reports/ladder.json`.", "", "![ladder](figures/ladder.png)", "",
             "| claim | " + " | ".join(f"N {n}" for n in ns) + " | smallest rung holding | effect as N grows |",
             "|---|" + "---|" * len(ns) + "---|---|"]
    for r in rows:
        cells = [f"{r['rungs'][str(n)]['verdict']} ({r['rungs'][str(n)]['stability']})" for n in ns]
        lines.append(f"| {r['claim']} | " + " | ".join(cells) + f" | {r['smallest_holding'] or '—'} | {r['trend']} |")
    lines += ["", "| claim part | criterion | " + " | ".join(f"N {n}" for n in ns) + " |",
              "|---|---|" + "---|" * len(ns)]
    for r in rows:
        names = sorted({p for c in r["rungs"].values() for p in parts(c)})
        for name in names:
            target = next(parts(c)[name][2] for c in r["rungs"].values() if name in parts(c))
            crit = " and ".join(s for s in ((f"> {target[0]:g}" if target[0] is not None else ""),
                                            (f"< {target[1]:g}" if target[1] is not None else "")) if s)
            cells = [_effect(*parts(c)[name][:2]) if name in parts(c) else "n/a" for c in r["rungs"].values()]
            lines.append(f"| {r['id']}: {name} | {crit} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
