"""Sparse autoencoders, each architecture a small class with its paper's loss written plainly, batched over a
leading instance axis (one SAE per instance: a sweep of λ or k and seeds trains in one module).

Notation as the brief (`sae.md`): x ∈ R^n, m latents, decoder atoms d_i = W_dec[i] (rows), x' = x − b_dec,
x̂ = f W_dec + b_dec. Shapes: x (inst, batch, n), f (inst, batch, m), W_enc and W_dec (inst, m, n).

One input convention for every architecture (documented deviation where a paper differs): the inputs are
scaled so that E‖x‖² = 1 before training (`input_scale`), b_dec is subtracted before encoding (SAELens'
`apply_b_dec_to_input`; the JumpReLU paper encodes x itself, an affine reparametrisation of b_enc), and the
reconstruction loss is the squared error summed over the n dims, averaged over the batch. JumpReLU's
bandwidth ε = 0.001 is matched to that scale.

- `relu`: Bricken et al. 2023: f = ReLU(W_enc x' + b_enc), loss ‖x − x̂‖² + λ‖f‖₁, decoder rows unit norm
  (`constrain`: gradients projected off the rows, rows renormalised after each step).
- `relu_weighted`: Anthropic's April 2024 update: loss ‖x − x̂‖² + λ Σ_i f_i‖d_i‖, no norm constraint.
- `gated` (Rajamanoharan et al. 2024a): π_gate = W_gate x' + b_gate, W_mag = exp(r) ⊙ W_gate,
  f = H(π_gate) ⊙ ReLU(W_mag x' + b_mag); loss ‖x − x̂(f)‖² + sparsity(ReLU(π_gate)) + ‖x − x̂_aux(ReLU(π_gate))‖².
  mode "paper": unit-norm decoder, plain L1, decoder (W_dec, b_dec) detached in the auxiliary term;
  mode "weighted": sparsity Σ ReLU(π_gate)_i‖d_i‖, no constraint, decoder not detached (the author's variant).
- `topk` (Gao et al. 2024): f = ReLU(TopK_k(W_enc x' + b_enc)), loss ‖x − x̂‖² + α‖e − ê‖², e = x − x̂ detached,
  ê = the top-k_aux pre-activations of the dead latents decoded without b_dec; α = 1/32; unit-norm decoder.
- `jumprelu` (Rajamanoharan et al. 2024b): π = W_enc x' + b_enc, f = π ⊙ H(π − θ), loss ‖x − x̂‖² + λ Σ H(π − θ),
  straight-through gradients to θ with the rectangle kernel of bandwidth ε; θ stored directly in fp32.
- `batchtopk` (Bussmann et al. 2024): in training, the top k·B ReLU pre-activations over the whole batch;
  at inference a threshold θ, the running mean (rate 0.01) of the smallest activation kept; AuxK as topk.

On the CPU, `relu`, `relu_weighted` and `topk` train through the hand-written losses of `sae_fused` (the same
math with its gradients computed directly; tests pin them to autograd of the losses written here).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .sae_fused import ReluLoss, TopKMSE
from .worlds import generator

AUX_ALPHA = 1 / 32
JUMP_BANDWIDTH = 1e-3
JUMP_THETA0 = 1e-3
THRESHOLD_RATE = 0.01


def input_scale(x: Tensor) -> float:
    """The factor s with E‖s·x‖² = 1 (the one normalisation convention; multiply inputs by it, divide outputs)."""
    return float(1 / x.pow(2).sum(-1).mean().sqrt())


def _rect(u: Tensor) -> Tensor:
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


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


def _sum_to(t: Tensor, shape: torch.Size) -> Tensor:
    """Sum a broadcast gradient (inst, batch, m) back to θ's shape (inst, 1, m)."""
    return t.sum(1, keepdim=True) if t.shape != shape else t


def sq_err(x: Tensor, x_hat: Tensor) -> Tensor:
    """‖x − x̂‖² summed over dims, averaged over the batch: (inst,)."""
    return (x - x_hat).pow(2).sum(-1).mean(-1)


def stats(f: Tensor) -> dict[str, Tensor]:
    """What the trainer tracks of a batch's latents f (inst, batch, m): l0 (inst,) and which latents fired (inst, m)."""
    on = f != 0
    return {"l0": on.sum(-1).float().mean(-1), "fired": on.any(1)}


class SAE(nn.Module):
    """The parameters every architecture shares, and the decoder."""

    unit_norm = False  # decoder rows kept at unit norm (constrain after each step)
    fused = True  # train with the hand-written CPU loss where an architecture has one (same math; tests compare)

    def __init__(self, n_inst: int, n: int, m: int):
        super().__init__()
        self.W_enc = nn.Parameter(torch.empty(n_inst, m, n))
        self.b_enc = nn.Parameter(torch.zeros(n_inst, m))
        self.W_dec = nn.Parameter(torch.empty(n_inst, m, n))
        self.b_dec = nn.Parameter(torch.zeros(n_inst, n))

    @torch.no_grad()
    def init_instance(self, i: int, seed: int) -> None:
        """Decoder rows random directions (norm 1 when constrained, else 0.1 as the April update), W_enc = W_decᵀ,
        biases 0; single-instance draws, so instance i equals an SAE trained alone with this seed."""
        m, n = self.W_dec.shape[1:]
        d = torch.randn((m, n), generator=generator(seed, "sae-init"))
        d = d / d.norm(dim=-1, keepdim=True) * (1.0 if self.unit_norm else 0.1)
        self.W_dec[i] = d
        self.W_enc[i] = d

    def decode(self, f: Tensor, bias: bool = True) -> Tensor:
        out = torch.bmm(f, self.W_dec)
        return out + self.b_dec.unsqueeze(1) if bias else out

    def pre(self, x: Tensor) -> Tensor:
        return torch.baddbmm(self.b_enc.unsqueeze(1), x - self.b_dec.unsqueeze(1), self.W_enc.transpose(1, 2))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        f = self.encode(x)
        return f, self.decode(f)

    @torch.no_grad()
    def constrain(self) -> None:
        """After an optimiser step: decoder rows back to unit norm (architectures with the constraint)."""
        if self.unit_norm:
            self.W_dec.div_(self.W_dec.norm(dim=-1, keepdim=True).clamp(min=1e-12))

    @torch.no_grad()
    def project_grad(self) -> None:
        """Before the step: remove the gradient component along each unit-norm decoder row."""
        if self.unit_norm and self.W_dec.grad is not None:
            g, d = self.W_dec.grad, self.W_dec
            g.addcmul_(torch.linalg.vecdot(g, d).unsqueeze(-1), d, value=-1)

    def decoder_norms(self) -> Tensor:
        return self.W_dec.norm(dim=-1)  # (inst, m)

    def _use_fused(self, x: Tensor) -> bool:
        return self.fused and x.device.type == "cpu" and x.dtype == torch.float32 and torch.is_grad_enabled()


class ReluSAE(SAE):
    """Bricken et al. 2023 (`weighted=False`, unit-norm decoder) or the April 2024 update (`weighted=True`)."""

    def __init__(self, n_inst: int, n: int, m: int, weighted: bool = False):
        super().__init__(n_inst, n, m)
        self.weighted, self.unit_norm = weighted, not weighted

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


class GatedSAE(SAE):
    """Rajamanoharan et al. 2024a. W_gate is `W_enc`, b_gate `b_enc`; r and b_mag start at 0."""

    def __init__(self, n_inst: int, n: int, m: int, mode: str = "paper"):
        super().__init__(n_inst, n, m)
        self.mode, self.unit_norm = mode, mode == "paper"
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
        gate, mag = self._paths(x)
        f = (gate > 0).to(x.dtype) * F.relu(mag)
        mse = sq_err(x, self.decode(f))
        active = F.relu(gate)
        if self.mode == "paper":
            sparsity = active.sum(-1).mean(-1)
            aux_hat = torch.bmm(active, self.W_dec.detach()) + self.b_dec.detach().unsqueeze(1)
        else:
            sparsity = (active * self.decoder_norms().unsqueeze(1)).sum(-1).mean(-1)
            aux_hat = self.decode(active)
        aux = sq_err(x, aux_hat)
        return mse + coeff * sparsity + aux, {"mse": mse, "sparsity": sparsity, "aux": aux} | stats(f)


class TopKSAE(SAE):
    """Gao et al. 2024, with AuxK. `k` per instance (the buffer `k`, set by the trainer; `loss` takes it as its
    sparsity knob like λ elsewhere); dead latents: not fired for `dead_after` steps."""

    unit_norm = True

    def __init__(self, n_inst: int, n: int, m: int, k_aux: int | None = None, dead_after: int = 1000):
        super().__init__(n_inst, n, m)
        self.k_aux = k_aux if k_aux is not None else max(1, n // 2)  # Appendix B.1's d_model/2
        self.dead_after = dead_after
        self.register_buffer("since_fired", torch.zeros(n_inst, m, dtype=torch.long))
        self.register_buffer("k", torch.ones(n_inst, dtype=torch.long))

    def select(self, pre: Tensor, k: Tensor) -> Tensor:
        """ReLU of the k largest pre-activations of each sample (k per instance), others 0."""
        kmax = int(k.max())
        vals, idx = pre.topk(kmax, dim=-1)
        keep = torch.arange(kmax, device=pre.device) < k.view(-1, 1, 1)
        return torch.zeros_like(pre).scatter(-1, idx, torch.where(keep, F.relu(vals), 0.0))

    def encode(self, x: Tensor) -> Tensor:
        return self.select(self.pre(x), self.k)

    def aux_loss(self, x: Tensor, e: Tensor) -> Tensor:
        """α·‖e − ê‖²: e = x − x̂ (detached), ê the top-k_aux dead pre-activations decoded without b_dec. Only the
        dead latents' pre-activations are computed (each instance's dead ones first, padded to the most dead)."""
        dead = self.since_fired >= self.dead_after  # (inst, m)
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
        return AUX_ALPHA * sq_err(e.detach(), torch.bmm(z, self.W_dec.gather(1, rows)))

    @torch.no_grad()
    def track(self, fired: Tensor) -> None:
        self.since_fired.copy_(torch.where(fired, 0, self.since_fired + 1))

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
        self.track(parts["fired"])
        return mse + aux, {"mse": mse, "aux": aux} | parts


class BatchTopKSAE(TopKSAE):
    """Bussmann et al. 2024: in training the k·B largest ReLU pre-activations over the flattened batch; the
    inference threshold θ is the running mean (rate 0.01) of the smallest one kept."""

    def __init__(self, n_inst: int, n: int, m: int, k_aux: int | None = None, dead_after: int = 1000):
        super().__init__(n_inst, n, m, k_aux, dead_after)
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


class JumpReluSAE(SAE):
    """Rajamanoharan et al. 2024b. θ per latent, stored directly (not as log θ), initialised at 0.001."""

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


ARCHITECTURES = {
    "relu": lambda i, n, m: ReluSAE(i, n, m, weighted=False),
    "relu_weighted": lambda i, n, m: ReluSAE(i, n, m, weighted=True),
    "gated": lambda i, n, m: GatedSAE(i, n, m, mode="paper"),
    "gated_weighted": lambda i, n, m: GatedSAE(i, n, m, mode="weighted"),
    "topk": TopKSAE,
    "batchtopk": BatchTopKSAE,
    "jumprelu": JumpReluSAE,
}


def build_sae(architecture: str, n_inst: int, n: int, m: int) -> SAE:
    """The batched SAE of an architecture named in params (see ARCHITECTURES)."""
    return ARCHITECTURES[architecture](n_inst, n, m)




# SAELens' names (v6): inference architectures, and the one each of ours loads as.
SAELENS_ARCHITECTURE = {"relu": "standard", "relu_weighted": "standard", "gated": "gated", "gated_weighted": "gated",
                        "topk": "topk", "batchtopk": "jumprelu", "jumprelu": "jumprelu"}


@torch.no_grad()
def saelens_export(sae: SAE, architecture: str, i: int, scale: float, metadata: dict) -> tuple[dict[str, Tensor], dict]:
    """Instance i as SAELens loads it from disk (`SAE.load_from_disk`): the tensors of `sae_weights.safetensors`
    (W_enc (d_in, d_sae), W_dec (d_sae, d_in), biases) and `cfg.json`. The input scale is folded in, as SAELens'
    `fold_activation_norm_scaling_factor` does (W_enc·s, W_dec/s, b_dec/s), so the file takes raw activations
    and `normalize_activations` is "none". BatchTopK loads as a JumpReLU at its inference threshold (as
    SAELens converts it)."""
    name = SAELENS_ARCHITECTURE[architecture]
    m, n = sae.W_dec.shape[1:]
    t = {"W_enc": sae.W_enc[i].T * scale, "W_dec": sae.W_dec[i] / scale, "b_dec": sae.b_dec[i] / scale}
    if isinstance(sae, GatedSAE):
        t |= {"b_gate": sae.b_enc[i], "r_mag": sae.r_mag[i], "b_mag": sae.b_mag[i]}
    else:
        t["b_enc"] = sae.b_enc[i]
    if isinstance(sae, JumpReluSAE):
        t["threshold"] = sae.theta[i, 0]
    elif isinstance(sae, BatchTopKSAE):
        t["threshold"] = torch.full((m,), float(torch.nan_to_num(sae.theta[i], nan=0.0)))
    cfg = {"architecture": name, "d_in": n, "d_sae": m, "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": True, "normalize_activations": "none", "reshape_activations": "none",
           "metadata": metadata}
    if name == "topk":
        cfg["k"] = int(sae.k[i])
    return {k: v.detach().float().contiguous().clone() for k, v in t.items()}, cfg
