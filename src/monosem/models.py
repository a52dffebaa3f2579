"""The paper's toy model, many independent instances stacked on a leading instance axis.

Jermyn et al. 2022, §2 (Eqs. 4–6): x = P f, h = act(W1 x + b1), y = W2 h, with no output bias and no
output nonlinearity. Instance i has its own W1[i], b1[i], W2[i] and never sees another's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .worlds import generator


def solu(x: Tensor) -> Tensor:
    """The paper's "SoLU": x·exp(x), with no normalisation (not Anthropic's softmax SoLU)."""
    return x * torch.exp(x)


ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "solu": solu}  # gelu: the exact erf form, as nn.GELU


class ToyModels(nn.Module):
    """`n_inst` copies of Linear(m, k) → act → Linear(k, d_out, bias=False)."""

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

    def hidden(self, x: Tensor) -> Tensor:
        """x (inst, batch, m) → h (inst, batch, k)."""
        return self.act(torch.baddbmm(self.b1.unsqueeze(1), x, self.W1.transpose(1, 2)))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.hidden(x)
        return h, torch.bmm(h, self.W2.transpose(1, 2))  # (inst, batch, out)

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


def task_loss(y: Tensor, target: Tensor) -> Tensor:
    """Σ_outputs (y − target)² / B per instance: summed over outputs, averaged over the batch."""
    return (y - target).pow(2).sum(-1).mean(-1)


def l1_penalty(h: Tensor) -> Tensor:
    """Σ_neurons |h| / B per instance (the paper's `reg` term, on the hidden post-activation)."""
    return h.abs().sum(-1).mean(-1)
