"""SAE figures: each architecture's λ (or k) sweep against L0, the seed mean as a line and the seeds' range
as a band, so architectures are compared at matched L0."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from monosem.analysis.sae_eval import by_architecture
from monosem.plots.toy import plt, save_figure
from monosem.sae import ARCHITECTURES


def style(arch: str) -> tuple[str, str]:
    """An architecture's colour and marker (its class's `style`; black crosses for an unknown name)."""
    return ARCHITECTURES[arch].style if arch in ARCHITECTURES else ("black", "x")


def sweep_panels(rows: list[dict], panels: list[tuple[str, str, float | None]], title: str, path: str | Path,
                 true_l0: float | None = None) -> None:
    """One panel per (metric, label, reference line) against L0 on a log axis."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False)
    for ax, (metric, label, ref) in zip(axes[0], panels):
        for arch, pts in by_architecture(rows, metric).items():
            if not pts:
                continue
            colour, marker = style(arch)
            l0, mean, lo, hi = zip(*pts)
            ax.plot(l0, mean, marker=marker, color=colour, label=arch, ms=4, lw=1.3)
            ax.fill_between(l0, lo, hi, color=colour, alpha=0.18, lw=0)
        if ref is not None:
            ax.axhline(ref, color="grey", lw=0.8, ls="--")
        if true_l0:
            ax.axvline(true_l0, color="grey", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("L0 (active latents per input)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both", lw=0.5)
    axes[0][0].legend(fontsize=7, loc="best")
    fig.suptitle(title + (f"   (dotted: the true mean number of active features, {true_l0:.2f})" if true_l0 else ""),
                 fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def training_curves(curves: pd.DataFrame, title: str, path: str | Path) -> None:
    """MSE, L0 and dead fraction against step, one line per SAE, coloured by architecture."""
    keys = [("mse", "training MSE (E‖x‖² = 1)"), ("l0", "training L0"), ("dead_fraction", "dead fraction")]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for label, df in curves.groupby("sae", sort=False):
        colour, _ = style(df["architecture"].iloc[0])
        for ax, (k, _) in zip(axes, keys):
            ax.plot(df["step"], df[k], color=colour, lw=0.7, alpha=0.6)
    for ax, (k, name) in zip(axes, keys):
        ax.set_xscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        if k != "dead_fraction":
            ax.set_yscale("log")
    handles = [plt.Line2D([], [], color=style(a)[0], label=a) for a in curves["architecture"].unique()]
    axes[0].legend(handles=handles, fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
