"""The paper's optimiser, schedule and bias decay, applied independently per instance.

Jermyn et al. 2022 train with `torch_optimizer.Lamb(params, lr)` at its defaults, a
`CosineAnnealingLR(T_max=512)` stepped every iteration, and, for the first half of training only,
b1 ← b1·(1 − decay·lr) with the *base* learning rate after each step.

Both optimisers here keep every parameter (and gradient, and moment) of every instance in one flat buffer
(`FlatParams`), so a step is a handful of kernels over the whole buffer, whatever the number of tensors and
instances; only the per-(tensor, instance) norms and learning rates look at the blocks.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor


def cosine_factor(step: int, t_max: int) -> float:
    """lr(step) / lr(0) of CosineAnnealingLR(eta_min=0) stepped every iteration.

    PyTorch keeps following the cosine past T_max, so this is periodic with period 2·T_max and is 0
    at steps T_max, 3·T_max, ...
    """
    return (1 + math.cos(math.pi * step / t_max)) / 2


class FlatParams:
    """Tensors with a leading instance axis moved into one contiguous buffer, tensor after tensor, with their
    gradients in a second one: each parameter's `.data` and `.grad` become views of the buffers.

    Autograd accumulates into the `.grad` views in place (so `zero_grad` zeroes the buffer rather than
    dropping the views); a gradient assigned from outside is copied in by `adopt_grads`.
    """

    def __init__(self, params: list[Tensor]):
        self.params = params
        p0 = params[0]
        self.n_inst = p0.shape[0]
        self.data = torch.empty(sum(p.numel() for p in params), dtype=p0.dtype, device=p0.device)
        self.grad = torch.zeros_like(self.data)
        self.offsets, off = [], 0
        for p in params:
            assert p.shape[0] == self.n_inst, "every tensor has the same leading instance axis"
            self.offsets.append((off, p.numel()))
            self.data[off:off + p.numel()].copy_(p.detach().reshape(-1))
            off += p.numel()
        self.grads = self.views(self.grad)
        for p, d, g in zip(params, self.views(self.data), self.grads):
            p.data, p.grad = d, g

    def views(self, flat: Tensor) -> list[Tensor]:
        """`flat` (shaped like the buffer) cut into tensors shaped like the parameters."""
        return [flat[o:o + n].view(p.shape) for (o, n), p in zip(self.offsets, self.params)]

    def blocks(self, flat: Tensor) -> list[Tensor]:
        """`flat` cut into one (inst, numel per instance) block per parameter."""
        return [flat[o:o + n].view(self.n_inst, -1) for o, n in self.offsets]

    def norms(self, flat: Tensor) -> Tensor:
        """‖·‖ of every (tensor, instance) of `flat`: (tensors, inst)."""
        return torch.stack([b.norm(dim=1) for b in self.blocks(flat)])

    def adopt_grads(self) -> None:
        for p, g in zip(self.params, self.grads):
            if p.grad is None:
                g.zero_()
            elif p.grad.data_ptr() != g.data_ptr():
                g.copy_(p.grad)
            p.grad = g

    def zero_grad(self) -> None:
        self.grad.zero_()

    def scale_blocks(self, flat: Tensor, factor: Tensor, by: Tensor, sign: float = -1.0) -> None:
        """flat_block ← flat_block + sign·factor[t, i]·by_block, per (tensor t, instance i)."""
        for blk, u, f in zip(self.blocks(flat), self.blocks(by), factor):
            blk.addcmul_(u, f[:, None], value=sign)


class _Batched(torch.optim.Optimizer):
    """Shared machinery: the flat buffers, moments that live beside them, checkpoint tensors."""

    moments = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, defaults: dict):
        super().__init__(params, defaults)
        assert len(self.param_groups) == 1, "one parameter group: every tensor is trained alike"
        self.flat = FlatParams(self.param_groups[0]["params"])
        self.buffers = {k: torch.zeros_like(self.flat.data) for k in self.moments}
        self.t = 0  # steps taken
        for p, *views in zip(self.flat.params, *(self.flat.views(b) for b in self.buffers.values())):
            self.state[p] = dict(zip(self.moments, views))  # views, for anything that inspects the state

    def zero_grad(self, set_to_none: bool = False) -> None:
        self.flat.zero_grad()  # the gradient views stay: autograd accumulates into them

    def state_tensors(self) -> dict[str, Tensor]:
        return dict(self.buffers) | {"step": torch.tensor(self.t)}

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        for k, buf in self.buffers.items():
            buf.copy_(tensors[k])
        self.t = int(tensors["step"])


class BatchedLamb(_Batched):
    """`torch_optimizer.Lamb` (betas 0.9/0.999, eps 1e-6, no weight decay, no bias correction),
    with every parameter's leading axis an independent instance.

    The trust ratio clamp(‖p‖, 0, 10) / ‖adam_step‖ (1 where either norm is 0) uses per-(tensor, instance)
    norms, and `lr` is a tensor with one learning rate per instance, so one step here equals one step of the
    reference optimiser on each instance alone. `step(lr_factor=...)` scales every rate (the schedule).
    """

    def __init__(self, params, lr: Tensor, betas=(0.9, 0.999), eps: float = 1e-6, clamp_value: float = 10.0,
                 fused: bool | None = None):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, clamp_value=clamp_value))
        flat = self.flat
        # On the CPU one numba pass per block (toy.lamb_kernel); elsewhere torch's ops, which a CUDA graph captures.
        # The two agree to float rounding (the norms' summation order differs); tests pin both to the reference.
        self.fused = flat.data.device.type == "cpu" and flat.data.dtype == torch.float32 if fused is None else fused
        if self.fused:
            per = [n // flat.n_inst for _, n in flat.offsets]
            self._starts = torch.tensor([o + i * p for (o, _), p in zip(flat.offsets, per) for i in range(flat.n_inst)])
            self._lens = torch.tensor([p for p in per for _ in range(flat.n_inst)])
            self._scratch = torch.empty_like(flat.data)

    @torch.no_grad()
    def step(self, closure=None, lr_factor: float = 1.0):
        group, flat = self.param_groups[0], self.flat
        beta1, beta2 = group["betas"]
        flat.adopt_grads()
        g, m, v = flat.grad, self.buffers["exp_avg"], self.buffers["exp_avg_sq"]
        if self.fused:
            from monosem.toy.lamb_kernel import lamb_blocks  # numba: imported when a study first trains on the CPU

            lrs = (group["lr"] * lr_factor).float().repeat(len(flat.params))  # per block: tensor-major, as _starts
            f32 = np.float32
            lamb_blocks(flat.data.numpy(), g.numpy(), m.numpy(), v.numpy(), self._scratch.numpy(),
                        self._starts.numpy(), self._lens.numpy(), lrs.numpy(), f32(beta1), f32(beta2),
                        f32(group["eps"]), f32(group["clamp_value"]))
            self.t += 1
            return
        m.mul_(beta1).add_(g, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        adam_step = v.sqrt().add_(group["eps"])
        torch.div(m, adam_step, out=adam_step)
        w_norm = flat.norms(flat.data).clamp_(0, group["clamp_value"])  # (tensors, inst)
        a_norm = flat.norms(adam_step)
        trust = torch.where((w_norm == 0) | (a_norm == 0), 1.0, w_norm / a_norm)
        flat.scale_blocks(flat.data, trust * (group["lr"] * lr_factor), adam_step)
        self.t += 1


def bias_decay_factor(decay: Tensor, base_lr: Tensor) -> Tensor:
    """1 − decay·lr per instance, with the base (unscheduled) learning rate: b ← b·factor after each step."""
    return 1 - decay * base_lr


@torch.no_grad()
def decay_bias(bias: Tensor, decay: Tensor, base_lr: Tensor) -> None:
    """b ← b·(1 − decay·lr) per instance."""
    bias.mul_(bias_decay_factor(decay, base_lr).view(-1, *([1] * (bias.dim() - 1))))


class BatchedAdamW(_Batched):
    """`torch.optim.AdamW` (betas 0.9/0.999, eps 1e-8, bias correction, decoupled weight decay
    p ← p·(1 − lr·wd)), with a learning rate and a weight decay per instance (the leading axis): TMS'
    optimiser (its notebook: AdamW, lr 1e-3, torch's default weight decay 0.01, constant schedule)."""

    def __init__(self, params, lr: Tensor, weight_decay: Tensor, betas=(0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, betas=betas, eps=eps))

    @torch.no_grad()
    def step(self, closure=None, lr_factor: float = 1.0):
        group, flat = self.param_groups[0], self.flat
        beta1, beta2 = group["betas"]
        flat.adopt_grads()
        self.t += 1
        g, m, v = flat.grad, self.buffers["exp_avg"], self.buffers["exp_avg_sq"]
        lr = group["lr"] * lr_factor  # (inst,)
        ones = torch.ones(len(flat.params), 1, dtype=lr.dtype, device=lr.device)
        flat.scale_blocks(flat.data, ones * (lr * group["weight_decay"]), flat.data)  # p ← p − lr·wd·p
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        denom = (v / (1 - beta2 ** self.t)).sqrt_().add_(group["eps"])
        torch.div(m, denom, out=denom)
        flat.scale_blocks(flat.data, ones * (lr / (1 - beta1 ** self.t)), denom)
