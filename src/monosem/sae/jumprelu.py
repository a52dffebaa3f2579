"""JumpReLU SAEs (Rajamanoharan et al. 2024b): π = W_enc x' + b_enc, f = π ⊙ H(π − θ), loss ‖x − x̂‖² + λ Σ H(π − θ),
straight-through gradients to θ with the rectangle kernel of bandwidth ε; θ stored directly in fp32.

ε = 0.001 and θ₀ = 0.001 are the paper's, matched to inputs with E‖x‖² = 1 (`base.input_scale`). Optimiser:
Adam β = (0, 0.999), the paper's (and dictionary_learning's JumpReLU trainer, sae.md); b_dec starts at 0.
Exported as SAELens' "jumprelu" with its threshold.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from monosem.sae.base import SAE, sq_err, stats

JUMP_BANDWIDTH = 1e-3
JUMP_THETA0 = 1e-3


def _rect(u: Tensor) -> Tensor:
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


def _sum_to(t: Tensor, shape: torch.Size) -> Tensor:
    """Sum a broadcast gradient (inst, batch, m) back to θ's shape (inst, 1, m)."""
    return t.sum(1, keepdim=True) if t.shape != shape else t


class _JumpReLU(torch.autograd.Function):
    """f = π·H(π − θ); ∂f/∂π = H(π − θ); ∂f/∂θ = −(θ/ε)·K((π − θ)/ε), K the rectangle kernel."""

    @staticmethod
    def forward(ctx, pre, theta, eps):
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return pre * (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad):
        pre, theta = ctx.saved_tensors
        d_pre = grad * (pre > theta).to(pre.dtype)
        d_theta = grad * (-(theta / ctx.eps) * _rect((pre - theta) / ctx.eps))
        return d_pre, _sum_to(d_theta, theta.shape), None


class _Step(torch.autograd.Function):
    """H(π − θ); no gradient to π; ∂H/∂θ = −(1/ε)·K((π − θ)/ε)."""

    @staticmethod
    def forward(ctx, pre, theta, eps):
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad):
        pre, theta = ctx.saved_tensors
        d_theta = grad * (-(1 / ctx.eps) * _rect((pre - theta) / ctx.eps))
        return None, _sum_to(d_theta, theta.shape), None


class JumpReluSAE(SAE):
    """θ per latent, stored directly (not as log θ), initialised at 0.001."""

    name, saelens, style = "jumprelu", "jumprelu", ("tab:purple", "D")
    beta1 = 0.0
    unit_norm = True

    def __init__(self, n_inst: int, n: int, m: int, bandwidth: float = JUMP_BANDWIDTH):
        super().__init__(n_inst, n, m)
        self.bandwidth = bandwidth
        self.theta = nn.Parameter(torch.full((n_inst, 1, m), JUMP_THETA0))

    def encode(self, x: Tensor) -> Tensor:
        return _JumpReLU.apply(self.pre(x), self.theta, self.bandwidth)

    def loss(self, x: Tensor, coeff: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        pre = self.pre(x)
        f = _JumpReLU.apply(pre, self.theta, self.bandwidth)
        mse = sq_err(x, self.decode(f))
        l0 = _Step.apply(pre, self.theta, self.bandwidth).sum(-1).mean(-1)
        return mse + coeff * l0, {"mse": mse, "sparsity": l0} | stats(f)

    def saelens_tensors(self, i: int) -> dict[str, Tensor]:
        return {"b_enc": self.b_enc[i], "threshold": self.theta[i, 0]}
