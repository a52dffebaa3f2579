"""The paper's optimiser, schedule and bias decay, applied independently per instance.

Jermyn et al. 2022 train with `torch_optimizer.Lamb(params, lr)` at its defaults, a
`CosineAnnealingLR(T_max=512)` stepped every iteration, and, for the first half of training only,
b1 ← b1·(1 − decay·lr) with the *base* learning rate after each step.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def cosine_factor(step: int, t_max: int) -> float:
    """lr(step) / lr(0) of CosineAnnealingLR(eta_min=0) stepped every iteration.

    PyTorch keeps following the cosine past T_max, so this is periodic with period 2·T_max and is 0
    at steps T_max, 3·T_max, ...
    """
    return (1 + math.cos(math.pi * step / t_max)) / 2


def _per_instance(x: Tensor, like: Tensor) -> Tensor:
    return x.view(-1, *([1] * (like.dim() - 1)))


class BatchedLamb(torch.optim.Optimizer):
    """`torch_optimizer.Lamb` (betas 0.9/0.999, eps 1e-6, no weight decay, no bias correction),
    with every parameter's leading axis an independent instance.

    The trust ratio clamp(‖p‖, 0, 10) / ‖adam_step‖ (1 where either norm is 0) uses per-instance norms,
    and `lr` is a tensor with one learning rate per instance, so one step here equals one step of the
    reference optimiser on each instance alone.
    """

    def __init__(self, params, lr: Tensor, betas=(0.9, 0.999), eps: float = 1e-6, clamp_value: float = 10.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, clamp_value=clamp_value))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                adam_step = m / v.sqrt().add_(group["eps"])
                w_norm = p.flatten(1).norm(dim=1).clamp(0, group["clamp_value"])  # (inst,)
                a_norm = adam_step.flatten(1).norm(dim=1)
                trust = torch.where((w_norm == 0) | (a_norm == 0), torch.ones_like(w_norm), w_norm / a_norm)
                p.sub_(adam_step * _per_instance(group["lr"] * trust, p))


@torch.no_grad()
def decay_bias(bias: Tensor, decay: Tensor, base_lr: Tensor) -> None:
    """b ← b·(1 − decay·lr) per instance, with the base (unscheduled) learning rate."""
    bias.mul_(_per_instance(1 - decay * base_lr, bias))


class BatchedAdamW(torch.optim.Optimizer):
    """`torch.optim.AdamW` (betas 0.9/0.999, eps 1e-8, bias correction, decoupled weight decay
    p ← p·(1 − lr·wd)), with a learning rate and a weight decay per instance (the leading axis): TMS'
    optimiser (its notebook: AdamW, lr 1e-3, torch's default weight decay 0.01, constant schedule)."""

    def __init__(self, params, lr: Tensor, weight_decay: Tensor, betas=(0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, betas=betas, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros(())
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = float(state["step"])
                m, v = state["exp_avg"], state["exp_avg_sq"]
                lr = _per_instance(group["lr"], p)
                p.mul_(1 - lr * _per_instance(group["weight_decay"], p))
                m.lerp_(p.grad, 1 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                denom = (v / (1 - beta2 ** t)).sqrt_().add_(group["eps"])
                p.sub_(lr / (1 - beta1 ** t) * m / denom)
