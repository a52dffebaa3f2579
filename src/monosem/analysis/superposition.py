"""Superposition geometry of tied models (Elhage et al. 2022, "Toy Models of Superposition"; Scherlis et
al. 2022; Lecomte et al. 2023).

W has shape (..., m, n): column W_i is feature i's direction in the m hidden dimensions, row j neuron j's
input weights. All functions are batched over leading axes.
"""

from __future__ import annotations

import torch
from torch import Tensor

from monosem.analysis.metrics import count_mono, single_feature_activations

NORM_FLOOR = 1e-6  # TMS' notebook clamps feature norms here before dividing
GEOMETRIC_FRACTIONS = {"1": 1.0, "3/4": 3 / 4, "2/3": 2 / 3, "1/2": 1 / 2, "2/5": 2 / 5, "3/8": 3 / 8}


def feature_geometry(W: Tensor) -> dict[str, Tensor]:
    """Per feature (..., n): norm ‖W_i‖; superposition s_i = Σ_{j≠i} (Ŵ_i·W_j)²; dimensionality
    D_i = ‖W_i‖² / Σ_j (Ŵ_i·W_j)² (j = i included; 1 a dedicated dimension, 1/2 an antipodal pair, 0 not
    learned); and Scherlis et al.'s capacity C_i = (W_i·W_i)² / Σ_j (W_i·W_j)², the same quantity in other
    words (kept separate so a test can pin that they agree)."""
    gram = W.transpose(-1, -2) @ W  # (..., n, n): W_i·W_j
    sq_norm = gram.diagonal(dim1=-2, dim2=-1)
    norm = sq_norm.sqrt()
    proj = gram / norm.clamp(min=NORM_FLOOR).unsqueeze(-1)  # row i: Ŵ_i·W_j
    proj_sq = proj.pow(2)
    total = proj_sq.sum(-1)
    superposition = total - proj_sq.diagonal(dim1=-2, dim2=-1)
    dimensionality = torch.where(total > 0, sq_norm / total.clamp(min=1e-30), 0.0)
    gram_sq = gram.pow(2).sum(-1)
    capacity = torch.where(gram_sq > 0, sq_norm.pow(2) / gram_sq.clamp(min=1e-30), 0.0)
    return {"norm": norm, "superposition": superposition, "dimensionality": dimensionality, "capacity": capacity}


def dims_per_feature(W: Tensor) -> Tensor:
    """D* = m / ‖W‖_F², (...,): the hidden dimensions each learned feature gets (TMS)."""
    return W.shape[-2] / W.pow(2).sum((-2, -1))


def neuron_geometry(W: Tensor, low: float = 0.8, high: float = 1.2) -> dict[str, Tensor]:
    """For models whose hidden units are neurons (TMS' privileged basis). Per neuron (..., m): weight share
    max_i |W_ji| / Σ_i |W_ji| (1: one feature's weight only); per model (...,): the Lecomte et al. count of
    polysemantic neurons, those with at least two features' |W_ji| in [low, high]."""
    a = W.abs()
    share = a.max(-1).values / a.sum(-1).clamp(min=1e-30)
    strong = ((a >= low) & (a <= high)).sum(-1)  # (..., m)
    return {"weight_share": share, "lecomte_poly": (strong >= 2).sum(-1)}


REPRESENTED = 0.5  # ‖W_i‖ above this: feature i is represented (TMS: ≈ 1 represented, ≈ 0 not)


@torch.no_grad()
def measure_tied(model, eval_x: Tensor, importance: Tensor | None, chunk: int = 4096) -> tuple[dict, dict]:
    """Per-instance metrics (each (inst,)) and per-feature ones (each (inst, n)) of a batch of tied models
    (models.TiedModels) on an eval set x (samples, n), where the target is x itself.

    loss: E Σ_i I_i (x_i − x'_i)² (TMS' loss); gain: E‖x‖² − E‖x' − x‖², the bounds' L̃ measured on the same
    samples (its p·n·μ₂ term then cancels the eval set's own sampling noise); for the power model they differ
    only when I ≠ 1. Neuron metrics (Jermyn's #mono, Lecomte's count, weight share) for tms_hidden only, the
    one kind whose hidden units are neurons (a privileged basis)."""

    n_inst = model.n_inst
    loss = torch.zeros(n_inst, dtype=torch.float64, device=eval_x.device)
    err = torch.zeros(n_inst, dtype=torch.float64, device=eval_x.device)
    for start in range(0, len(eval_x), chunk):
        x = eval_x[start:start + chunk]
        _, y = model(x.expand(n_inst, *x.shape))
        sq = (y - x).pow(2)
        loss += (sq if importance is None else sq * importance).sum((-2, -1)).double()
        err += sq.sum((-2, -1)).double()
    loss, err = loss / len(eval_x), err / len(eval_x)
    energy = eval_x.double().pow(2).sum(-1).mean()
    W = model.W
    geo = feature_geometry(W)
    rep = geo["norm"] > REPRESENTED
    scalars = {
        "loss": loss.float(), "gain": (energy - err).float(),
        "features_learned": W.pow(2).sum((-2, -1)), "dims_per_feature": dims_per_feature(W),
        "sum_dimensionality": geo["dimensionality"].sum(-1), "n_represented": rep.sum(-1),
        "mean_superposition": torch.where(rep, geo["superposition"], 0).sum(-1) / rep.sum(-1),  # NaN: none
        "bias_mean": model.bias.mean(-1),
    }
    # Σ D_i ≤ m always (D_i ≤ the leverage score of W_i, and leverage scores sum to rank W ≤ m): checked.
    excess = scalars["sum_dimensionality"] - W.shape[-2]
    if (excess > 1e-3 * W.shape[-2]).any():
        raise ValueError(f"Σ D_i exceeds m = {W.shape[-2]} by {excess.max().item():.3g}: the geometry is wrong")
    if model.privileged:
        n = W.shape[-1]
        sfa = single_feature_activations(model, torch.eye(n, device=W.device))  # ReLU(W e_i): (inst, m, n)
        neurons = neuron_geometry(W)
        scalars |= {"n_mono": count_mono(sfa), "mono_per_neuron": count_mono(sfa) / W.shape[-2],
                    "lecomte_poly": neurons["lecomte_poly"], "weight_share_mean": neurons["weight_share"].mean(-1)}
    return scalars, {k: geo[k] for k in ("norm", "superposition", "dimensionality")}
