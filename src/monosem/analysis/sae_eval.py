"""Measuring trained SAEs: the activations they read and the true feature directions in them, every metric of one
batched module on the held-out activations, the toy model's loss with the reconstruction spliced in, comparisons at
matched L0 (the Gated SAE paper's claims, judged on these, are in `claims.gated`).

Units: reconstruction metrics are taken on the scaled activations the SAEs see (E‖x‖² = 1; every one of them
but `mse` is scale-free); ground-truth metrics use the true directions as unit rows G_i with the coefficient
c_i = f_i·‖G_i‖ and the latents divided by the input scale, so a latent that recovers feature i exactly has
magnitude ratio 1.
"""

from __future__ import annotations

import math
import statistics

import numpy as np
import torch
from torch import Tensor

from monosem.analysis.sae_metrics import ground_truth_metrics, reconstruction_metrics
from monosem.analysis.summary import cell
from monosem.sae import input_scale
from monosem.worlds import WorldData, task_loss


class Activations:
    """An SAE study's inputs: a toy model's world inputs x = P·f (`layer` input) or its hidden layer h(x) (a
    one-instance model), times `scale`, fixed from the held-out set so that E‖scale·a‖² = 1 (`sae.input_scale`)."""

    def __init__(self, world: WorldData, model, layer: str, eval_f: Tensor):
        self.world, self.model, self.layer = world, model, layer
        self.scale = 1.0
        self.scale = input_scale(self(eval_f))

    def raw(self, f: Tensor) -> Tensor:
        """Features (..., B, N) → activations (..., B, n) in the model's own units."""
        x = self.world.inputs(f)
        if self.layer == "input":
            return x
        return self.model.hidden(x.reshape(1, -1, x.shape[-1])).reshape(*x.shape[:-1], -1)

    def __call__(self, f: Tensor) -> Tensor:
        return self.raw(f) * self.scale

    @torch.no_grad()
    def truth(self) -> tuple[Tensor, Tensor]:
        """(G, norms): each true feature's direction in activation space as a unit row (N, n), and its norm.

        input: x = Σ_i f_i P_i exactly, so G_i = P_i. hidden: the response to feature i alone at amplitude 1,
        h(P_i) − h(0): exact for a linear hidden layer (TMS' h = Wx), a first-order description for a ReLU layer
        (where features interact through the threshold). A coefficient f_i then stands for f_i·norm_i along G_i."""
        eye = torch.eye(self.world.cfg.n_features, device=self.world.P.device)
        G = self.raw(eye) - self.raw(torch.zeros_like(eye[:1]))
        norms = G.norm(dim=-1)
        return G / norms.clamp(min=1e-12).unsqueeze(-1), norms

    def to(self, device) -> Activations:
        self.world = self.world.to(device)
        if self.model is not None:
            self.model = self.model.to(device)
        return self


@torch.no_grad()
def splice_losses(model, layer: str, world, f: Tensor, x_hat: Tensor) -> dict[str, Tensor]:
    """The toy model's task loss on features f (B, N) with its `layer` as is, replaced by each SAE's
    reconstruction x_hat (S, B, n; raw units) and zero-ablated; loss recovered = (L_zero − L_sae)/(L_zero − L_orig)
    (the CE-loss score of SAELens and the Gated paper, with the toy model's own loss)."""
    x = world.inputs(f).unsqueeze(0)
    target = world.targets(f).unsqueeze(0)
    S, B, n = x_hat.shape
    if layer == "input":
        run = lambda a: model(a)[1]  # noqa: E731
        orig = run(x)
    else:
        run = model.readout
        orig = run(model.hidden(x))
    spliced = run(x_hat.reshape(1, S * B, n)).reshape(S, B, -1)
    zero = run(torch.zeros(1, B, n, device=x.device))
    loss = lambda y: task_loss(y, target, world.importance)  # noqa: E731
    l_orig, l_zero, l_sae = loss(orig), loss(zero), loss(spliced)
    return {"loss_orig": l_orig.expand(S), "loss_zero": l_zero.expand(S), "loss_spliced": l_sae,
            "loss_recovered": (l_zero - l_sae) / (l_zero - l_orig)}


@torch.no_grad()
def measure_saes(sae, source, f: Tensor) -> list[dict[str, float]]:
    """Every metric of each SAE in a trained batched module, on held-out features f (B, N), on their device;
    the matching to the true features (an assignment problem: scipy) on the CPU."""
    sae.eval()
    x = source(f)  # scaled activations (B, n)
    lat = sae.encode(x.expand(sae.W_dec.shape[0], *x.shape))  # (S, B, m)
    x_hat = sae.decode(lat)
    G, norms = source.truth()
    c = f * norms
    splice = splice_losses(source.model, source.layer, source.world, f, x_hat / source.scale)
    rows = []
    for i in range(lat.shape[0]):
        row = reconstruction_metrics(x, x_hat[i], lat[i])
        row |= ground_truth_metrics(*(t.cpu() for t in (sae.W_dec[i].detach(), G, lat[i] / source.scale, c)))
        row |= {k: float(v[i]) for k, v in splice.items()}
        rows.append(row)
    return rows


def by_architecture(rows: list[dict], metric: str) -> dict[str, list[tuple[float, float, float, float]]]:
    """Per architecture, per sweep value: (mean L0, mean, min, max of `metric` over seeds), sorted by L0."""
    groups: dict[str, dict[float, list[dict]]] = {}
    for r in rows:
        groups.setdefault(r["architecture"], {}).setdefault(r["knob"], []).append(r)
    out = {}
    for arch, points in groups.items():
        pts = []
        for rs in points.values():
            vals = [r[metric] for r in rs if r[metric] == r[metric]]
            if vals:
                pts.append((statistics.fmean(r["l0"] for r in rs), statistics.fmean(vals), min(vals), max(vals)))
        out[arch] = sorted(pts)
    return out


def at_l0(points: list[tuple[float, ...]], target: float) -> float:
    """A metric at L0 = target, linear in log L0 between the seed-averaged sweep points; NaN outside them."""
    pts = [(math.log(p[0]), p[1]) for p in points if p[0] > 0]
    if not pts or not pts[0][0] <= math.log(target) <= pts[-1][0]:
        return float("nan")
    xs, ys = zip(*pts)
    return float(np.interp(math.log(target), xs, ys))


# The matched-L0 table's columns (metric, label, digits): the SAE stage computes these, the report shows them.
MATCHED_L0_COLUMNS = (("explained_variance", "explained var.", 3), ("mcc", "MCC", 3), ("f1", "F1", 3),
                      ("recovered_at_0.9", "recovered ≥0.9", 3), ("shrinkage_gamma", "γ", 3),
                      ("magnitude_ratio", "magnitude ratio", 3), ("dead_fraction", "dead", 3),
                      ("loss_recovered", "toy loss recovered", 3))


def matched_l0_table(rows: list[dict], targets: list[float], metrics: tuple[str, ...] | None = None) -> list[dict]:
    """One row per architecture × target L0, each metric (default: MATCHED_L0_COLUMNS') interpolated there (NaN
    where the sweep does not reach)."""
    table = []
    metrics = metrics or tuple(m for m, _, _ in MATCHED_L0_COLUMNS)
    curves = {m: by_architecture(rows, m) for m in metrics}
    for arch in curves[metrics[0]]:
        for t in targets:
            table.append({"architecture": arch, "l0": t} | {m: at_l0(curves[m][arch], t) for m in metrics})
    return table


def matched_l0_markdown(table: list[dict]) -> list[str]:
    """The matched-L0 table as markdown lines (– where a value is missing or NaN)."""
    cols = MATCHED_L0_COLUMNS
    lines = ["| architecture | L0 | " + " | ".join(c[1] for c in cols) + " |", "|---" * (len(cols) + 2) + "|"]
    for row in table:
        cells = [cell(row, k, d) for k, _, d in cols]
        lines.append(f"| {row['architecture']} | {row['l0']:.2f} | " + " | ".join(cells) + " |")
    return lines
