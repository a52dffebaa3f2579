"""Numba kernels of the TopK SAE's training step on the CPU (`sae.topk.TopKSAE.loss` uses them there).

Only the encoder's matmul is dense; everything after it touches k latents per sample, so it is written per
sample: select the k largest pre-activations, decode them, take the squared error and its gradient with
respect to the kept pre-activations (`rows`), then scatter the parameter gradients (`grads`). Against the
autograd graph of the same math (topk, scatter, four dense matmuls, a dozen elementwise passes over the
(inst, batch, latents) activations) a k sweep (4 to 32 of 256 latents, batch 1024) takes 4x less CPU time.

The selection searches a threshold: each try is a branch-free count over a row that stays in L1, then one
branch-free compaction; torch.topk sorts (value, index) pairs with a branchy comparator, 6-9x slower per row
here. Rows with NaNs (a diverged SAE) may keep other latents than torch.topk would; ties keep lower indices.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from numba import njit, prange

from monosem.jit import FAST


@njit(cache=True, nogil=True, boundscheck=False, fastmath=FAST, inline="always")
def _count(x, t):
    c = 0
    for j in range(x.shape[0]):
        c += x[j] >= t
    return c


@njit(cache=True, nogil=True, boundscheck=False, fastmath=FAST, error_model="numpy")
def _threshold(x, k):
    """(lo, hi, exact): count(x ≥ lo) ≥ k > count(x ≥ hi), with count(x ≥ lo) == k when exact. The first guess
    is the row's mean plus its deviation times the normal quantile of k/m (sums vectorise; min and max do not),
    then a bracket grown from it and narrowed by interpolating the count: 4 to 7 counts a row."""
    m = x.shape[0]
    s = s2 = np.float32(0.0)
    for j in range(m):
        s += x[j]
        s2 += x[j] * x[j]
    mu = s / m
    sd = np.sqrt(max(s2 / m - mu * mu, np.float32(0.0))) + np.float32(1e-30)
    t = np.sqrt(-2 * np.log((k - np.float32(0.5)) / m))  # Abramowitz & Stegun 26.2.23: z with P(Z > z) = p
    z = t - (np.float32(2.515517) + t * (np.float32(0.802853) + t * np.float32(0.010328))) / (
        1 + t * (np.float32(1.432788) + t * (np.float32(0.189269) + t * np.float32(0.001308))))
    guess = mu + z * sd
    c, step, it = _count(x, guess), np.float32(0.25) * sd, 0
    if c >= k:
        lo, clo = guess, c
        hi = lo + step
        chi = _count(x, hi) if c > k else 0
        while chi >= k and it < 60:
            lo, clo = hi, chi
            step *= 2
            hi = lo + step
            chi, it = _count(x, hi), it + 1
    else:
        hi, chi = guess, c
        lo = hi - step
        clo = _count(x, lo)
        while clo < k and it < 60:
            hi, chi = lo, clo
            step *= 2
            lo = hi - step
            clo, it = _count(x, lo), it + 1
    while clo != k and clo != chi and it < 160:
        f = min(max((clo - (k - np.float32(0.5))) / (clo - chi), np.float32(0.05)), np.float32(0.95))
        mid = lo + (hi - lo) * f
        if not lo < mid < hi:
            break
        c, it = _count(x, mid), it + 1
        if c >= k:
            lo, clo = mid, c
        else:
            hi, chi = mid, c
    return lo, hi, clo == k


@njit(cache=True, nogil=True, boundscheck=False)
def _select(x, k, vals, idx):
    """Write the k largest entries of x and their indices (in index order) into vals[:k], idx[:k]; vals and
    idx have room for k + 1."""
    lo, hi, exact = _threshold(x, k)
    n = 0
    if exact:  # exactly k at or above lo: a branch-free compaction
        for j in range(x.shape[0]):
            vals[n], idx[n] = x[j], j
            n += x[j] >= lo
        return
    for j in range(x.shape[0]):  # ties (or NaNs): the ones at or above hi (fewer than k), then [lo, hi) by index
        if x[j] >= hi and n < k:
            vals[n], idx[n] = x[j], j
            n += 1
    for j in range(x.shape[0]):
        if lo <= x[j] < hi and n < k:
            vals[n], idx[n] = x[j], j
            n += 1
    for j in range(x.shape[0]):  # a row the search could not bracket (NaN, inf): fill up, every index valid
        if not (x[j] >= lo) and n < k:
            vals[n], idx[n] = x[j], j
            n += 1


@njit(parallel=True, cache=True, boundscheck=False, fastmath=FAST)
def rows(pre, b_enc, xc, W_dec, k, idx, act, gpre, resid, sq, nnz):
    """Per sample (inst i, row b) of pre = xc·W_encᵀ (without b_enc): the k[i] largest pre-activations (idx,
    act = ReLU of them, zero-padded to the widest k), resid = x̂ − x (= Σ act·W_dec[idx] − xc), sq = ‖resid‖²,
    nnz = #(act > 0), and gpre = ∂‖resid‖²/∂pre at the kept latents (2·resid·W_dec[idx] where the ReLU passes)."""
    n_inst, batch, m = pre.shape
    n, block = xc.shape[2], 64
    blocks = -(-batch // block)
    for task in prange(n_inst * blocks):
        i, first = task // blocks, (task % blocks) * block
        kk, W = k[i], W_dec[i]
        e = np.empty(n, np.float32)  # the residual and the pre-activations, in L1: scratch per block of samples
        x = np.empty(m, np.float32)
        for b in range(first, min(first + block, batch)):
            a, ix, g = act[i, b], idx[i, b], gpre[i, b]
            for j in range(m):
                x[j] = pre[i, b, j] + b_enc[i, j]
            _select(x, kk, a, ix)
            for j in range(kk, a.shape[0]):  # padding up to the widest k (+1)
                a[j], ix[j] = 0.0, 0
            for d in range(n):
                e[d] = -xc[i, b, d]
            on = 0
            for j in range(kk):
                aj = max(a[j], np.float32(0.0))
                a[j] = aj
                on += aj > 0
                w = W[ix[j]]
                for d in range(n):
                    e[d] += aj * w[d]
            s = np.float32(0.0)
            for d in range(n):
                s += e[d] * e[d]
                resid[i, b, d] = e[d]
            sq[i, b], nnz[i, b] = s, on
            for j in range(a.shape[0]):
                dot = np.float32(0.0)
                if a[j] > 0:
                    w = W[ix[j]]
                    for d in range(n):
                        dot += e[d] * w[d]
                g[j] = 2 * dot


@njit(parallel=True, cache=True, boundscheck=False, fastmath=FAST)
def grads(xc, idx, act, gpre, resid, scale, gW_enc, gb_enc, gW_dec, fired):
    """Scatter the gradients of Σ_b scale·‖resid_b‖² into gW_enc, gb_enc, gW_dec (inst·S, latents, n), one
    accumulator per (instance, S-th of the batch) so that S·inst threads can work; `fired` marks kept latents."""
    n_inst, batch, width = idx.shape
    n = xc.shape[2]
    parts = gW_enc.shape[0] // n_inst
    for c in prange(n_inst * parts):
        i, s = c // parts, c % parts
        for b in range(s * batch // parts, (s + 1) * batch // parts):
            for j in range(width):
                a = act[i, b, j]
                if a > 0:
                    lat, g = idx[i, b, j], scale * gpre[i, b, j]
                    fired[c, lat] = True
                    gb_enc[c, lat] += g
                    ga = 2 * scale * a
                    for d in range(n):
                        gW_dec[c, lat, d] += ga * resid[i, b, d]
                        gW_enc[c, lat, d] += g * xc[i, b, d]


def topk_step(x: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, W_dec: torch.Tensor, b_dec: torch.Tensor,
              k: torch.Tensor, chunk: int) -> dict[str, torch.Tensor]:
    """A TopK SAE's squared error per instance (mean over the batch), its gradients with respect to every
    parameter, x̂ − x, and l0 and which latents fired; x (inst, batch, n), k (inst,). Instances go `chunk` at a
    time, so that a chunk's pre-activations are still in cache when its rows are read."""
    n_inst, batch, n = x.shape
    m, width = W_enc.shape[1], int(k.max())
    threads = torch.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    parts = max(1, -(-threads // min(chunk, n_inst)))  # split the batch when a chunk has fewer instances than threads
    xc = x - b_dec.unsqueeze(1)
    idx = torch.empty(n_inst, batch, width + 1, dtype=torch.int32)  # + 1: room for the compaction's last write
    act, gpre = torch.empty(n_inst, batch, width + 1), torch.empty(n_inst, batch, width + 1)
    resid, sq, nnz = torch.empty(n_inst, batch, n), torch.empty(n_inst, batch), torch.empty(n_inst, batch)
    pre = torch.empty(min(chunk, n_inst), batch, m)  # one buffer, reused by every chunk (stays in cache)
    gW_enc, gW_dec = torch.zeros(n_inst, parts, m, n), torch.zeros(n_inst, parts, m, n)
    gb_enc, fired = torch.zeros(n_inst, parts, m), torch.zeros(n_inst, parts, m, dtype=torch.bool)
    k_np, W_np = k.to(torch.int64).numpy(), W_dec.detach().contiguous().numpy()
    for s in range(0, n_inst, chunk):
        sl = slice(s, s + chunk)
        c = min(chunk, n_inst - s)
        torch.bmm(xc[sl], W_enc[sl].transpose(1, 2), out=pre[:c])
        args = [t[sl].numpy() for t in (xc, idx, act, gpre, resid)]
        rows(pre[:c].numpy(), b_enc[sl].detach().contiguous().numpy(), args[0], W_np[sl], k_np[sl], *args[1:], sq[sl].numpy(),
             nnz[sl].numpy())
        grads(*args, np.float32(1 / batch), *(t[sl].flatten(0, 1).numpy() for t in (gW_enc, gb_enc, gW_dec, fired)))
    gW_enc, gb_enc, gW_dec = (t.sum(1) if parts > 1 else t.squeeze(1) for t in (gW_enc, gb_enc, gW_dec))
    gb_dec = resid.sum(1) * (2 / batch) - torch.bmm(gb_enc.unsqueeze(1), W_enc).squeeze(1)
    return {"mse": sq.mean(1), "resid": resid, "W_enc": gW_enc, "b_enc": gb_enc, "W_dec": gW_dec, "b_dec": gb_dec,
            "fired": fired.any(1), "l0": nnz.mean(1)}
