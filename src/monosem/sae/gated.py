"""Gated SAEs (Rajamanoharan et al. 2024a): π_gate = W_gate x' + b_gate, W_mag = exp(r) ⊙ W_gate,
f = H(π_gate) ⊙ ReLU(W_mag x' + b_mag); loss ‖x − x̂(f)‖² + sparsity(ReLU(π_gate)) + ‖x − x̂_aux(ReLU(π_gate))‖².

- `gated` ("paper"): unit-norm decoder, plain L1, decoder (W_dec, b_dec) detached in the auxiliary term.
- `gated_weighted` (the author's variant): sparsity Σ ReLU(π_gate)_i‖d_i‖, no constraint, decoder not detached.

On the CPU both train through the hand-written loss of `sae.fused.GatedLoss` (tests pin it to autograd of this).

Optimiser: Adam β = (0, 0.999), the paper's (and the JumpReLU paper's, which follows it); b_dec starts at 0
(the paper does not initialise it from the data). Exported as SAELens' "gated" (W_gate as W_enc).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from monosem.sae.base import SAE, sq_err, stats
from monosem.sae.fused import GatedLoss


class GatedSAE(SAE):
    """W_gate is `W_enc`, b_gate `b_enc`; r and b_mag start at 0."""

    name, saelens, style = "gated", "gated", ("tab:red", "s")
    beta1 = 0.0
    weighted = False

    def __init__(self, n_inst: int, n: int, m: int):
        super().__init__(n_inst, n, m)
        self.unit_norm = not self.weighted
        self.r_mag = nn.Parameter(torch.zeros(n_inst, m))
        self.b_mag = nn.Parameter(torch.zeros(n_inst, m))

    def _paths(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x_c = x - self.b_dec.unsqueeze(1)
        gate = torch.baddbmm(self.b_enc.unsqueeze(1), x_c, self.W_enc.transpose(1, 2))
        mag = torch.baddbmm(self.b_mag.unsqueeze(1), x_c, (self.W_enc * self.r_mag.exp().unsqueeze(-1)).transpose(1, 2))
        return gate, mag

    def encode(self, x: Tensor) -> Tensor:
        gate, mag = self._paths(x)
        return (gate > 0).to(x.dtype) * F.relu(mag)

    def loss(self, x: Tensor, coeff: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if self._use_fused(x):
            loss, mse, sparsity, aux, l0, fired = GatedLoss.apply(x, self.W_enc, self.b_enc, self.r_mag, self.b_mag,
                                                                  self.W_dec, self.b_dec, coeff.to(x.dtype), self.weighted)
            return loss, {"mse": mse, "sparsity": sparsity, "aux": aux, "l0": l0, "fired": fired}
        gate, mag = self._paths(x)
        f = (gate > 0).to(x.dtype) * F.relu(mag)
        mse = sq_err(x, self.decode(f))
        active = F.relu(gate)
        if self.weighted:
            sparsity = (active * self.decoder_norms().unsqueeze(1)).sum(-1).mean(-1)
            aux_hat = self.decode(active)
        else:
            sparsity = active.sum(-1).mean(-1)
            aux_hat = torch.bmm(active, self.W_dec.detach()) + self.b_dec.detach().unsqueeze(1)
        aux = sq_err(x, aux_hat)
        return mse + coeff * sparsity + aux, {"mse": mse, "sparsity": sparsity, "aux": aux} | stats(f)

    def saelens_tensors(self, i: int) -> dict[str, Tensor]:
        return {"b_gate": self.b_enc[i], "r_mag": self.r_mag[i], "b_mag": self.b_mag[i]}


class GatedWeightedSAE(GatedSAE):
    """The norm-weighted variant: no decoder constraint, the decoder not detached in the auxiliary term."""

    name, style = "gated_weighted", ("tab:orange", "s")
    weighted = True
