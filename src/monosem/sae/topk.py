"""TopK SAEs, swept over k (the latents each sample keeps), with the AuxK loss for dead latents.

- `topk` (Gao et al. 2024): f = ReLU(TopK_k(W_enc x' + b_enc)), loss ‖x − x̂‖² + α·AuxK, unit-norm decoder.
- `batchtopk` (Bussmann et al. 2024): in training the top k·B ReLU pre-activations over the whole batch; at
  inference a threshold θ, the running mean (rate 0.01) of the smallest activation kept; AuxK as topk.

AuxK = E_b‖e − ê‖² / E_b‖e − ē‖²: e = x − x̂ detached, ê the top-k_aux pre-activations of the dead latents
decoded without b_dec, ē the batch mean of e; α = 1/32. The normalisation by the residual's variance is the
references': OpenAI's `sparse_autoencoder/train.py` (`normalized_mse(auxk_recons, x − recons)`: mse over the
mse of predicting the batch mean) and saprmarks/dictionary_learning's `trainers/top_k.py`
(`get_auxiliary_loss`: l2_loss_aux / loss_denom, loss_denom = mean_b ‖e − mean_b e‖²), so the term's pull on
dead latents does not fade as the fit improves. 0 when the residual has no variance (as their nan_to_num).

Optimiser and init as OpenAI's and dictionary_learning's trainers: Adam β = (0.9, 0.999), b_dec (their
b_pre) at the geometric median of a sample of the data (Gao et al. §A.1; `geometric_median` in both).
Exported: topk as SAELens' "topk" with its k; batchtopk as a "jumprelu" at its inference threshold (as SAELens
converts it, `sae_lens/saes/batchtopk_sae.py`).

On the CPU, topk's main term trains through `sae.fused.TopKMSE` (numba kernels; tests pin it to autograd).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from monosem.sae.base import SAE, sq_err, stats
from monosem.sae.fused import TopKMSE

AUX_ALPHA = 1 / 32
THRESHOLD_RATE = 0.01


class TopKSAE(SAE):
    """Gao et al. 2024, with AuxK. `k` per instance (the buffer `k`, set by `set_knobs`; `loss` takes it as its
    sparsity knob like λ elsewhere); dead latents: not fired for `dead_after` steps."""

    name, saelens, style, knob = "topk", "topk", ("tab:green", "^"), "k"
    b_dec_init = "geometric_median"
    unit_norm = True

    def __init__(self, n_inst: int, n: int, m: int, k_aux: int | None = None):
        super().__init__(n_inst, n, m)
        self.k_aux = k_aux if k_aux is not None else max(1, n // 2)  # Appendix B.1's d_model/2
        self.register_buffer("k", torch.ones(n_inst, dtype=torch.long))

    @classmethod
    def check_knob(cls, value: float, latents: int) -> str | None:
        ok = value == int(value) and 1 <= value <= latents
        return None if ok else f"{value:g}: k must be an integer in [1, latents = {latents}]"

    def set_knobs(self, knobs: Tensor) -> None:
        self.k.copy_(knobs.long())

    @staticmethod
    def coefficient(knobs: Tensor, warm: float) -> Tensor:
        return knobs  # k is not warmed up

    def select(self, pre: Tensor, k: Tensor) -> Tensor:
        """ReLU of the k largest pre-activations of each sample (k per instance), others 0."""
        kmax = int(k.max())
        vals, idx = pre.topk(kmax, dim=-1)
        keep = torch.arange(kmax, device=pre.device) < k.view(-1, 1, 1)
        return torch.zeros_like(pre).scatter(-1, idx, torch.where(keep, F.relu(vals), 0.0))

    def encode(self, x: Tensor) -> Tensor:
        return self.select(self.pre(x), self.k)

    def aux_loss(self, x: Tensor, e: Tensor) -> Tensor:
        """α·E‖e − ê‖² / E‖e − ē‖² (module docstring). Only the dead latents' pre-activations are computed (each
        instance's dead ones first, padded to the most dead)."""
        dead = self.dead()  # (inst, m)
        n_dead = dead.sum(-1)
        width = int(n_dead.max())
        if width == 0:
            return torch.zeros(x.shape[0], device=x.device)
        lat = torch.sort(dead.to(torch.uint8), dim=-1, descending=True, stable=True).indices[:, :width]
        rows = lat.unsqueeze(-1).expand(-1, -1, x.shape[-1])
        pre = torch.baddbmm(self.b_enc.gather(1, lat).unsqueeze(1), x - self.b_dec.unsqueeze(1),
                            self.W_enc.gather(1, rows).transpose(1, 2))
        valid = torch.arange(width, device=x.device) < n_dead.unsqueeze(-1)
        vals, idx = torch.where(valid.unsqueeze(1), pre, float("-inf")).topk(min(self.k_aux, width), dim=-1)
        z = torch.zeros_like(pre).scatter(-1, idx, torch.where(torch.isfinite(vals), F.relu(vals), 0.0))
        e = e.detach()
        var = sq_err(e, e.mean(1, keepdim=True))
        err = sq_err(e, torch.bmm(z, self.W_dec.gather(1, rows)))
        return AUX_ALPHA * torch.where(var > 0, err / var.clamp(min=torch.finfo(var.dtype).tiny), 0.0)

    def loss(self, x: Tensor, k: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if self._use_fused(x) and type(self).select is TopKSAE.select:
            mse, resid, l0, fired = TopKMSE.apply(x, self.W_enc, self.b_enc, self.W_dec, self.b_dec, k.long())
            parts = {"l0": l0, "fired": fired}
            e = -resid
        else:
            f = self.select(self.pre(x), k.long())
            e = x - self.decode(f)
            mse = e.pow(2).sum(-1).mean(-1)
            parts = stats(f)
        aux = self.aux_loss(x, e)
        return mse + aux, {"mse": mse, "aux": aux} | parts

    def saelens_cfg(self, i: int) -> dict:
        return {"k": int(self.k[i])}


class BatchTopKSAE(TopKSAE):
    """Bussmann et al. 2024: in training the k·B largest ReLU pre-activations over the flattened batch; the
    inference threshold θ is the running mean (rate 0.01) of the smallest one kept."""

    name, saelens, style = "batchtopk", "jumprelu", ("tab:olive", "^")

    def __init__(self, n_inst: int, n: int, m: int, k_aux: int | None = None):
        super().__init__(n_inst, n, m, k_aux)
        self.register_buffer("theta", torch.full((n_inst,), float("nan")))

    def select(self, pre: Tensor, k: Tensor) -> Tensor:
        inst, batch, m = pre.shape
        flat = F.relu(pre).reshape(inst, batch * m)
        kmax = int(k.max()) * batch
        vals, idx = flat.topk(kmax, dim=-1)
        keep = torch.arange(kmax, device=pre.device) < (k * batch).view(-1, 1)
        out = torch.zeros_like(flat).scatter(-1, idx, torch.where(keep, vals, 0.0)).reshape(inst, batch, m)
        if self.training:
            with torch.no_grad():
                smallest = torch.where(keep, vals, float("inf")).min(-1).values
                smallest = torch.where(smallest > 0, smallest, torch.nan)  # only positive activations set θ
                upd = torch.where(torch.isnan(self.theta), smallest, torch.lerp(self.theta, smallest, THRESHOLD_RATE))
                self.theta.copy_(torch.where(torch.isnan(smallest), self.theta, upd))
        return out

    def encode(self, x: Tensor) -> Tensor:
        """Inference: a JumpReLU at the learned threshold (every latent above θ fires)."""
        pre = self.pre(x)
        theta = torch.nan_to_num(self.theta, nan=0.0).view(-1, 1, 1)
        return pre * (pre > theta).to(pre.dtype)

    def saelens_tensors(self, i: int) -> dict[str, Tensor]:
        m = self.W_dec.shape[1]
        return {"b_enc": self.b_enc[i], "threshold": torch.full((m,), float(torch.nan_to_num(self.theta[i], nan=0.0)))}

    def saelens_cfg(self, i: int) -> dict:
        return {}
