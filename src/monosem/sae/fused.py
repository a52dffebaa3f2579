"""The SAE losses that train on the CPU by hand (`sae.relu.ReluSAE.loss`, `sae.gated.GatedSAE.loss`,
`sae.topk.TopKSAE.loss` use them there; the
plain ones run under autograd elsewhere and in the tests that pin these to them). Each computes its gradients
in the forward pass and hands them to autograd as the gradients of the per-instance loss.
"""

from __future__ import annotations

import torch
from torch import Tensor

# The fused CPU losses (ReLU, TopK) process instances in chunks whose (batch, latents) activations take about
# this many bytes (the two cores' L2), so that the passes between matmuls find them in cache: at 2048 latents,
# batch 256, two instances a chunk took 14% less time per step than all eight at once; 1 to 4 MB measured alike.
CHUNK_BYTES = 1 << 22


def _scaled(g: Tensor, grads: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """The gradients computed in a fused forward pass, times the incoming gradient of each instance's loss
    (all ones when the trainer backpropagates loss.sum(): then as they are, saving a pass over each)."""
    if bool((g == 1).all()):
        return grads
    return tuple(t * g.view(-1, *[1] * (t.dim() - 1)) for t in grads)


def _chunk(batch: int, m: int) -> int:
    return max(1, CHUNK_BYTES // (4 * batch * m))


class ReluLoss(torch.autograd.Function):
    """ReluSAE's loss ‖x − x̂‖² + λ·sparsity per instance with its gradients computed in the forward pass, by hand
    (five matmuls: autograd's sixth, the input's gradient, is needed only for b_dec, a vector-matrix product),
    instances in cache-sized chunks. Returns (loss, mse, sparsity, l0, fired); only loss is differentiable."""

    @staticmethod
    def forward(ctx, x, W_enc, b_enc, W_dec, b_dec, coeff, weighted):
        n_inst, batch, _ = x.shape
        grads = [torch.empty_like(t) for t in (W_enc, b_enc, W_dec, b_dec)]
        mse, sparsity, l0 = torch.empty(n_inst), torch.empty(n_inst), torch.empty(n_inst)
        fired = torch.empty(W_enc.shape[:2], dtype=torch.bool)
        c = _chunk(batch, W_enc.shape[1])
        for s in range(0, n_inst, c):
            sl = slice(s, s + c)
            gW_enc, gb_enc, gW_dec, gb_dec = (g[sl] for g in grads)
            xc = x[sl] - b_dec[sl].unsqueeze(1)
            f = torch.baddbmm(b_enc[sl].unsqueeze(1), xc, W_enc[sl].transpose(1, 2)).clamp_(min=0)
            resid = torch.baddbmm(xc, f, W_dec[sl], alpha=1, beta=-1)  # x̂ − x
            mse[sl] = resid.pow(2).sum(-1).mean(-1)
            mass = f.sum(1)  # (c, m)
            lam = coeff[sl].unsqueeze(-1) / batch
            if weighted:
                norms = W_dec[sl].norm(dim=-1)
                sparsity[sl] = (mass * norms).sum(-1) / batch
                torch.bmm(f.transpose(1, 2), resid, out=gW_dec).mul_(2 / batch)
                gW_dec.addcmul_((lam * mass / norms.clamp(min=1e-12)).unsqueeze(-1), W_dec[sl])
                df_bias = lam * norms
            else:
                sparsity[sl] = mass.sum(-1) / batch
                torch.bmm(f.transpose(1, 2), resid, out=gW_dec).mul_(2 / batch)
                df_bias = lam.expand_as(mass)
            gb_dec.copy_(resid.sum(1)).mul_(2 / batch)
            d_pre = torch.ops.aten.threshold_backward(
                torch.baddbmm(df_bias.unsqueeze(1), resid, W_dec[sl].transpose(1, 2), alpha=2 / batch), f, 0.0)
            torch.bmm(d_pre.transpose(1, 2), xc, out=gW_enc)
            torch.sum(d_pre, 1, out=gb_enc)
            gb_dec.sub_(torch.bmm(gb_enc.unsqueeze(1), W_enc[sl]).squeeze(1))
            torch.gt(mass, 0, out=fired[sl])  # f ≥ 0: a latent fired iff its sum over the batch is positive
            l0[sl] = torch.count_nonzero(f, dim=(1, 2)) / batch
        ctx.save_for_backward(*grads)
        ctx.mark_non_differentiable(mse, sparsity, l0, fired)
        return mse + coeff * sparsity, mse, sparsity, l0, fired

    @staticmethod
    def backward(ctx, g, *_):
        return None, *_scaled(g, ctx.saved_tensors), None, None


class GatedLoss(torch.autograd.Function):
    """GatedSAE's loss ‖x − x̂(f)‖² + λ·sparsity(ReLU(π_gate)) + ‖x − x̂_aux(ReLU(π_gate))‖² per instance, its gradients
    computed in the forward pass by hand: the gate and magnitude paths as one matmul of the stacked encoders
    [W_gate; W_mag], and their gradients as another; seven matmuls where autograd takes eleven (the inputs'
    gradient is needed only for b_dec: two vector-matrix products). `weighted`: the norm-weighted variant (its
    auxiliary decoder not detached). Instances in cache-sized chunks. Returns (loss, mse, sparsity, aux, l0,
    fired); only loss is differentiable."""

    @staticmethod
    def forward(ctx, x, W_enc, b_enc, r_mag, b_mag, W_dec, b_dec, coeff, weighted):
        n_inst, batch, _ = x.shape
        m = W_enc.shape[1]
        grads = [torch.empty_like(t) for t in (W_enc, b_enc, r_mag, b_mag, W_dec, b_dec)]
        mse, sparsity, aux, l0 = (torch.empty(n_inst) for _ in range(4))
        fired = torch.empty(W_enc.shape[:2], dtype=torch.bool)
        c = _chunk(batch, 2 * m)
        for s in range(0, n_inst, c):
            sl = slice(s, s + c)
            gW_enc, gb_enc, gr_mag, gb_mag, gW_dec, gb_dec = (g[sl] for g in grads)
            scale = r_mag[sl].exp().unsqueeze(-1)
            W_both = torch.cat([W_enc[sl], W_enc[sl] * scale], dim=1)  # (c, 2m, n): gate rows, then magnitude rows
            xc = x[sl] - b_dec[sl].unsqueeze(1)
            pre = torch.baddbmm(torch.cat([b_enc[sl], b_mag[sl]], dim=1).unsqueeze(1), xc, W_both.transpose(1, 2))
            gate, mag = pre[..., :m], pre[..., m:]
            on = gate > 0
            f = mag.clamp(min=0).mul_(on)
            active = gate.clamp(min=0)
            resid = torch.baddbmm(xc, f, W_dec[sl], beta=-1)  # x̂ − x
            resid_aux = torch.baddbmm(xc, active, W_dec[sl], beta=-1)
            mse[sl] = resid.pow(2).sum(-1).mean(-1)
            aux[sl] = resid_aux.pow(2).sum(-1).mean(-1)
            mass = active.sum(1)  # (c, m)
            lam = coeff[sl].unsqueeze(-1) / batch
            torch.bmm(f.transpose(1, 2), resid, out=gW_dec).mul_(2 / batch)
            gb_dec.copy_(resid.sum(1))
            if weighted:
                norms = W_dec[sl].norm(dim=-1)
                sparsity[sl] = (mass * norms).sum(-1) / batch
                gW_dec.baddbmm_(active.transpose(1, 2), resid_aux, alpha=2 / batch)
                gW_dec.addcmul_((lam * mass / norms.clamp(min=1e-12)).unsqueeze(-1), W_dec[sl])
                gb_dec.add_(resid_aux.sum(1))
                d_active_bias = lam * norms
            else:
                sparsity[sl] = mass.sum(-1) / batch
                d_active_bias = lam.expand_as(mass)
            gb_dec.mul_(2 / batch)
            d_pre = torch.empty_like(pre)  # (c, batch, 2m): ∂ gate, then ∂ magnitude
            torch.baddbmm(d_active_bias.unsqueeze(1), resid_aux, W_dec[sl].transpose(1, 2), alpha=2 / batch,
                          out=d_pre[..., :m])
            d_pre[..., :m].mul_(on)  # ReLU(π_gate)'s gradient; the Heaviside in f has none
            torch.bmm(resid, W_dec[sl].transpose(1, 2), out=d_pre[..., m:])
            d_pre[..., m:].mul_(2 / batch).mul_(mag > 0).mul_(on)
            g_both = torch.bmm(d_pre.transpose(1, 2), xc)  # (c, 2m, n)
            g_mag = g_both[:, m:]
            torch.addcmul(g_both[:, :m], g_mag, scale, out=gW_enc)  # W_mag = W_gate ⊙ exp(r_mag)
            torch.sum(g_mag * W_both[:, m:], -1, out=gr_mag)
            g_bias = d_pre.sum(1)  # (c, 2m)
            gb_enc.copy_(g_bias[:, :m])
            gb_mag.copy_(g_bias[:, m:])
            gb_dec.sub_(torch.bmm(g_bias.unsqueeze(1), W_both).squeeze(1))  # through x − b_dec
            fired[sl] = f.gt(0).any(1)
            l0[sl] = torch.count_nonzero(f, dim=(1, 2)) / batch
        ctx.save_for_backward(*grads)
        ctx.mark_non_differentiable(mse, sparsity, aux, l0, fired)
        return mse + coeff * sparsity + aux, mse, sparsity, aux, l0, fired

    @staticmethod
    def backward(ctx, g, *_):
        return None, *_scaled(g, ctx.saved_tensors), None, None


class TopKMSE(torch.autograd.Function):
    """TopKSAE's ‖x − x̂‖² per instance, gradients computed in the forward pass by `sae.kernels` (sparse after
    the encoder's matmul). Returns (mse, x̂ − x, l0, fired); only mse is differentiable."""

    @staticmethod
    def forward(ctx, x, W_enc, b_enc, W_dec, b_dec, k):
        from monosem.sae.kernels import topk_step  # numba, imported when a TopK SAE first trains on the CPU

        out = topk_step(x, W_enc, b_enc, W_dec, b_dec, k, _chunk(x.shape[1], W_enc.shape[1]))
        ctx.save_for_backward(out["W_enc"], out["b_enc"], out["W_dec"], out["b_dec"])
        ctx.mark_non_differentiable(out["resid"], out["l0"], out["fired"])
        return out["mse"], out["resid"], out["l0"], out["fired"]

    @staticmethod
    def backward(ctx, g, *_):
        return None, *_scaled(g, ctx.saved_tensors), None
