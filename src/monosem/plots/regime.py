"""The bias trick's regime: its effect over the calibration grid, and against the predictor that collapses it."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm, TwoSlopeNorm  # noqa: E402

from monosem.plots.toy import save_figure  # noqa: E402


def regime_plot(cells: list[dict], path: str | Path, title: str = "") -> None:
    """Top: one heatmap per (size, batch), Δ #mono/#features (trick − plain) over decay d × steps, each cell
    annotated with Δ and the loss ratio. Bottom: every cell's Δ (95% interval as a bar) against d, coloured by
    the e-folds E, and against E, coloured by d: which of the two quantities sorts the effect."""
    panels = sorted({(c["size"], c["batch"]) for c in cells}, key=lambda p: (len(p[0]), p))
    span = max([abs(c["delta"]) for c in cells] + [0.05])
    norm = TwoSlopeNorm(0.0, -span, span)
    fig = plt.figure(figsize=(max(3.3 * len(panels), 9), 7.6))
    grid = fig.add_gridspec(2, len(panels) * 2, height_ratios=[1, 1.1], hspace=0.45, wspace=0.9)
    ds_all = sorted({c["d"] for c in cells})
    for n, (size, batch) in enumerate(panels):
        ax = fig.add_subplot(grid[0, 2 * n:2 * n + 2])
        mine = [c for c in cells if (c["size"], c["batch"]) == (size, batch)]
        ss = sorted({c["steps"] for c in mine})
        shown = np.full((len(ss), len(ds_all)), np.nan)
        for c in mine:
            i, j = ss.index(c["steps"]), ds_all.index(c["d"])
            shown[i, j] = c["delta"]
            ax.text(j, i, f"{c['delta']:+.2f}\n×{c['loss_ratio']:.2f}", ha="center", va="center", fontsize=7.5)
        im = ax.imshow(shown, cmap="RdBu", norm=norm, origin="lower", aspect="auto")
        ax.set_xticks(range(len(ds_all)), [f"{d:g}" for d in ds_all])
        ax.set_yticks(range(len(ss)), [f"2^{int(np.log2(s))}" for s in ss] if n == 0 else [""] * len(ss))
        ax.set_xlabel("decay d per step")
        if n == 0:
            ax.set_ylabel("steps")
        ax.set_title(f"{size}\nbatch {batch}", fontsize=8.5)
    fig.colorbar(im, ax=fig.axes, shrink=0.5, location="right", pad=0.02,
                 label="Δ #mono/#features (trick − plain); ×: loss ratio")
    sizes = sorted({c["size"] for c in cells}, key=len)
    markers = "osD^v"
    for col, (x, colour, cmap, label) in enumerate((("d", "E", "viridis", "E = d·lr·steps/2 (e-folds of decay)"),
                                                   ("E", "d", "plasma", "d (decay per step)"))):
        ax = fig.add_subplot(grid[1, col * len(panels):(col + 1) * len(panels)])
        values = [c[colour] for c in cells]
        cnorm = LogNorm(min(values), max(values)) if min(values) > 0 and min(values) < max(values) else None
        for c in cells:
            ax.errorbar(c[x], c["delta"], yerr=[[c["delta"] - c["delta_lo"]], [c["delta_hi"] - c["delta"]]],
                        fmt=markers[sizes.index(c["size"]) % 5], ms=5, lw=0.8, alpha=0.85,
                        color=plt.get_cmap(cmap)(cnorm(c[colour]) if cnorm else 0.5))
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel({"d": "decay d per step (the bias shrinks by d·lr; LAMB moves it by about lr)",
                       "E": "E = d·lr·steps/2 (e-folds of decay)"}[x], fontsize=8.5)
        ax.set_ylabel("Δ #mono/#features")
        if cnorm:
            fig.colorbar(plt.cm.ScalarMappable(norm=cnorm, cmap=cmap), ax=ax, label=label, pad=0.01)
        ax.legend(handles=[plt.Line2D([], [], ls="", marker=markers[i % 5], color="black", label=s)
                           for i, s in enumerate(sizes)], fontsize=7, loc="lower left")
    if title:
        fig.suptitle(title, fontsize=10)
    save_figure(fig, path)
