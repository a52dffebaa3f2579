"""Figures of the tied models: Elhage et al. 2022's superposition plots and the loss-bound gain plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from monosem.analysis.superposition import GEOMETRIC_FRACTIONS
from monosem.analysis.theory import crossovers
from monosem.plots.toy import plt, save_figure


def _sparsity_label(p: float) -> str:
    return f"1−S = {p:.3g}"


def matrices(panels: list[tuple[float, np.ndarray, np.ndarray]], title: str, path: str | Path) -> None:
    """TMS' weight figure: per density (one model each), WᵀW (n × n, red positive, blue negative) above the
    output bias b."""
    fig, axes = plt.subplots(2, len(panels), figsize=(1.9 * len(panels), 4.4), squeeze=False,
                             gridspec_kw={"height_ratios": [4, 1.2]})
    for col, (p, W, b) in enumerate(panels):
        gram = W.T @ W
        lim = max(1.0, float(np.abs(gram).max()))
        axes[0, col].imshow(gram, cmap="RdBu_r", vmin=-lim, vmax=lim)
        axes[0, col].set_title(_sparsity_label(p), fontsize=8)
        blim = max(1e-3, float(np.abs(b).max()))
        axes[1, col].imshow(b[None, :], cmap="RdBu_r", vmin=-blim, vmax=blim, aspect="auto")
        axes[1, col].set_xlabel(f"b (|b|max {blim:.2f})", fontsize=7)
        for ax in axes[:, col]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("WᵀW")
    fig.suptitle(title, fontsize=9, y=1.03)
    save_figure(fig, path)


def norms(panels: list[tuple[float, np.ndarray, np.ndarray]], title: str, path: str | Path) -> None:
    """TMS' bar plot: per density, ‖W_i‖ of each feature (in importance order), coloured by superposition
    √s_i on [0, 1] (dark: orthogonal to the rest; bright: sharing its dimension)."""
    cmap = plt.get_cmap("viridis")
    fig, axes = plt.subplots(1, len(panels), figsize=(1.9 * len(panels), 2.8), sharey=True, squeeze=False)
    for ax, (p, norm, sup) in zip(axes[0], panels):
        i = np.arange(len(norm))
        ax.barh(i, norm, color=cmap(np.clip(np.sqrt(sup), 0, 1)))
        ax.set_title(_sparsity_label(p), fontsize=8)
        ax.set_xlabel("‖W_i‖", fontsize=8)
    axes[0, 0].invert_yaxis()  # once: the panels share their y axis (most important feature on top)
    axes[0, 0].set_ylabel("feature (importance order)")
    fig.colorbar(plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, 1)), ax=axes[0, -1], label="√ superposition")
    fig.suptitle(title, fontsize=9, y=1.03)
    save_figure(fig, path)


def dims_per_feature(points: list[tuple[float, float, bool]], title: str, path: str | Path) -> None:
    """D* = m/‖W‖_F² against 1/(1−S) (log axis): every model a dot, the best of each density joined; the
    sticky values 1 and 1/2 dashed."""
    fig, ax = plt.subplots(figsize=(5, 3.4))
    inv = np.array([1 / p for p, _, _ in points])
    d = np.array([v for _, v, _ in points])
    best = np.array([b for _, _, b in points])
    ax.scatter(inv[~best], d[~best], s=10, color="0.6", label="other seeds")
    order = np.argsort(inv[best])
    ax.plot(inv[best][order], d[best][order], "o-", color="C0", ms=4, label="lowest loss per density")
    for y in (1, 0.5):
        ax.axhline(y, ls="--", color="0.4", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("1/(1−S)")
    ax.set_ylabel("dimensions per feature m/‖W‖²_F")
    ax.set_ylim(0, 1.1)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    save_figure(fig, path)


def feature_dimensionality(points: list[tuple[float, np.ndarray, np.ndarray]], dstar: list[tuple[float, float]],
                           title: str, path: str | Path) -> None:
    """TMS' feature dimensionality figure: every represented feature's D_i against 1/(1−S) (log axis, points
    spread a little along x), the geometric fractions as guide lines, D* per density as a line."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    rng = np.random.default_rng(0)
    for p, dims, norm in points:
        keep = norm > 0.5
        x = (1 / p) * np.exp(rng.uniform(-0.08, 0.08, keep.sum()))
        ax.scatter(x, dims[keep], s=4, alpha=0.5, color="C0")
    for name, y in GEOMETRIC_FRACTIONS.items():
        ax.axhline(y, ls=":", color="0.4", lw=0.8)
        ax.text(1.0, y, name, fontsize=7, va="bottom", ha="right", transform=ax.get_yaxis_transform())
    xs, ys = zip(*sorted((1 / p, v) for p, v in dstar))
    ax.plot(xs, ys, "-", color="C3", lw=1, label="D* (lowest-loss model)")
    ax.set_xscale("log")
    ax.set_xlabel("1/(1−S)")
    ax.set_ylabel("feature dimensionality D_i")
    ax.set_ylim(0, 1.08)
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title(title, fontsize=9)
    save_figure(fig, path)


def neurons(panels: list[tuple[float, np.ndarray]], title: str, path: str | Path) -> None:
    """TMS' privileged-basis figure: per density, one stacked bar per neuron of |W_ji| for each feature,
    coloured by feature (importance order), negative weights below the axis."""
    cmap = plt.get_cmap("viridis")
    fig, axes = plt.subplots(1, len(panels), figsize=(2.1 * len(panels), 3), sharey=True, squeeze=False)
    for ax, (p, W) in zip(axes[0], panels):
        m, n = W.shape
        pos, neg = np.zeros(m), np.zeros(m)
        for i in range(n):
            w = W[:, i]
            up, down = np.clip(w, 0, None), np.clip(w, None, 0)
            colour = cmap(i / max(1, n - 1))
            ax.bar(np.arange(m), up, bottom=pos, color=colour, width=0.8, edgecolor="white", lw=0.3)
            ax.bar(np.arange(m), down, bottom=neg, color=colour, width=0.8, edgecolor="white", lw=0.3)
            pos, neg = pos + up, neg + down
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xticks(range(m))
        ax.set_xlabel("neuron", fontsize=8)
        ax.set_title(_sparsity_label(p), fontsize=8)
    axes[0, 0].set_ylabel("W_ji (stacked by feature)")
    fig.colorbar(plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, n - 1)), ax=axes[0, -1],
                 label="feature (importance order)")
    fig.suptitle(title, fontsize=9, y=1.03)
    save_figure(fig, path)


def gain_bounds(series: dict[int, dict], k: int, title: str, path: str | Path) -> None:
    """The loss bounds' figure: per hidden size d, measured gain L̃ = p·n·μ₂ − L against p (log–log; dots every
    seed, line their mean), the exact linear and unsuperposed baselines, and the order curves
    min(p·d^k, d·p^{1/k}) and min(p·d^k, d) scaled by one constant fitted at the smallest p. `series[d]` has
    arrays p, gain (all seeds), and per unique p: p_u, gain_mean, linear, unsuperposed, lower, upper, scale."""
    fig, axes = plt.subplots(1, len(series), figsize=(4.6 * len(series), 3.8), squeeze=False)
    for ax, (d, s) in zip(axes[0], sorted(series.items())):
        ax.scatter(s["p"], s["gain"], s=10, color="C0", alpha=0.6)
        ax.plot(s["p_u"], s["gain_mean"], "o-", color="C0", ms=3, label="trained (mean over seeds)")
        ax.plot(s["p_u"], s["linear"], "--", color="C2", label="best linear pμ₂·min(d,n)")
        ax.plot(s["p_u"], s["unsuperposed"], "--", color="C1", label="best unsuperposed pdμ²ₖ₊₁/μ₂ₖ")
        ax.plot(s["p_u"], s["scale"] * np.asarray(s["lower"]), ":", color="C3",
                label=f"{s['scale']:.2g}·min(pd^k, dp^(1/k))")
        ax.plot(s["p_u"], s["scale"] * np.asarray(s["upper"]), "-.", color="C4", label=f"{s['scale']:.2g}·min(pd^k, d)")
        for x in crossovers(d, k):
            ax.axvline(x, color="0.6", lw=0.7, ls=":")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("density p")
        ax.set_ylabel("gain L̃ = pnμ₂ − L")
        ax.set_title(f"d = {d}, k = {k} (dotted verticals: d^-k, d^(1-k))", fontsize=8)
        ax.legend(fontsize=6)
    fig.suptitle(title, fontsize=9, y=1.03)
    save_figure(fig, path)
