"""The SAE base class: the parameters every architecture shares, the decoder, the dead-latent count, the
optimiser/init defaults and the SAELens export; each architecture (its own file) adds its encoder and loss.

Batched over a leading instance axis (one SAE per instance: a sweep of λ or k and seeds trains in one module).
Notation as the brief (`sae.md`): x ∈ R^n, m latents, decoder atoms d_i = W_dec[i] (rows), x' = x − b_dec,
x̂ = f W_dec + b_dec. Shapes: x (inst, batch, n), f (inst, batch, m), W_enc and W_dec (inst, m, n).

One input convention for every architecture (documented deviation where a paper differs): the inputs are
scaled so that E‖x‖² = 1 before training (`input_scale`), b_dec is subtracted before encoding (SAELens'
`apply_b_dec_to_input`; the JumpReLU paper encodes x itself, an affine reparametrisation of b_enc), and the
reconstruction loss is the squared error summed over the n dims, averaged over the batch.

What an architecture declares on its class (read by the trainer, the params check, the plots and the export):
`name` (params), `saelens` (the SAELens architecture it loads as), `style` (colour, marker), `knob` ("lambda":
swept over a sparsity coefficient, warmed up; "k": over an integer latent count), `beta1` (Adam's β1) and
`b_dec_init` ("zero", "mean" or "geometric_median" of a sample of the training data), each with its source.
`SaeTrain.beta1` and `SaeTrain.b_dec_init` override the last two for every architecture of a study.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from monosem.worlds import generator

B_DEC_INITS = ("zero", "mean", "geometric_median")


def input_scale(x: Tensor) -> float:
    """The factor s with E‖s·x‖² = 1 (the one normalisation convention; multiply inputs by it, divide outputs)."""
    return float(1 / x.pow(2).sum(-1).mean().sqrt())


def sq_err(x: Tensor, x_hat: Tensor) -> Tensor:
    """‖x − x̂‖² summed over dims, averaged over the batch: (inst,)."""
    return (x - x_hat).pow(2).sum(-1).mean(-1)


def stats(f: Tensor) -> dict[str, Tensor]:
    """What the trainer tracks of a batch's latents f (inst, batch, m): l0 (inst,) and which latents fired (inst, m)."""
    on = f != 0
    return {"l0": on.sum(-1).float().mean(-1), "fired": on.any(1)}


@torch.no_grad()
def data_centre(x: Tensor, how: str, iters: int = 100, tol: float = 1e-6) -> Tensor:
    """The centre of samples x (..., samples, n): "zero", their "mean", or their "geometric_median" (the point
    minimising the summed Euclidean distance; Weiszfeld's iteration from the mean, as dictionary_learning's
    `geometric_median`, weights 1/‖x − guess‖ floored at 1e-12)."""
    if how == "zero":
        return torch.zeros_like(x[..., 0, :])
    guess = x.mean(-2)
    if how == "mean":
        return guess
    for _ in range(iters):
        w = 1 / (x - guess.unsqueeze(-2)).norm(dim=-1).clamp(min=1e-12)
        new = (w.unsqueeze(-1) * x).sum(-2) / w.sum(-1, keepdim=True)
        if (new - guess).norm() < tol:
            return new
        guess = new
    return guess


class SAE(nn.Module):
    """The parameters every architecture shares, and the decoder."""

    name = ""  # params' name of the architecture
    saelens = "standard"  # SAELens' (v6) inference architecture it loads as
    style = ("black", "x")  # plot colour and marker
    knob = "lambda"  # swept over a sparsity coefficient λ (warmed up), or "k"
    beta1 = 0.9  # Adam's β1 (β2 = 0.999 throughout)
    b_dec_init = "zero"  # see B_DEC_INITS
    unit_norm = False  # decoder rows kept at unit norm (constrain after each step)
    fused = True  # train with the hand-written CPU loss where an architecture has one (same math; tests compare)

    def __init__(self, n_inst: int, n: int, m: int):
        super().__init__()
        self.W_enc = nn.Parameter(torch.empty(n_inst, m, n))
        self.b_enc = nn.Parameter(torch.zeros(n_inst, m))
        self.W_dec = nn.Parameter(torch.empty(n_inst, m, n))
        self.b_dec = nn.Parameter(torch.zeros(n_inst, n))
        self.dead_after = 1000  # steps without firing after which a latent is dead (the trainer sets it)
        self.register_buffer("since_fired", torch.zeros(n_inst, m, dtype=torch.long))

    @classmethod
    def check_knob(cls, value: float, latents: int) -> str | None:
        """Why `value` is no valid sweep value (None when it is): λ > 0."""
        return None if value > 0 else f"{value:g}: λ must be > 0"

    def set_knobs(self, knobs: Tensor) -> None:
        """Each instance's sweep value, for architectures that keep it on the module (TopK's k)."""

    @staticmethod
    def coefficient(knobs: Tensor, warm: float) -> Tensor:
        """The sparsity argument of `loss` at warm-up fraction `warm` ∈ [0, 1]: λ·warm."""
        return knobs * warm

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
    def track(self, fired: Tensor) -> None:
        """After a step: the latents that fired (inst, m) reset their count of steps since firing."""
        self.since_fired.copy_(torch.where(fired, 0, self.since_fired + 1))

    def dead(self) -> Tensor:
        """(inst, m): latents that have not fired for `dead_after` steps."""
        return self.since_fired >= self.dead_after

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

    def saelens_tensors(self, i: int) -> dict[str, Tensor]:
        """Instance i's encoder tensors besides W_enc, W_dec and b_dec, named as SAELens' `saelens` architecture."""
        return {"b_enc": self.b_enc[i]}

    def saelens_cfg(self, i: int) -> dict:
        """Instance i's entries of SAELens' cfg.json besides the common ones."""
        return {}


@torch.no_grad()
def saelens_export(sae: SAE, i: int, scale: float, metadata: dict) -> tuple[dict[str, Tensor], dict]:
    """Instance i as SAELens loads it from disk (`SAE.load_from_disk`): the tensors of `sae_weights.safetensors`
    (W_enc (d_in, d_sae), W_dec (d_sae, d_in), biases) and `cfg.json`. The input scale is folded in, as SAELens'
    `fold_activation_norm_scaling_factor` does (W_enc·s, W_dec/s, b_dec/s), so the file takes raw activations
    and `normalize_activations` is "none"."""
    m, n = sae.W_dec.shape[1:]
    t = {"W_enc": sae.W_enc[i].T * scale, "W_dec": sae.W_dec[i] / scale, "b_dec": sae.b_dec[i] / scale}
    t |= sae.saelens_tensors(i)
    cfg = {"architecture": sae.saelens, "d_in": n, "d_sae": m, "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": True, "normalize_activations": "none", "reshape_activations": "none",
           "metadata": metadata} | sae.saelens_cfg(i)
    return {k: v.detach().float().contiguous().clone() for k, v in t.items()}, cfg
