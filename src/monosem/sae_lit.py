"""Lightning: the SAEs of one architecture, its sweep of λ (or k) × seeds, trained as one batched module.

As the toy models: fresh activations every step from one seeded stream per seed (SAEs with the same seed see
the same samples, whatever their architecture or λ: common random numbers), each instance the same as an SAE
trained alone (Adam is elementwise and the summed loss gives each instance only its own gradient).

Loop per step: sparsity coefficient warmed up linearly (λ·min(1, t/T_λ)); learning rate warmed up linearly;
gradients of unit-norm decoders projected off the atoms before the step and the atoms renormalised after it
(`SAE.project_grad`, `SAE.constrain`). No gradient clipping (SAELens clips at 1.0; the papers do not say).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .config import K_ARCHITECTURES, SaeTrain
from .training import ChunkedSteps, Curves, log_steps
from .sae import TopKSAE, build_sae
from .sae_eval import Activations  # noqa: F401  (its home is sae_eval: the report reads it without Lightning)
from .worlds import WorldData, derive_seed, generator

SAE_CURVES = ("mse", "l0", "dead_fraction")


class SAEStudyModule(ChunkedSteps):
    def __init__(self, source: Activations, probs: Tensor, architecture: str, knobs: list[float], seeds: list[int],
                 latents: int, train: SaeTrain):
        super().__init__()
        self.source, self.architecture, self.cfg = source, architecture, train
        self.points = [(knob, seed) for knob in knobs for seed in seeds]  # the seed fastest, as the toy studies
        self.seeds, self.steps = list(seeds), train.steps
        n = source(torch.zeros(1, 1, source.world.cfg.n_features, device=probs.device)).shape[-1]
        self.sae = build_sae(architecture, len(self.points), n, latents)
        if isinstance(self.sae, TopKSAE):
            self.sae.dead_after = train.dead_after
            self.sae.k.copy_(torch.tensor([int(k) for k, _ in self.points]))
        for i, (_, seed) in enumerate(self.points):
            self.sae.init_instance(i, seed)
        self.register_buffer("knob", torch.tensor([k for k, _ in self.points], dtype=torch.float32))
        self.register_buffer("seed_idx", torch.tensor([seeds.index(s) for _, s in self.points]))
        self.register_buffer("since_fired", torch.zeros(len(self.points), latents, dtype=torch.long))
        self.probs = probs
        self.record_at = set(log_steps(self.steps, train.log_points))
        self.curves = Curves(values={k: [] for k in SAE_CURVES})
        self.start_step = self.done = 0
        self.automatic_optimization = False

    def configure_optimizers(self):
        # fused: one pass over each parameter (torch's for-loop Adam makes ten); the same update up to rounding
        self.optimizer = torch.optim.Adam(self.sae.parameters(), lr=self.cfg.lr, betas=(0.9, 0.999), fused=True)
        return self.optimizer

    def on_train_start(self) -> None:
        self.source.to(self.device)
        self.probs = self.probs.to(self.device)
        self.gens = [torch.Generator(self.device).manual_seed(derive_seed(self.source.world.cfg.seed, s, "sae-data"))
                     for s in self.seeds]
        self._sums = torch.zeros(2, len(self.points), device=self.device)  # mse, l0 since the last curve point
        self._n = 0

    def coefficient(self, step: int) -> Tensor:
        """The sparsity knob at `step`: k as given; λ warmed up linearly over sparsity_warmup_steps."""
        if self.architecture in K_ARCHITECTURES:
            return self.knob
        warm = self.cfg.sparsity_warmup_steps
        return self.knob * (min(1.0, (step + 1) / warm) if warm else 1.0)

    def _step(self, step: int, opt) -> None:
        f = torch.stack([self.source.world.sample(self.cfg.batch_size, g, self.probs) for g in self.gens])
        x = self.source(f)[self.seed_idx]  # (inst, batch, n): each seed's activations computed once
        loss, parts = self.sae.loss(x, self.coefficient(step))
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss.sum())  # instances are independent: sum, not mean
        self.sae.project_grad()
        warm = self.cfg.lr_warmup_steps
        opt.optimizer.param_groups[0]["lr"] = self.cfg.lr * (min(1.0, (step + 1) / warm) if warm else 1.0)
        opt.step()
        self.sae.constrain()
        with torch.no_grad():
            self.since_fired.copy_(torch.where(parts["fired"], 0, self.since_fired + 1))
            self._sums += torch.stack([parts["mse"].detach(), parts["l0"]])
            self._n += 1
        if step + 1 in self.record_at:
            mse, l0 = (self._sums / self._n).cpu()
            dead = (self.since_fired >= self.cfg.dead_after).float().mean(-1).cpu()
            self.curves.steps.append(step + 1)
            for k, v in zip(SAE_CURVES, (mse, l0, dead)):
                self.curves.values[k].append(v)
            self._sums.zero_()
            self._n = 0


def eval_features(world: WorldData, probs: Tensor, n: int) -> Tensor:
    """The held-out features every SAE of a study is measured on (one draw, seeded by the world)."""
    return world.sample(n, generator(world.cfg.seed, "sae-eval"), probs)
