"""The toy models, many independent instances stacked on a leading instance axis.

Jermyn et al. 2022, §2 (Eqs. 4–6): x = P f, h = act(W1 x + b1), y = W2 h, with no output bias and no
output nonlinearity. Instance i has its own W1[i], b1[i], W2[i] and never sees another's.
Elhage et al. 2022's tied models of superposition and the power-activation autoencoder of the loss bounds
(Basu Roy Chowdhury & Weiner 2026): `TiedModels`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from monosem.worlds import generator


def solu(x: Tensor) -> Tensor:
    """The paper's "SoLU": x·exp(x), with no normalisation (not Anthropic's softmax SoLU)."""
    return x * torch.exp(x)


ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "solu": solu}  # gelu: the exact erf form, as nn.GELU


class ToyModels(nn.Module):
    """`n_inst` copies of Linear(m, k) → act → Linear(k, d_out, bias=False)."""

    privileged = True  # the hidden units are neurons (an activation applied per unit)

    def __init__(self, n_inst: int, d_in: int, n_neurons: int, d_out: int, activation: str = "relu"):
        super().__init__()
        self.activation = activation
        self.act = ACTIVATIONS[activation]
        self.W1 = nn.Parameter(torch.empty(n_inst, n_neurons, d_in))  # (inst, k, m)
        self.b1 = nn.Parameter(torch.empty(n_inst, n_neurons))  # (inst, k)
        self.W2 = nn.Parameter(torch.empty(n_inst, d_out, n_neurons))  # (inst, out, k)

    @property
    def n_inst(self) -> int:
        return self.W1.shape[0]

    @torch.no_grad()
    def init_instance(self, i: int, seed: int, bias_offset: float = 0.0) -> None:
        """PyTorch's default nn.Linear init with single-model fans, then b1 += bias_offset.

        kaiming_uniform(a=√5) gives weights U(±1/√fan_in); the bias is U(±1/√fan_in) too.
        """
        gen = generator(seed, "init")
        k, m = self.W1.shape[1:]
        uniform = lambda shape, bound: (torch.rand(shape, generator=gen) * 2 - 1) * bound  # noqa: E731
        self.W1[i] = uniform((k, m), 1 / math.sqrt(m))
        self.b1[i] = uniform((k,), 1 / math.sqrt(m)) + bias_offset
        self.W2[i] = uniform(self.W2.shape[1:], 1 / math.sqrt(k))

    @property
    def bias(self) -> Tensor:
        return self.b1

    def hidden(self, x: Tensor) -> Tensor:
        """x (inst, batch, m) → h (inst, batch, k)."""
        return self.act(torch.baddbmm(self.b1.unsqueeze(1), x, self.W1.transpose(1, 2)))

    def readout(self, h: Tensor) -> Tensor:
        """h (inst, batch, k) → y (inst, batch, out)."""
        return torch.bmm(h, self.W2.transpose(1, 2))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.hidden(x)
        return h, self.readout(h)

    @torch.no_grad()
    def loss_and_grads(self, x: Tensor, target: Tensor, l1: Tensor | None = None,
                       l1_out: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The paper's loss backpropagated by hand: (task loss per instance, hidden activations h).

        The gradient of Σ_inst [Σ(y − target)²/B + l1·Σ|h|/B + l1_out·Σ|y|/B] is written into each
        parameter's `.grad` (allocated if missing). The same math as autograd through `forward`, `task_loss`
        and `l1_penalty` (a test pins them equal), in about half the kernels: the five matmuls, the
        activation and its derivative, the residual and the bias gradient, with the 2/B folded into the
        matmuls' scale.
        """
        B = x.shape[1]
        pre = torch.baddbmm(self.b1.unsqueeze(1), x, self.W1.transpose(1, 2))  # (inst, B, k)
        relu = self.activation == "relu"
        h = pre.clamp_min_(0) if relu else self.act(pre)
        y = torch.bmm(h, self.W2.transpose(1, 2))  # (inst, B, out)
        # dL/dy = α·g with α = 2/B and g = y − target (+ l1_out·sign(y)/2)
        sign_y = y.sign() if l1_out is not None else None
        g = y.sub_(target)
        task = g.square().sum(-1).mean(-1)
        if sign_y is not None:
            g.add_(sign_y.mul_(l1_out[:, None, None] / 2))
        alpha = 2 / B
        grads = [p.grad if p.grad is not None else torch.empty_like(p) for p in (self.W1, self.b1, self.W2)]
        torch.baddbmm(grads[2], g.transpose(1, 2), h, beta=0, alpha=alpha, out=grads[2])  # (inst, out, k)
        dh = torch.bmm(g, self.W2)  # (inst, B, k), in units of α
        if l1 is not None:  # d(l1·|h|/B)/dh = α·(l1/2)·sign(h); for a ReLU sign(h) = 1 wherever h' ≠ 0
            c = (l1 / 2)[:, None, None]
            dh.add_(c if relu else h.sign().mul_(c))
        if relu:
            dpre = torch.ops.aten.threshold_backward(dh, h, 0)
        elif self.activation == "gelu":
            dpre = torch.ops.aten.gelu_backward(dh, pre)
        else:  # solu: d(x·e^x)/dx = (1 + x)·e^x
            dpre = dh.mul_(pre.exp().mul_(pre + 1))
        torch.baddbmm(grads[0], dpre.transpose(1, 2), x, beta=0, alpha=alpha, out=grads[0])  # (inst, k, m)
        torch.sum(dpre, 1, out=grads[1]).mul_(alpha)
        for p, grad in zip((self.W1, self.b1, self.W2), grads):
            p.grad = grad
        return task, h

    def instance_state(self, i: int) -> dict[str, Tensor]:
        return {"W1": self.W1[i].detach().clone(), "b1": self.b1[i].detach().clone(), "W2": self.W2[i].detach().clone()}

    @classmethod
    def from_states(cls, states: list[dict[str, Tensor]], activation: str) -> ToyModels:
        k, m = states[0]["W1"].shape
        model = cls(len(states), m, k, states[0]["W2"].shape[0], activation)
        with torch.no_grad():
            for name in ("W1", "b1", "W2"):
                getattr(model, name).copy_(torch.stack([s[name] for s in states]))
        return model


class TiedModels(nn.Module):
    """`n_inst` tied models with W (inst, m, n): column W_i is feature i's direction in the m hidden dims.

    - tms_relu (TMS "ReLU output"):      x' = ReLU(WᵀWx + b)
    - tms_hidden (TMS privileged basis): h = ReLU(Wx), x' = ReLU(Wᵀh + b), no hidden bias
    - power (the loss bounds' model):    x' = (WᵀWx)^k elementwise, odd k, no bias (b stays 0, a buffer)
    """

    def __init__(self, n_inst: int, n_features: int, n_hidden: int, kind: str, power: int = 3):
        super().__init__()
        self.kind, self.power = kind, power
        self.privileged = kind == "tms_hidden"  # only this kind applies a ReLU per hidden unit
        self.W = nn.Parameter(torch.empty(n_inst, n_hidden, n_features))
        b = torch.zeros(n_inst, n_features)
        if kind == "power":
            self.register_buffer("b", b)
        else:
            self.b = nn.Parameter(b)

    @property
    def n_inst(self) -> int:
        return self.W.shape[0]

    @property
    def bias(self) -> Tensor:
        return self.b

    @torch.no_grad()
    def init_instance(self, i: int, seed: int, bias_offset: float = 0.0) -> None:
        """Xavier-normal W with the single model's fans, std √(2/(n + m)), and b = 0, as TMS' notebook (a 3-D
        xavier_normal_ would take its fans from the instance axis too). bias_offset is 0 (checked in params)."""
        gen = generator(seed, "init")
        m, n = self.W.shape[1:]
        self.W[i] = torch.randn((m, n), generator=gen) * math.sqrt(2 / (n + m))
        self.b[i] = bias_offset

    def hidden(self, x: Tensor) -> Tensor:
        """x (inst, batch, n) → h = Wx (ReLU(Wx) for tms_hidden), (inst, batch, m)."""
        h = torch.bmm(x, self.W.transpose(1, 2))
        return F.relu(h) if self.kind == "tms_hidden" else h

    def readout(self, h: Tensor) -> Tensor:
        """h (inst, batch, m) → x' (inst, batch, n)."""
        if self.kind == "power":
            return torch.bmm(h, self.W).pow(self.power)
        return F.relu(torch.baddbmm(self.b.unsqueeze(1), h, self.W))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.hidden(x)
        return h, self.readout(h)

    def instance_state(self, i: int) -> dict[str, Tensor]:
        return {"W": self.W[i].detach().clone(), "b": self.b[i].detach().clone()}

    @classmethod
    def from_states(cls, states: list[dict[str, Tensor]], kind: str, power: int = 3) -> TiedModels:
        m, n = states[0]["W"].shape
        model = cls(len(states), n, m, kind, power)
        with torch.no_grad():
            model.W.copy_(torch.stack([s["W"] for s in states]))
            model.b.copy_(torch.stack([s["b"] for s in states]))
        return model


def l1_penalty(h: Tensor) -> Tensor:
    """Σ_neurons |h| / B per instance (the paper's `reg` term, on the hidden post-activation)."""
    return h.abs().sum(-1).mean(-1)
