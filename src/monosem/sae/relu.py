"""ReLU SAEs with an L1 penalty.

- `relu`: Bricken et al. 2023 ("Towards Monosemanticity"): f = ReLU(W_enc x' + b_enc), loss ‖x − x̂‖² + λ‖f‖₁,
  decoder rows unit norm (`constrain`: gradients projected off the rows, rows renormalised after each step);
  b_dec initialised at the geometric median of the data (the paper; sae.md §ReLU), Adam β1 = 0.9.
- `relu_weighted`: Anthropic's April 2024 update: loss ‖x − x̂‖² + λ Σ_i f_i‖d_i‖, no norm constraint; biases
  initialised at 0 and Adam β = (0.9, 0.999) (the update's training recipe).

On the CPU both train through the hand-written loss of `sae.fused.ReluLoss` (tests pin it to autograd of this).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from monosem.sae.base import SAE, sq_err, stats
from monosem.sae.fused import ReluLoss


class ReluSAE(SAE):
    """Bricken et al. 2023 (unit-norm decoder, plain L1)."""

    name, saelens, style = "relu", "standard", ("tab:blue", "o")
    b_dec_init = "geometric_median"
    weighted = False

    def __init__(self, n_inst: int, n: int, m: int):
        super().__init__(n_inst, n, m)
        self.unit_norm = not self.weighted

    def encode(self, x: Tensor) -> Tensor:
        return F.relu(self.pre(x))

    def loss(self, x: Tensor, coeff: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if self._use_fused(x):
            loss, mse, sparsity, l0, fired = ReluLoss.apply(x, self.W_enc, self.b_enc, self.W_dec, self.b_dec,
                                                            coeff.to(x.dtype), self.weighted)
            return loss, {"mse": mse, "sparsity": sparsity, "l0": l0, "fired": fired}
        f, x_hat = self(x)
        mse = sq_err(x, x_hat)
        mass = f * self.decoder_norms().unsqueeze(1) if self.weighted else f
        sparsity = mass.sum(-1).mean(-1)
        return mse + coeff * sparsity, {"mse": mse, "sparsity": sparsity} | stats(f)


class ReluWeightedSAE(ReluSAE):
    """The April 2024 update: the L1 penalty weighted by the decoder norms, no norm constraint, b_dec at 0."""

    name, style = "relu_weighted", ("tab:cyan", "o")
    b_dec_init = "zero"
    weighted = True
