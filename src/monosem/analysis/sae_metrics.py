"""SAE metrics: reconstruction and sparsity, and recovery of known ground-truth features (brief `sae.md` §3–4).

Reconstruction (x, x̂: (samples, n); f: (samples, m)):
  L0 = mean number of active latents; explained variance = 1 − E‖x − x̂‖² / Σ_d Var(x_d) (the conventional R²,
  SAELens PR #443); normalised MSE = E‖x − x̂‖² / E‖x − Ex‖² (Gao et al.; = 1 − explained variance);
  dead fraction = latents that never fire on the samples; relative reconstruction bias
  γ = E‖x̂‖² / E[x·x̂] (Rajamanoharan et al. Eq. 10; < 1 is shrinkage); l2 ratio = E[‖x̂‖/‖x‖] over the samples
  with x ≠ 0 only (the toy inputs are often empty: x = 0 has no ratio, and clamping ‖x‖ made it ≈ 1e10; NaN
  when every sample is empty).
Ground truth (decoder atoms D: (m, n), true directions G: (g, n), coefficients c: (samples, g)):
  MMCS G→D = mean_g max_d cos(g, d) (Sharkey et al.) and D→G; recovery at τ = share of true features with
  max cos ≥ τ; MCC = mean |cos| over a one-to-one matching maximising the total (scipy's
  linear_sum_assignment); uniqueness = distinct best-matched true features / latents; per latent, precision,
  recall and F1 of "latent fires" against "its best-matched feature is present"; the magnitude ratio =
  median over samples where both fire of |latent activation · ‖d_latent‖ / true coefficient| per matched pair
  (the true directions have unit norm), then the median over pairs: 1 without shrinkage. Pass f in the units
  of c (undo the input scale).
The cosine matrix is built in chunks of rows, so memory stays O(chunk · g) beside the matching itself.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

CHUNK = 2048


@torch.no_grad()
def reconstruction_metrics(x: Tensor, x_hat: Tensor, f: Tensor) -> dict[str, float]:
    x, x_hat = x.double(), x_hat.double()
    err = (x - x_hat).pow(2).sum(-1).mean()
    total_var = x.var(0, unbiased=False).sum()
    return {
        "l0": float((f != 0).sum(-1).double().mean()),
        "explained_variance": float(1 - err / total_var),
        "nmse": float(err / total_var),
        "mse": float(err),
        "dead_fraction": float((f != 0).sum(0).eq(0).double().mean()),
        "shrinkage_gamma": float(x_hat.pow(2).sum(-1).mean() / (x * x_hat).sum(-1).mean()),
        "l2_ratio": float((x_hat.norm(dim=-1) / x.norm(dim=-1))[x.norm(dim=-1) > 0].mean()),
    }


def _unit(t: Tensor) -> Tensor:
    return t / t.norm(dim=-1, keepdim=True).clamp(min=1e-12)


@torch.no_grad()
def best_matches(D: Tensor, G: Tensor, chunk: int = CHUNK) -> dict[str, Tensor]:
    """Max cosine (signed, as MMCS) and argmax in both directions, computing D·Gᵀ a chunk of latents at a time."""
    Du, Gu = _unit(D.float()), _unit(G.float())
    d_best = torch.empty(len(Du))
    d_arg = torch.empty(len(Du), dtype=torch.long)
    g_best = torch.full((len(Gu),), -2.0)
    g_arg = torch.zeros(len(Gu), dtype=torch.long)
    for start in range(0, len(Du), chunk):
        cos = Du[start:start + chunk] @ Gu.T  # (chunk, g)
        d_best[start:start + chunk], d_arg[start:start + chunk] = cos.max(1)
        val, arg = cos.max(0)
        better = val > g_best
        g_best = torch.where(better, val, g_best)
        g_arg = torch.where(better, arg + start, g_arg)
    return {"latent_best": d_best, "latent_arg": d_arg, "feature_best": g_best, "feature_arg": g_arg}


DENSE_MATCHING = 2 ** 22  # latents × features up to which the matching is solved on the dense |cos| matrix


@torch.no_grad()
def mcc(D: Tensor, G: Tensor, candidates: int = 32, chunk: int = CHUNK) -> tuple[float, np.ndarray, np.ndarray]:
    """Mean |cos| over the one-to-one matching of latents to true features that maximises it, and the matched
    (latent, feature) index arrays.

    Up to DENSE_MATCHING pairs: the Hungarian algorithm on the dense |cos| matrix (scipy's
    linear_sum_assignment). Above (16k latents × 4k features is 2^26 pairs, 0.5 GB as float64 before scipy's
    copies): a maximum-weight full matching on a sparse graph holding each side's `candidates` best partners
    (scipy's min_weight_full_bipartite_matching), built a chunk of latents at a time. That is exact whenever
    the optimal matching uses only such edges, which near-recovered dictionaries do; if the sparse graph has no
    full matching it falls back to the dense solve."""
    Du, Gu = _unit(D.float()), _unit(G.float())
    if len(Du) * len(Gu) <= DENSE_MATCHING:
        return _dense_mcc(Du, Gu)
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import min_weight_full_bipartite_matching

    k_lat, k_feat = min(candidates, len(Gu)), min(candidates, len(Du))
    lat_rows, lat_cols, lat_vals = [], [], []
    feat_best = torch.full((len(Gu), k_feat), -1.0)
    feat_arg = torch.zeros((len(Gu), k_feat), dtype=torch.long)
    for start in range(0, len(Du), chunk):
        cos = (Du[start:start + chunk] @ Gu.T).abs()  # (chunk, g)
        v, i = cos.topk(k_lat, dim=1)  # each latent's best features
        lat_rows.append(torch.arange(start, start + len(cos)).repeat_interleave(k_lat))
        lat_cols.append(i.flatten())
        lat_vals.append(v.flatten())
        v, i = torch.cat([feat_best, cos.T], 1), torch.cat([feat_arg, torch.arange(start, start + len(cos)).expand(len(Gu), -1)], 1)
        feat_best, pos = v.topk(k_feat, dim=1)  # each feature's best latents so far
        feat_arg = i.gather(1, pos)
    rows = torch.cat(lat_rows + [feat_arg.flatten()]).numpy()
    cols = torch.cat(lat_cols + [torch.arange(len(Gu)).repeat_interleave(k_feat)]).numpy()
    vals = torch.cat(lat_vals + [feat_best.flatten()]).double().numpy()
    graph = coo_matrix((vals + 1e-9, (rows, cols)), shape=(len(Du), len(Gu))).tocsr()  # duplicates summed: same |cos|
    graph.sum_duplicates()
    try:
        r, c = min_weight_full_bipartite_matching(graph, maximize=True)
    except ValueError:  # no full matching among the candidates
        return _dense_mcc(Du, Gu)
    matched = (Du[torch.as_tensor(r)] * Gu[torch.as_tensor(c)]).sum(-1).abs()
    return float(matched.mean()), np.asarray(r), np.asarray(c)


def _dense_mcc(Du: Tensor, Gu: Tensor) -> tuple[float, np.ndarray, np.ndarray]:
    cos = (Du @ Gu.T).abs().double().numpy()
    rows, cols = linear_sum_assignment(cos, maximize=True)
    return float(cos[rows, cols].mean()), rows, cols


@torch.no_grad()
def ground_truth_metrics(D: Tensor, G: Tensor, f: Tensor | None = None, c: Tensor | None = None,
                         thresholds: tuple[float, ...] = (0.9, 0.99)) -> dict[str, float]:
    """Recovery of the true directions G by the decoder atoms D; with activations f and true coefficients c
    on the same samples also precision/recall/F1 and the magnitude ratio (see the module docstring)."""
    bm = best_matches(D, G)
    out = {"mmcs": float(bm["feature_best"].mean()), "mmcs_reverse": float(bm["latent_best"].mean()),
           "uniqueness": float(len(torch.unique(bm["latent_arg"])) / len(D))}
    for t in thresholds:
        out[f"recovered_at_{t:g}"] = float((bm["feature_best"] >= t).double().mean())
    out["mcc"], rows, cols = mcc(D, G)
    if f is not None and c is not None:
        fires = f != 0  # (samples, m)
        present = c[:, bm["latent_arg"]] != 0  # each latent's best-matched feature present: (samples, m)
        tp = (fires & present).sum(0).double()
        precision = tp / fires.sum(0).clamp(min=1)
        recall = tp / present.sum(0).clamp(min=1)
        f1 = torch.where(tp > 0, 2 * precision * recall / (precision + recall).clamp(min=1e-12), 0.0)
        alive = fires.any(0)
        out |= {"precision": float(precision[alive].mean()) if alive.any() else float("nan"),
                "recall": float(recall[alive].mean()) if alive.any() else float("nan"),
                "f1": float(f1[alive].mean()) if alive.any() else float("nan")}
        ratios = []
        for lat, feat in zip(rows.tolist(), cols.tolist()):
            both = (f[:, lat] != 0) & (c[:, feat] != 0)
            if both.any():
                ratios.append(float((f[both, lat] * D[lat].norm() / c[both, feat]).abs().median()))
        out["magnitude_ratio"] = float(np.median(ratios)) if ratios else float("nan")
    return out
