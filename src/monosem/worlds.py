"""Feature distributions, random embedders and samplers (Jermyn et al. 2022, §2; authors' `model3.py`).

A world draws sparse non-negative feature vectors f ∈ R^N (signed for the abs task), embeds them as
x = P f ∈ R^m with a fixed random embedder P, and asks the model for a target: f itself (decoder),
Q f with a second embedder (random re-projector) or |f| (absolute value).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from monosem.config import World


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any parts, so streams for (seed, purpose) never collide."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generator(*parts: object) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(*parts))


def random_embedder(n_features: int, d_embed: int, gen: torch.Generator) -> Tensor:
    """P ∈ R^{m×N} with unit-norm columns, as the paper's `make_random_embedder`.

    Gaussian N×m matrix, thin SVD, keep U (N×m), normalise each row of U to unit length, transpose.
    """
    g = torch.randn(n_features, d_embed, generator=gen, dtype=torch.float64)
    u, _, _ = torch.linalg.svd(g, full_matrices=False)  # (N, min(N, m))
    u = u / u.norm(dim=1, keepdim=True)
    return u.T.contiguous().float()  # (m, N)


def feature_probs(n_features: int, eps: float, distribution: str) -> Tensor:
    """Per-feature probabilities p_i with mean ε.

    Power law: p_i ∝ i^-1.1 (i = 1..N) rescaled so Σp_i = Nε, then clipped at 1. The clip is the
    paper's quirk: at N = 512, ε = 1/64 feature 1 gets p = 1 and is present in every sample.
    """
    if distribution == "uniform":
        return torch.full((n_features,), eps)
    i = torch.arange(1, n_features + 1, dtype=torch.float64)
    p = i ** -1.1
    p = p * (n_features * eps / p.sum())
    return p.clamp(max=1.0).float()


def sample_features(probs: Tensor, batch: int, gen: torch.Generator, signed: bool = False,
                    values: str = "uniform") -> Tensor:
    """f = U[0,1) values times Bernoulli(p_i) masks, shape (..., batch, N) for probs of shape (..., N).

    Several rows of probabilities (densities) share one draw of uniforms, so each row's
    samples are exactly those a run at that density alone would draw from the same generator.
    Signed (abs task): f = v1 − v2 with v1, v2 each drawn at p/2, as the authors' code ("cut eps in
    half to make this equivalent density").
    """
    shape = (2, batch, probs.shape[-1]) if signed else (batch, probs.shape[-1])
    u = torch.rand(shape, generator=gen, device=probs.device)
    return features_from_uniforms(u, probs, signed, values)


def features_from_uniforms(u: Tensor, probs: Tensor, signed: bool = False, values: str = "uniform") -> Tensor:
    """The features that uniforms u (..., batch, N) (with a leading axis of 2 before `batch` when signed: v1's
    and v2's) give at probabilities `probs` (..., N): the sampler's deterministic half, vectorised over any
    leading axes (a study's seeds and densities at once)."""
    if signed:
        half = probs / 2
        return features_from_uniforms(u.select(-3, 0), half, False) - features_from_uniforms(u.select(-3, 1), half, False)
    # One uniform u per (sample, feature) gives both: present iff u < p, and then u/p ~ U[0,1) (the same
    # distribution as the paper's separate value and mask draws, at half the random numbers: drawing them
    # was 45% of a step at batch 1024).
    p = probs.unsqueeze(-2)
    if values == "uniform":
        f = u / p
        return f.masked_fill_(u >= p, 0.0)
    # Symmetric values for the bounds' power model, from the same uniform: w ~ U(0,1) given presence (u is
    # on a grid of 2^-24: half a step keeps w off 0 and 1), then U[-1,1) or, by the inverse normal CDF,
    # N(0,1) (its tails cut at ±5.3σ by that grid).
    w = ((u + 2.0 ** -25) / p).clamp(max=1 - 2.0 ** -24)
    value = 2 * w - 1 if values == "signed_uniform" else math.sqrt(2) * torch.erfinv(2 * w - 1)
    return torch.where(u < p, value, 0.0)


def value_moment(values: str, j: int) -> float:
    """μ_j = E ξ^j of a present feature's value: U[0,1): 1/(j+1); U[-1,1): 1/(j+1) for even j, else 0;
    N(0,1): (j−1)!! for even j, else 0."""
    if values == "uniform":
        return 1 / (j + 1)
    if j % 2:
        return 0.0
    return 1 / (j + 1) if values == "signed_uniform" else float(math.prod(range(j - 1, 0, -2)))


def draw_features(cfg: World, probs: Tensor, batch: int, gen: torch.Generator) -> Tensor:
    """A batch of the world's features at `probs`: signed for the abs task, with the world's value law."""
    return sample_features(probs, batch, gen, signed=cfg.task == "abs", values=cfg.values)


@dataclass
class WorldData:
    """A generated world: everything training and measurement need, as tensors."""

    cfg: World
    P: Tensor  # (m, N) embedder
    Q: Tensor | None  # (m, N) target embedder of the re-projector task
    probs: Tensor  # (N,)
    eval_f: Tensor  # (n_eval, N) held-out features

    @property
    def d_out(self) -> int:
        return self.cfg.d_embed if self.cfg.task == "reprojector" else self.cfg.n_features

    @property
    def importance(self) -> Tensor | None:
        """Per-output loss weights I_i = decay^i of the tms task (TMS: L = Σ_i I_i (x_i − x'_i)²); None: all 1."""
        if self.cfg.importance_decay == 1:
            return None
        return self.cfg.importance_decay ** torch.arange(self.cfg.n_features, dtype=torch.float64).float().to(self.P.device)

    def sample(self, batch: int, gen: torch.Generator, probs: Tensor | None = None) -> Tensor:
        """A batch at the world's feature probabilities, or at each row of `probs` (see sample_features)."""
        return draw_features(self.cfg, self.probs if probs is None else probs, batch, gen)

    def inputs(self, f: Tensor) -> Tensor:
        """x = P f, (..., batch, m). With embedders stacked per seed (`stacked`), f's axis before the batch is
        the seed's."""
        if self.cfg.task == "tms":  # TMS feeds the features in directly (P is the identity)
            return f
        return f @ self.P.transpose(-1, -2)

    def targets(self, f: Tensor) -> Tensor:
        if self.cfg.task == "reprojector":
            return f @ self.Q.transpose(-1, -2)
        if self.cfg.task == "abs":
            return f.abs()
        return f

    @property
    def probes(self) -> Tensor:
        """The N single-feature probes x = P e_i at amplitude 1, shape (N, m) (per seed when stacked)."""
        return self.P.transpose(-1, -2).contiguous()

    def for_seed(self, seed: int) -> WorldData:
        """The world as the models of instance seed `seed` see it: with `embedder: per_seed` their own P (and Q),
        drawn from the world's seed and theirs (the authors drew a fresh P for every run); else this world."""
        if self.cfg.embedder == "shared":
            return self
        draw = lambda name: random_embedder(self.cfg.n_features, self.cfg.d_embed,  # noqa: E731
                                            generator(self.cfg.seed, name, "seed", seed)).to(self.P.device)
        return self.with_embedders(draw("P"), draw("Q") if self.Q is not None else None)

    def with_embedders(self, P: Tensor, Q: Tensor | None = None) -> WorldData:
        return replace(self, P=P, Q=Q)

    def stacked(self, seeds: list[int]) -> WorldData:
        """Embedders per seed stacked on a leading axis, (seed, m, N); the world itself when they are shared."""
        if self.cfg.embedder == "shared":
            return self
        worlds = [self.for_seed(s) for s in seeds]
        Q = torch.stack([w.Q for w in worlds]) if self.Q is not None else None
        return self.with_embedders(torch.stack([w.P for w in worlds]), Q)

    def with_eps(self, eps: float | None) -> WorldData:
        """The same world (embedders, distribution, task) at feature density ε: probabilities and a held-out
        set drawn afresh from the world's seed and ε. None or the world's own ε returns the world itself."""
        if eps is None or eps == self.cfg.eps:
            return self
        cfg = self.cfg.model_copy(update={"eps": eps})
        probs = feature_probs(cfg.n_features, eps, cfg.distribution)
        eval_f = draw_features(cfg, probs, cfg.n_eval, generator(cfg.seed, "eval", eps))
        return WorldData(cfg, self.P, self.Q, probs, eval_f)

    def to(self, device: torch.device | str) -> WorldData:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return WorldData(self.cfg, move(self.P), move(self.Q), move(self.probs), move(self.eval_f))


def generate_world(cfg: World) -> WorldData:
    """Draw the embedders, probabilities and held-out set of a world from its seed."""
    if cfg.task == "tms":
        P = torch.eye(cfg.n_features)
    else:
        P = random_embedder(cfg.n_features, cfg.d_embed, generator(cfg.seed, "P"))
    Q = random_embedder(cfg.n_features, cfg.d_embed, generator(cfg.seed, "Q")) if cfg.task == "reprojector" else None
    probs = feature_probs(cfg.n_features, cfg.eps, cfg.distribution)
    eval_f = draw_features(cfg, probs, cfg.n_eval, generator(cfg.seed, "eval"))
    return WorldData(cfg, P, Q, probs, eval_f)


def task_loss(y: Tensor, target: Tensor, importance: Tensor | None = None) -> Tensor:
    """Σ_outputs I_o (y − target)² / B per instance: summed over outputs (weights I_o, TMS' importance; 1 if
    None), averaged over the batch. For TMS this is the paper's per-sample loss; its notebook's mean over
    features is this / n."""
    err = (y - target).pow(2)
    return (err if importance is None else err * importance).sum(-1).mean(-1)
