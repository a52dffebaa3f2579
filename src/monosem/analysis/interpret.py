"""Neuron-level analysis of a trained toy model: classes, driving features, orderings for plots."""

from __future__ import annotations

import torch
from torch import Tensor

from monosem.analysis.metrics import frac_mono, neuron_classes

CLASS_NAMES = ("dead", "mono", "poly")


def neuron_order(sfa: Tensor) -> Tensor:
    """Neurons sorted by monosemanticity, most monosemantic first (the authors sort by max/mean)."""
    return torch.argsort(frac_mono(sfa), descending=True, stable=True)


def feature_order(sfa: Tensor, order: Tensor) -> Tensor:
    """Features sorted by the position (in `order`) of the neuron they drive most: the diagonal heatmap."""
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=order.device)
    return torch.argsort(rank[sfa.argmax(0)], stable=True)


def neuron_table(sfa: Tensor, bias: Tensor, w_out: Tensor, top: int = 3) -> list[dict]:
    """One row per neuron: class, frac_mono, bias, output-weight norm and its `top` driving features.

    sfa: (k, N) single-feature activations; bias: (k,); w_out: (d_out, k). frac_mono is left empty (None:
    undefined) where Σ_j sfa[n, j] ≤ 0: with GeLU or SoLU, negative single-feature activations enter the sum
    and can cancel a neuron's one response (Σ ≈ −0.003 gave frac_mono ≈ −290 in G3), a number with no
    meaning. Its class follows the paper's rule on the raw score (such a neuron is never monosemantic).
    """
    score, cls = frac_mono(sfa), neuron_classes(sfa)
    score = [float(v) if total > 0 else None for v, total in zip(score.tolist(), sfa.sum(1).tolist())]
    values, features = sfa.topk(min(top, sfa.shape[1]), dim=1)
    total = sfa.clamp(min=0).sum(1)
    rows = []
    for n in neuron_order(sfa).tolist():
        row = {"neuron": n, "class": CLASS_NAMES[int(cls[n])], "frac_mono": score[n], "bias": float(bias[n]),
               "n_features_active": int((sfa[n] > 0).sum()), "max_activation": float(values[n, 0]),
               "out_norm": float(w_out[:, n].norm())}
        for r in range(values.shape[1]):
            row[f"feature_{r + 1}"] = int(features[n, r])
            row[f"activation_{r + 1}"] = float(values[n, r])
            row[f"share_{r + 1}"] = float(values[n, r].clamp(min=0) / total[n]) if total[n] > 0 else 0.0
        rows.append(row)
    return rows


# --- mechanistic analysis of one model (issue: the residual polysemantic neurons) ------------------------
#
# Hypothesis (Jermyn et al. 2022 §5 as summarised in the brief, to be tested, not assumed): the polysemantic
# neurons act as an almost linear map of rank <= m plus a shared offset, a low-rank approximation of the
# identity with a global correction; the monosemantic neurons add a thresholded per-feature term
# ReLU(s·f_i + b) with b < 0.

THRESHOLDS = (0.99, 0.999, 0.9999)
AMPLITUDES = (0.25, 0.5, 1.0)
DECOMPOSITION = ("full", "mono", "poly", "bias>0", "bias<=0")


def unit_targets(task: str, n_features: int, Q: Tensor | None, device=None) -> Tensor:
    """t_i, the unit output direction that feature i should produce: e_i, or Q e_i for the re-projector."""
    return Q if task == "reprojector" else torch.eye(n_features, device=device)  # (out, N)


def sensitivity(A: Tensor, b: Tensor, act) -> dict[str, int]:
    """#mono at the thresholds 0.99/0.999/0.9999 (probes at amplitude 1) and at probe amplitudes 0.25/0.5/1
    (threshold 0.999). A: (k, N) = W1 P, the pre-activation of each unit feature before the bias."""
    out = {f"n_mono_at_{t}": int((frac_mono(act(A + b[:, None])) > t).sum()) for t in THRESHOLDS}
    out |= {f"n_mono_amp_{a}": int((frac_mono(act(a * A + b[:, None])) > 0.999).sum()) for a in AMPLITUDES}
    return out


def multi_feature(A: Tensor, b: Tensor, act, top: Tensor) -> Tensor:
    """act(P(e_top + e_j)) for every neuron and every other feature j: its top feature with one more on.

    The authors' `many_feature_activations` switches extra features on; here the extra feature is each
    other feature in turn. Returns (k, N) with NaN at j = top.
    """
    k = torch.arange(A.shape[0], device=A.device)
    out = act(A[k, top][:, None] + A + b[:, None])
    out[k, top] = float("nan")
    return out


def decomposition(A: Tensor, b: Tensor, W2: Tensor, targets: Tensor, act, masks: dict[str, Tensor],
                  amplitudes: Tensor) -> dict[str, Tensor]:
    """Output along feature i's target direction when only feature i is on at amplitude a, per sub-network.

    y_S(a e_i) · t_i with y_S = W2[:, S] act(a A[S, i] + b[S]); returns {name: (len(amplitudes), N)}.
    """
    h = act(amplitudes[:, None, None] * A[None] + b[None, :, None])  # (amp, k, N)
    G = targets.T @ W2  # (N, k): how much neuron k writes along t_i
    return {name: torch.einsum("nk,akn->an", G * mask.to(G.dtype), h) for name, mask in masks.items()}


def linear_fit(Y: Tensor, X: Tensor) -> tuple[Tensor, Tensor]:
    """Least squares Y ≈ X B + c; returns (B, c).

    By the normal equations in float64 (Cholesky of the d_in × d_in Gram matrix): X here is the eval inputs,
    a few dozen well-conditioned columns, where this is exact to ~1e-12 and 10× faster than lstsq.
    """
    Y, X = Y.double(), X.double()
    Xc = X - X.mean(0)
    B = torch.cholesky_solve(Xc.T @ (Y - Y.mean(0)), torch.linalg.cholesky(Xc.T @ Xc))
    return B, Y.mean(0) - X.mean(0) @ B


def reduced_rank_r2(Y: Tensor, X: Tensor, max_rank: int) -> Tensor:
    """R² of the best rank-r linear map plus a constant from X to Y, for r = 0..max_rank.

    Reduced-rank regression with identity weights: fit Y ≈ X B + c by least squares, then keep the top r
    principal directions of the centred fitted values. r = 0 is the constant alone (R² = 0).
    """
    Y, X = Y.double(), X.double()
    total = (Y - Y.mean(0)).pow(2).sum()
    if total <= 0:
        return torch.ones(max_rank + 1, dtype=torch.float64, device=Y.device)
    Xc = X - X.mean(0)
    B = linear_fit(Y, X)[0]
    # The residual of the full fit is orthogonal to the fitted values Xc B, so truncating the fit to its top r
    # principal directions leaves R²(r) = Σ_{j<=r} s_j² / total, s the singular values of Xc B. With
    # Xc^T Xc = L L^T those are the singular values of L^T B: a (d_in × d_out) problem, not (samples × d_out).
    L = torch.linalg.cholesky(Xc.T @ Xc)
    s2 = torch.linalg.svdvals(L.T @ B).pow(2)
    r2 = torch.zeros(max_rank + 1, dtype=torch.float64, device=Y.device)
    r2[1:] = (s2.cumsum(0) / total)[:max_rank] if len(s2) >= max_rank else torch.cat(
        [s2.cumsum(0), s2.sum().repeat(max_rank - len(s2))]) / total
    return r2


def abs_pairs(A: Tensor, b: Tensor, act, threshold: float = 0.999) -> dict[str, int]:
    """For the absolute-value task: features served by a ReLU(v)/ReLU(−v) pair, by one neuron, or by none.

    Probes are +e_i and −e_i (2N signed probes); a neuron is monosemantic for (i, sign) when it passes the
    frac_mono rule over the signed probes. A feature is served by a pair when both signs have a neuron.
    """
    n = A.shape[1]
    sfa = torch.cat([act(A + b[:, None]), act(-A + b[:, None])], dim=1)  # (k, 2N)
    mono = frac_mono(sfa) > threshold
    best = sfa.argmax(1)[mono]
    pos = torch.zeros(n, dtype=torch.bool, device=A.device)
    neg = torch.zeros(n, dtype=torch.bool, device=A.device)
    pos[best[best < n]] = True
    neg[best[best >= n] - n] = True
    return {"abs_features_pair": int((pos & neg).sum()), "abs_features_one": int((pos ^ neg).sum()),
            "abs_features_poly_only": int((~pos & ~neg).sum())}


@torch.no_grad()
def analyse(W1: Tensor, b: Tensor, W2: Tensor, P: Tensor, act, task: str, eval_x: Tensor,
            Q: Tensor | None = None, n_amplitudes: int = 21) -> dict:
    """Everything the interpret stage reports about one model: table, summary, curves, spectra."""
    W1, b, W2, P = W1.double(), b.double(), W2.double(), P.double()
    k, n, m = W1.shape[0], P.shape[1], P.shape[0]
    A = W1 @ P  # (k, N)
    sfa = act(A + b[:, None])
    cls = neuron_classes(sfa)
    mono, poly, dead = cls == 1, cls == 2, cls == 0
    top = sfa.argmax(1)
    mfa = multi_feature(A, b, act, top)
    pre = eval_x.float() @ W1.T.float() + b.float()  # (n_eval, k); float32: the big products of the analysis
    h = act(pre)
    W2f = W2.float()
    linear_regime = (pre > 0).double().mean(0)  # fraction of eval samples where the neuron is on

    # The polysemantic block: its outputs on the eval set and its linear path W2[:, poly] W1[poly] P.
    y_poly = h[:, poly] @ W2f[:, poly].T
    y_full = h @ W2f.T
    r2 = reduced_rank_r2(y_poly, eval_x, m) if poly.any() else torch.full((m + 1,), float("nan"), device=W1.device)
    L_full = W2 @ A
    L_poly = W2[:, poly] @ A[poly]
    sv_full = torch.linalg.svdvals(L_full)
    sv_poly = torch.linalg.svdvals(L_poly) if poly.any() else torch.zeros(0, device=W1.device)
    energy = sv_poly.pow(2).cumsum(0) / sv_poly.pow(2).sum() if poly.any() and sv_poly.sum() > 0 else None
    targets = unit_targets(task, n, None if Q is None else Q, W1.device).double()
    # Cosine between the linear path and the target map, relative to the best a rank-m map can do.
    identity_fit = lambda L: float((L * targets).sum() / (L.norm() * targets.norm() + 1e-12)  # noqa: E731
                                   / min(1.0, (m / n) ** 0.5))
    shares = y_full.double().pow(2).sum()

    def block(name: str, mask: Tensor) -> dict[str, float]:
        """Size, output share, linearity (R² at rank m) and active fraction of a group of neurons."""
        if not mask.any():
            return {f"n_{name}": 0, f"{name}_output_share": 0.0, f"{name}_r2_rank_m": float("nan"),
                    f"{name}_linear_regime_mean": float("nan")}
        y = h[:, mask] @ W2f[:, mask].T
        return {f"n_{name}": int(mask.sum()),
                f"{name}_output_share": float(y.pow(2).sum() / shares) if shares > 0 else float("nan"),
                f"{name}_r2_rank_m": float(reduced_rank_r2(y, eval_x, m)[-1]),
                f"{name}_linear_regime_mean": float(linear_regime[mask].mean())}

    thresholds = -b[mono] / A[mono, top[mono]].clamp(min=1e-12)  # amplitude at which a mono neuron turns on

    masks = {"full": torch.ones(k, dtype=torch.bool, device=W1.device), "mono": mono, "poly": poly, "bias>0": b > 0, "bias<=0": b <= 0}
    amplitudes = torch.linspace(0, 1, n_amplitudes, dtype=torch.float64, device=W1.device)
    summary = {
        "n_neurons": k, "n_features": n, "d_embed": m,
        "n_dead": int(dead.sum()), "n_mono": int(mono.sum()), "n_poly": int(poly.sum()),
        "n_bias_positive": int((b > 0).sum()), "n_bias_negative": int((b <= 0).sum()),
        **sensitivity(A, b, act),
        **block("poly", poly), **block("strong_poly", poly & (frac_mono(sfa) < 0.9)), **block("posbias", b > 0),
        "mono_linear_regime_mean": float(linear_regime[mono].mean()) if mono.any() else float("nan"),
        "poly_r2_by_rank": [float(x) for x in r2],
        "poly_rank_90": int((energy < 0.9).sum() + 1) if energy is not None else 0,
        # The constant of the linear fit, averaged over outputs: the shared offset the block adds.
        "poly_offset_mean": float(linear_fit(y_poly, eval_x)[1].mean()) if poly.any() else 0.0,
        "identity_fit_full": identity_fit(L_full),
        "identity_fit_poly": identity_fit(L_poly) if poly.any() else float("nan"),
        "mono_threshold_mean": float(thresholds.mean()) if mono.any() else float("nan"),
        "mono_bias_mean": float(b[mono].mean()) if mono.any() else float("nan"),
        "poly_bias_mean": float(b[poly].mean()) if poly.any() else float("nan"),
    }
    if task == "abs":
        summary |= abs_pairs(A, b, act)
    rows = neuron_table(sfa.float(), b.float(), W2.float())
    mfa_mean = torch.nanmean(mfa, dim=1)
    for row in rows:
        nn_ = row["neuron"]
        row["linear_regime"] = float(linear_regime[nn_])
        row["mfa_mean"] = float(mfa_mean[nn_])
        row["mfa_ratio"] = float(mfa_mean[nn_] / sfa[nn_, top[nn_]]) if sfa[nn_, top[nn_]] > 0 else float("nan")
        out_top = int(W2[:, nn_].abs().argmax())
        row["out_top"], row["out_top_weight"] = out_top, float(W2[out_top, nn_])
    return {"summary": summary, "rows": rows, "sfa": sfa.float(), "amplitudes": amplitudes.float(),
            "decomposition": {k_: v.float() for k_, v in decomposition(A, b, W2, targets, act, masks, amplitudes).items()},
            "sv_full": sv_full.float(), "sv_poly": sv_poly.float(), "r2": r2.float()}
