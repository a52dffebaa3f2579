"""Neuron-level analysis of a trained toy model: classes, driving features, orderings for plots."""

from __future__ import annotations

import torch
from torch import Tensor

from .metrics import frac_mono, neuron_classes

CLASS_NAMES = ("dead", "mono", "poly")


def neuron_order(sfa: Tensor) -> Tensor:
    """Neurons sorted by monosemanticity, most monosemantic first (the authors sort by max/mean)."""
    return torch.argsort(frac_mono(sfa), descending=True, stable=True)


def feature_order(sfa: Tensor, order: Tensor) -> Tensor:
    """Features sorted by the position (in `order`) of the neuron they drive most: the diagonal heatmap."""
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))
    return torch.argsort(rank[sfa.argmax(0)], stable=True)


def neuron_table(sfa: Tensor, bias: Tensor, w_out: Tensor, top: int = 3) -> list[dict]:
    """One row per neuron: class, frac_mono, bias, output-weight norm and its `top` driving features.

    sfa: (k, N) single-feature activations; bias: (k,); w_out: (d_out, k).
    """
    score, cls = frac_mono(sfa), neuron_classes(sfa)
    values, features = sfa.topk(min(top, sfa.shape[1]), dim=1)
    total = sfa.clamp(min=0).sum(1)
    rows = []
    for n in neuron_order(sfa).tolist():
        row = {"neuron": n, "class": CLASS_NAMES[int(cls[n])], "frac_mono": float(score[n]), "bias": float(bias[n]),
               "n_features_active": int((sfa[n] > 0).sum()), "max_activation": float(values[n, 0]),
               "out_norm": float(w_out[:, n].norm())}
        for r in range(values.shape[1]):
            row[f"feature_{r + 1}"] = int(features[n, r])
            row[f"activation_{r + 1}"] = float(values[n, r])
            row[f"share_{r + 1}"] = float(values[n, r].clamp(min=0) / total[n]) if total[n] > 0 else 0.0
        rows.append(row)
    return rows
