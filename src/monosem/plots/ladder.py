"""The scale ladder: each Table 1 claim's effect at each rung, against its criterion."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from monosem.plots.toy import save_figure  # noqa: E402

COLOURS = {"holds": "tab:green", "does not hold": "tab:red", "inconclusive": "tab:orange"}


def ladder_plot(rows: list[dict], path: str | Path, title: str = "") -> None:
    """One panel per claim: every judged part's margin (how far its effect lies inside the criterion's target;
    the dashed line is the criterion, above it the part meets it) at each rung N, the bar its 95% interval, the
    marker coloured by the claim's verdict at that rung."""
    cols = 4
    fig, axes = plt.subplots(math.ceil(len(rows) / cols), cols, figsize=(4.2 * cols, 3.4 * math.ceil(len(rows) / cols)),
                             squeeze=False)
    for ax, row in zip(axes.flat, rows):
        ns = [int(n) for n in row["rungs"]]
        names = sorted({p for r in row["rungs"].values() for p in r["margins"]})
        for j, name in enumerate(names):
            offset = (j - (len(names) - 1) / 2) * 0.04  # parts side by side at each rung
            pts = [(n * 2 ** offset, row["rungs"][str(n)]) for n in ns if name in row["rungs"][str(n)]["margins"]]
            if not pts:
                continue
            xs = [x for x, _ in pts]
            ms = [r["margins"][name] for _, r in pts]
            ax.plot(xs, [m[0] for m in ms], "-", color="0.6", lw=1, zorder=1)
            for x, (m, lo, hi), (_, r) in zip(xs, ms, pts):
                ax.errorbar(x, m, yerr=[[m - lo], [hi - m]], fmt="o", ms=5, capsize=3,
                            color=COLOURS.get(r["verdict"], "0.4"), zorder=2)
            ax.annotate(name if len(names) > 1 else "", (xs[-1], ms[-1][0]), fontsize=6.5,
                        xytext=(4, 0), textcoords="offset points", va="center")
        if not names:
            ax.text(0.5, 0.5, "not run at any rung", ha="center", va="center", transform=ax.transAxes, color="0.5")
        ax.axhline(0, ls="--", color="k", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.set_xlim(min(ns) / 1.3, max(ns) * 1.6)
        ax.set_title(f"{row['id']}\nsmallest holding: {row['smallest_holding'] or '—'}; {row['trend']}", fontsize=8)
        ax.set_xlabel("N (features)", fontsize=8)
        ax.set_ylabel("margin over the criterion", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(rows):]:
        ax.axis("off")
    fig.suptitle(title or "Table 1 claims along the scale ladder (green holds, red does not, orange inconclusive)")
    fig.tight_layout()
    save_figure(fig, path)
