"""The paper's figures (authors' `plot_helper.py`), with seeds drawn as a mean and a band."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import LogNorm, Normalize  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

from monosem.analysis.interpret import feature_order, neuron_order  # noqa: E402
from monosem.store.artifacts import atomic_path  # noqa: E402

LOG_SCALED = ("lr", "bias_decay", "l1", "l1_out", "eps", "neurons", "inhibit")


def save_figure(fig, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)


def _colours(values: list[float], key: str):
    numeric = [v for v in values if isinstance(v, (int, float))]
    if len(numeric) != len(values) or not values:
        cmap = plt.get_cmap("tab10")
        return (lambda v: cmap(values.index(v) % 10)), None
    log = key.split(".")[-1] in LOG_SCALED and min(numeric) > 0
    norm = LogNorm(min(numeric), max(numeric)) if log and min(numeric) < max(numeric) else \
        Normalize(min(numeric), max(numeric) if max(numeric) > min(numeric) else min(numeric) + 1)
    cmap = plt.get_cmap("viridis")
    return (lambda v: cmap(norm(v))), plt.cm.ScalarMappable(norm=norm, cmap=cmap)


def training_plot(curves: pd.DataFrame, sweep_key: str | None, title: str, path: str | Path) -> None:
    """Loss, #mono/#features (dotted line at 1) and mean bias against log2 step, coloured by sweep value."""
    col = f"sweep.{sweep_key}" if sweep_key else None
    curves = curves.assign(_v=curves[col] if col else "base")
    values = sorted(curves["_v"].unique().tolist(), key=lambda v: (isinstance(v, str), v))
    colour, mappable = _colours(values, sweep_key or "")
    fig, axes = plt.subplots(3, 1, figsize=(6.5, 8), sharex=True)
    for v in values:
        g = curves[curves["_v"] == v].groupby("step")
        for ax, metric in zip(axes, ("loss", "mono_per_feature", "mean_bias")):
            mean, lo, hi = g[metric].mean(), g[metric].min(), g[metric].max()
            x = np.log2(mean.index.to_numpy())
            ax.plot(x, mean.to_numpy(), color=colour(v), lw=1.4, label=f"{v:g}" if isinstance(v, float) else str(v))
            ax.fill_between(x, lo.to_numpy(), hi.to_numpy(), color=colour(v), alpha=0.2, lw=0)
    axes[0].set_ylabel("loss (train)")
    axes[0].set_yscale("log")
    axes[1].set_ylabel("# mono / # features")
    axes[1].axhline(1, ls=":", color="k", lw=1)
    axes[2].set_ylabel("mean bias")
    axes[2].set_xlabel("log2(step)")
    axes[0].set_title(f"{title}: mean over seeds, band = min..max")
    if mappable is not None:
        fig.colorbar(mappable, ax=axes, label=sweep_key, shrink=0.6)
    else:
        axes[0].legend(fontsize=7)
    save_figure(fig, path)


def _heatmap(ax, sfa: np.ndarray, title: str, ylabel: bool = True):
    order = neuron_order(torch.as_tensor(sfa))
    sorted_sfa = sfa[order.numpy()]
    feats = feature_order(torch.as_tensor(sorted_sfa), torch.as_tensor(np.arange(len(order)))).numpy()
    im = ax.imshow(sorted_sfa[:, feats], aspect="auto", vmin=0, vmax=1.02, cmap="viridis", interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("feature (sorted by best neuron)")
    if ylabel:
        ax.set_ylabel("neuron (sorted by frac_mono)")
    return im


def sfa_heatmaps(panels: list[tuple[str, np.ndarray]], path: str | Path) -> None:
    """Single-feature-activation heatmaps, one panel per model (neurons × features)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.6), squeeze=False)
    for j, (ax, (title, sfa)) in enumerate(zip(axes[0], panels)):
        im = _heatmap(ax, sfa, title, ylabel=j == 0)
    fig.colorbar(im, ax=axes[0].tolist(), label="activation", shrink=0.8)
    save_figure(fig, path)


def bias_plot(panels: list[tuple[str, np.ndarray, np.ndarray]], n_features: int, path: str | Path) -> None:
    """Final first-layer bias against neuron index sorted by monosemanticity, with a line at N."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for title, bias, sfa in panels:
        order = neuron_order(torch.as_tensor(sfa)).numpy()
        ax.plot(bias[order], ".", ms=3, label=title)
    ax.axvline(n_features, color="r", ls="--", lw=1, label=f"N = {n_features}")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("neuron (sorted by frac_mono)")
    ax.set_ylabel("bias")
    ax.legend(fontsize=7)
    save_figure(fig, path)


def mono_sweep(points: pd.DataFrame, sweep_key: str, n_features: int, path: str | Path, title: str = "") -> None:
    """#mono/#neurons, #mono/#features and eval loss against the swept variable; seeds as mean ± std.

    points: one row per sweep point with column x, the metrics and their `_std`, and optionally `series`
    (the values of the other swept keys, one line each)."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    series = points["series"] if "series" in points else pd.Series([None] * len(points), index=points.index)
    for name in dict.fromkeys(series):
        sub = points[series == name] if name is not None else points
        x = sub["x"].to_numpy()
        for ax, metric, label in zip(axes, ("mono_per_neuron", "mono_per_feature", "loss"),
                                     ("# mono / # neurons", "# mono / # features", "eval loss")):
            mean, std = sub[metric].to_numpy(float), np.nan_to_num(sub[f"{metric}_std"].to_numpy(float))
            ax.errorbar(x, mean, yerr=std, marker="o", capsize=3, label=name)
            ax.set_xlabel(sweep_key)
            ax.set_ylabel(label)
    x = points["x"].to_numpy()
    for ax in axes:
        if sweep_key.split(".")[-1] in LOG_SCALED and np.all(x > 0):
            ax.set_xscale("log", base=2 if sweep_key in ("model.neurons", "data.eps") else 10)
            ax.set_xticks(sorted(set(x)), [f"{v:g}" for v in sorted(set(x))])  # the swept values, not a decade's
            ax.xaxis.set_minor_formatter(NullFormatter())                          # minor labels on top of them
        if sweep_key == "model.neurons":
            ax.axvline(n_features, color="r", lw=1)
    if series.notna().any():
        axes[0].legend(fontsize=7)
    fig.suptitle(f"{title}: mean ± std over seeds".lstrip(": "), fontsize=9)
    save_figure(fig, path)


def noise_plot(points: pd.DataFrame, title: str, path: str | Path) -> None:
    """Under input noise σ: the learned bias (live, monosemantic, polysemantic neurons) against σ, and the
    relative change of each class's activations when noise at the model's own σ is added at eval time."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(10.5, 3.8))
    x = points["x"].to_numpy(float)
    for ax, metrics in ((a, (("bias_mean_live", "live neurons", "k"), ("bias_mean_mono", "monosemantic", "tab:blue"),
                             ("bias_mean_poly", "polysemantic", "tab:red"))),
                        (b, (("noise_change_mono", "monosemantic", "tab:blue"),
                             ("noise_change_poly", "polysemantic", "tab:red")))):
        for metric, label, colour in metrics:
            mean, std = points[metric].to_numpy(float), np.nan_to_num(points[f"{metric}_std"].to_numpy(float))
            ax.errorbar(x, mean, yerr=std, marker="o", capsize=3, color=colour, label=label)
        ax.set_xlabel("input noise σ (training)")
        ax.legend(fontsize=7)
    a.axhline(0, color="grey", lw=0.5)
    a.set_ylabel("mean first-layer bias")
    b.set_ylabel("‖h(x + σz) − h(x)‖ / ‖h(x)‖")
    fig.suptitle(f"{title}: mean ± std over seeds", fontsize=9)
    save_figure(fig, path)


def instance_figure(title: str, sfa: np.ndarray, bias: np.ndarray, n_features: int, path: str | Path) -> None:
    """One model: its single-feature-activation heatmap and its sorted biases."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4.2))
    im = _heatmap(a, sfa, title)
    fig.colorbar(im, ax=a)
    order = neuron_order(torch.as_tensor(sfa)).numpy()
    b.plot(bias[order], ".", ms=3)
    b.axvline(n_features, color="r", ls="--", lw=1)
    b.axhline(0, color="k", lw=0.5)
    b.set_xlabel("neuron (sorted by frac_mono)")
    b.set_ylabel("bias")
    save_figure(fig, path)


def decomposition_plot(amplitudes: np.ndarray, curves: dict[str, np.ndarray], title: str, path: str | Path) -> None:
    """Output along feature i's target against its input amplitude f_i (only feature i on), for the full
    model and each sub-network, against the truth y = x. Lines: mean over features; bands: 10–90%."""
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    colours = {"full": "k", "mono": "tab:blue", "poly": "tab:red", "bias>0": "tab:orange", "bias<=0": "tab:green"}
    for name, y in curves.items():
        ax.plot(amplitudes, y.mean(1), color=colours.get(name), lw=1.8 if name == "full" else 1.3, label=name)
        ax.fill_between(amplitudes, np.percentile(y, 10, axis=1), np.percentile(y, 90, axis=1),
                        color=colours.get(name), alpha=0.12, lw=0)
    ax.plot([0, 1], [0, 1], ":", color="grey", label="y = x")
    ax.set_xlabel("input amplitude f_i")
    ax.set_ylabel("output along t_i")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    save_figure(fig, path)


def spectrum_plot(sv_full: np.ndarray, sv_poly: np.ndarray, r2: np.ndarray, d_embed: int, title: str,
                  path: str | Path) -> None:
    """Singular values of the linear path W2 W1 P and of the polysemantic block, and the R² of a rank-r
    linear map plus a constant for the polysemantic block's output."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    for sv, label in ((sv_full, "W2·W1·P (all neurons)"), (sv_poly, "polysemantic block")):
        if len(sv) and sv[0] > 0:
            # log10 on a linear axis: a log axis renders its tick labels with mathtext, 0.5 s per figure
            a.plot(np.arange(1, len(sv) + 1), np.log10(np.maximum(sv / sv[0], 1e-8)), ".-", ms=3, label=label)
    a.axvline(d_embed, color="r", lw=1, ls="--", label=f"m = {d_embed}")
    a.set_xlabel("index")
    a.set_ylabel("log10(singular value / largest)")
    a.set_xlim(0, min(len(sv_full), 4 * d_embed) + 1)
    a.legend(fontsize=7)
    b.plot(np.arange(len(r2)), r2, "o-", ms=3)
    b.axhline(0.9, color="grey", ls=":", lw=1)
    b.set_ylim(0, 1.02)
    b.set_xlabel("rank r")
    b.set_ylabel("R² of polysemantic output")
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)
