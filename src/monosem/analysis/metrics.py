"""Monosemanticity metrics as pure tensor functions (Jermyn et al. 2022, §4; authors' `model_helper.py`)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from monosem.worlds import task_loss

MONO_THRESHOLD = 0.999  # the authors' r_threshold
POSITIVE_BIAS = 0.05  # `plot_bias` prints the count of neurons with bias above this


@torch.no_grad()
def single_feature_activations(model, probes: Tensor) -> Tensor:
    """sfa[i, n, j]: activation of neuron n of instance i when only feature j is on, at amplitude 1.

    probes: (N, m), the rows P e_j, or (inst, N, m), each instance's own. Returns (inst, k, N).
    """
    h = model.hidden(probes if probes.dim() == 3 else probes.expand(model.n_inst, *probes.shape))  # (inst, N, k)
    return h.transpose(1, 2)


def frac_mono(sfa: Tensor) -> Tensor:
    """max_j sfa[n, j] / (1e-10 + Σ_j sfa[n, j]) per neuron, shape (..., k).

    A dead neuron scores 0. With GeLU or SoLU, small negative activations enter the sum, as in the
    authors' code, so treat the score with care there.
    """
    return sfa.max(-1).values / (1e-10 + sfa.sum(-1))


def neuron_classes(sfa: Tensor, threshold: float = MONO_THRESHOLD) -> Tensor:
    """0 dead (no single feature activates it), 1 monosemantic (frac_mono > threshold), 2 polysemantic."""
    dead = sfa.max(-1).values <= 0
    mono = frac_mono(sfa) > threshold
    return torch.where(dead, 0, torch.where(mono, 1, 2))


def count_mono(sfa: Tensor, threshold: float = MONO_THRESHOLD) -> Tensor:
    """Number of monosemantic neurons per instance, shape (inst,)."""
    return (frac_mono(sfa) > threshold).sum(-1)


@torch.no_grad()
def measure(model, probes: Tensor, eval_x: Tensor, eval_target: Tensor) -> dict[str, Tensor]:
    """Per-instance metrics of a batch of models on the eval set and the probes; each value (inst,)."""
    sfa = single_feature_activations(model, probes)  # (inst, k, N)
    n_features, k = sfa.shape[2], sfa.shape[1]
    cls = neuron_classes(sfa)
    mono, poly, dead = cls == 1, cls == 2, cls == 0
    best_feature = sfa.argmax(-1)  # (inst, k)
    hits = torch.zeros(sfa.shape[0], n_features, device=sfa.device).scatter_add_(1, best_feature, mono.float())
    covered = (hits > 0).sum(-1)  # features with at least one monosemantic neuron
    b = model.b1
    mean_where = lambda mask: torch.where(mask, b, 0).sum(-1) / mask.sum(-1)  # NaN when empty  # noqa: E731
    loss = _eval_loss(model, eval_x, eval_target)
    return {
        "loss": loss,
        "n_mono": mono.sum(-1),
        "n_poly": poly.sum(-1),
        "n_dead": dead.sum(-1),
        "mono_per_feature": mono.sum(-1) / n_features,
        "mono_per_neuron": mono.sum(-1) / k,
        "features_covered": covered / n_features,
        # Sensitivity of the paper's 0.999 cut: the same count at 0.99 (reported, never used by claims).
        "mono_per_feature_at_0.99": count_mono(sfa, 0.99) / n_features,
        "mean_frac_mono": frac_mono(sfa).mean(-1),
        "bias_mean": b.mean(-1),
        "bias_mean_mono": mean_where(mono),
        "bias_mean_poly": mean_where(poly),
        "bias_mean_live": mean_where(~dead),
        "n_bias_positive": (b > POSITIVE_BIAS).sum(-1),
    }


@torch.no_grad()
def noise_activation_change(model, probes: Tensor, eval_x: Tensor, sigma: Tensor,
                            gen: torch.Generator) -> dict[str, Tensor]:
    """How much Gaussian input noise of std σ (per instance) moves the monosemantic and the polysemantic
    neurons' activations on the eval set: per class, ‖h(x + σz) − h(x)‖ / ‖h(x)‖ over all its neurons and
    samples (Frobenius norms; one relative change per class, so a rarely active neuron does not dominate).

    Tests the prediction from the paper's discussion that low noise "would change the polysemantic
    activations, but not the monosemantic ones". NaN where σ = 0 or the class is empty. Each (inst,)
    """
    cls = neuron_classes(single_feature_activations(model, probes))  # (inst, k)
    x = eval_x.expand(model.n_inst, *eval_x.shape)
    z = torch.randn(eval_x.shape, generator=gen, device=gen.device).to(eval_x.device)  # one draw on every device
    h, h_noisy = model.hidden(x), model.hidden(x + sigma[:, None, None] * z)
    out = {}
    for name, c in (("mono", 1), ("poly", 2)):
        mask = (cls == c)[:, None, :]  # (inst, 1, k)
        moved = torch.where(mask, h_noisy - h, 0).pow(2).sum((1, 2)).sqrt()
        size = torch.where(mask, h, 0).pow(2).sum((1, 2)).sqrt()
        ok = (sigma > 0) & (size > 0)
        out[f"noise_change_{name}"] = torch.where(ok, moved / size.clamp(min=1e-30), float("nan"))
    return out


def monosemantic_scale(h: Tensor, mean: Tensor, var: Tensor, q: float = 0.99) -> Tensor:
    """Per-neuron monosemantic scale from Wang et al. 2023: φ = (z − z̄)²/S² per sample, with z̄ and S² the
    mean and unbiased variance of the neuron's outputs seen in training (Welford, tracked by the trainer).

    h: (..., samples, k) activations on held-out samples; mean, var: (..., k). The paper scores single
    samples; to rank neurons we take the q-quantile of φ over the samples (our choice: a monosemantic
    neuron's rare spikes stand far from its history, a dense neuron's do not; E[φ] itself is ≈ 1 for every
    neuron). Neurons with zero training variance score 0.
    """
    var = var.unsqueeze(-2)
    phi = torch.where(var > 0, (h - mean.unsqueeze(-2)).pow(2) / var.clamp(min=1e-30), torch.zeros_like(h))
    rank = max(1, math.ceil(q * h.shape[-2]))  # kthvalue, not quantile: no size limit, no interpolation
    return phi.kthvalue(rank, dim=-2).values


def spearman(a: Tensor, b: Tensor) -> float:
    """Spearman rank correlation of two 1-D tensors (average ranks for ties), as scipy.stats.spearmanr."""
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    ra, rb = average_ranks(a), average_ranks(b)
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


def average_ranks(x: Tensor) -> Tensor:
    """Ranks 1..n of a 1-D tensor, tied values sharing the mean of their ranks (scipy's rankdata default)."""
    _, inverse, counts = torch.unique(x, return_inverse=True, return_counts=True)  # unique values sorted
    last = counts.cumsum(0).double()  # rank of each value's last occurrence
    return (last - (counts - 1) / 2)[inverse]


@torch.no_grad()
def _eval_loss(model, eval_x: Tensor, eval_target: Tensor, chunk: int = 4096) -> Tensor:
    total = torch.zeros(model.n_inst, dtype=torch.float64, device=eval_x.device)
    for start in range(0, len(eval_x), chunk):
        x, t = eval_x[start:start + chunk], eval_target[start:start + chunk]
        _, y = model(x.expand(model.n_inst, *x.shape))
        total += task_loss(y, t).double() * len(x)
    return (total / len(eval_x)).float()
