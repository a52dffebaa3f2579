"""The bias trick's regime: its effect over the calibration grid, and against the predictor that collapses it."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import TwoSlopeNorm  # noqa: E402

from .plots import _save  # noqa: E402


def regime_plot(cells: list[dict], predictor: str, path: str | Path, title: str = "") -> None:
    """One heatmap per (size, batch): Δ #mono/#features (trick − plain) over decay d × steps, each cell annotated
    with Δ, its 95% interval and the loss ratio; then Δ against `predictor` for every cell, intervals as bars."""
    panels = sorted({(c["size"], c["batch"]) for c in cells})
    span = max([abs(c["delta"]) for c in cells] + [0.05])
    norm = TwoSlopeNorm(0.0, -span, span)
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(3.6 * (len(panels) + 1) + 1, 3.8),
                             gridspec_kw={"width_ratios": [1] * len(panels) + [1.4]})
    for ax, (size, batch) in zip(axes, panels):
        mine = [c for c in cells if (c["size"], c["batch"]) == (size, batch)]
        ds, ss = sorted({c["d"] for c in mine}), sorted({c["steps"] for c in mine})
        grid = np.full((len(ss), len(ds)), np.nan)
        for c in mine:
            i, j = ss.index(c["steps"]), ds.index(c["d"])
            grid[i, j] = c["delta"]
            ax.text(j, i, f"{c['delta']:+.2f}\n[{c['delta_lo']:+.2f}, {c['delta_hi']:+.2f}]\nloss ×{c['loss_ratio']:.2f}",
                    ha="center", va="center", fontsize=6.5)
        im = ax.imshow(grid, cmap="RdBu", norm=norm, origin="lower", aspect="auto")
        ax.set_xticks(range(len(ds)), [f"{d:g}" for d in ds])
        ax.set_yticks(range(len(ss)), [f"2^{int(np.log2(s))}" for s in ss])
        ax.set_xlabel("decay d (per step, × lr)")
        ax.set_ylabel("steps")
        ax.set_title(f"{size}, batch {batch}", fontsize=9)
    fig.colorbar(im, ax=axes[:len(panels)], shrink=0.8, label="Δ #mono/#features (trick − plain)")
    ax = axes[-1]
    sizes, batches = sorted({c["size"] for c in cells}), sorted({c["batch"] for c in cells})
    markers, colours = "osD^v", plt.get_cmap("tab10")
    for c in cells:
        x = c[predictor]
        ax.errorbar(x, c["delta"], yerr=[[c["delta"] - c["delta_lo"]], [c["delta_hi"] - c["delta"]]],
                    fmt=markers[sizes.index(c["size"]) % 5], color=colours(batches.index(c["batch"])),
                    ms=4, lw=0.8, alpha=0.8)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel({"E": "E = d·lr·steps/2 (e-folds of decay)", "R": "R = lr·steps/2 (steps after the decay × lr)",
                   "d": "d"}.get(predictor, predictor))
    ax.set_ylabel("Δ #mono/#features")
    handles = [plt.Line2D([], [], ls="", marker=markers[i % 5], color="black", label=s) for i, s in enumerate(sizes)]
    handles += [plt.Line2D([], [], ls="", marker="s", color=colours(i), label=f"batch {b}") for i, b in enumerate(batches)]
    ax.legend(handles=handles, fontsize=7, loc="best")
    ax.set_title("every cell against the predictor", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    _save(fig, path)
