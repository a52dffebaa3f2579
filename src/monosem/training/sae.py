"""Lightning: the SAEs of one architecture, its sweep of λ (or k) × seeds, trained as one batched module.

As the toy models: fresh activations every step from one seeded stream per seed (SAEs with the same seed see
the same samples, whatever their architecture or λ: common random numbers), each instance the same as an SAE
trained alone (Adam is elementwise and the summed loss gives each instance only its own gradient).

Loop per step: sparsity coefficient warmed up linearly (λ·min(1, t/T_λ); `SAE.coefficient`: k is not); learning
rate warmed up linearly; gradients of unit-norm decoders projected off the atoms before the step and the atoms
renormalised after it (`SAE.project_grad`, `SAE.constrain`); the latents that fired counted once, on the SAE
(`SAE.track`: AuxK and the dead-fraction curve read it). No gradient clipping (SAELens and dictionary_learning
clip at norm 1; the papers do not say). Adam's β1 and b_dec's initial value are the architecture's own (on its
class) unless `SaeTrain.beta1` / `SaeTrain.b_dec_init` set them; b_dec's centre is taken on B_DEC_SAMPLES
activations per seed from a stream of their own (the training stream stays the same).
"""

from __future__ import annotations

import torch
from torch import Tensor

from monosem.analysis.sae_eval import Activations  # noqa: F401  (its home is sae_eval: the report reads it without Lightning)
from monosem.config import SaeTrain
from monosem.sae import build_sae
from monosem.sae.base import data_centre
from monosem.training.loop import ChunkedSteps, Curves, log_steps
from monosem.worlds import WorldData, derive_seed, generator

SAE_CURVES = ("mse", "l0", "dead_fraction")
B_DEC_SAMPLES = 4096


class SAEStudyModule(ChunkedSteps):
    def __init__(self, source: Activations, probs: Tensor, architecture: str, knobs: list[float], seeds: list[int],
                 latents: int, train: SaeTrain):
        super().__init__()
        self.source, self.architecture, self.cfg = source, architecture, train
        self.points = [(knob, seed) for knob in knobs for seed in seeds]  # the seed fastest, as the toy studies
        self.seeds, self.steps = list(seeds), train.steps
        n = source(torch.zeros(1, 1, source.world.cfg.n_features, device=probs.device)).shape[-1]
        self.sae = build_sae(architecture, len(self.points), n, latents)
        self.sae.dead_after = train.dead_after
        self.register_buffer("knob", torch.tensor([k for k, _ in self.points], dtype=torch.float32))
        self.register_buffer("seed_idx", torch.tensor([seeds.index(s) for _, s in self.points]))
        self.sae.set_knobs(self.knob)
        for i, (_, seed) in enumerate(self.points):
            self.sae.init_instance(i, seed)
        self.probs = probs
        self._init_b_dec(train.b_dec_init or self.sae.b_dec_init)
        self.record_at = set(log_steps(self.steps, train.log_points))
        self.curves = Curves(values={k: [] for k in SAE_CURVES})
        self.start_step = self.done = 0
        self.automatic_optimization = False

    @torch.no_grad()
    def _init_b_dec(self, how: str) -> None:
        """b_dec at the centre ("zero", "mean", "geometric_median") of each seed's own sample of activations."""
        if how == "zero":
            return
        world = self.source.world
        x = torch.stack([self.source(world.sample(B_DEC_SAMPLES, generator(world.cfg.seed, s, "sae-b-dec"),
                                                  self.probs.to(world.P.device))) for s in self.seeds])
        self.sae.b_dec.copy_(data_centre(x, how)[self.seed_idx].to(self.sae.b_dec))

    def configure_optimizers(self):
        beta1 = self.sae.beta1 if self.cfg.beta1 is None else self.cfg.beta1
        # fused: one pass over each parameter (torch's for-loop Adam makes ten); the same update up to rounding
        self.optimizer = torch.optim.Adam(self.sae.parameters(), lr=self.cfg.lr, betas=(beta1, 0.999), fused=True)
        return self.optimizer

    def on_train_start(self) -> None:
        self.source.to(self.device)
        self.probs = self.probs.to(self.device)
        self.gens = [torch.Generator(self.device).manual_seed(derive_seed(self.source.world.cfg.seed, s, "sae-data"))
                     for s in self.seeds]
        self._sums = torch.zeros(2, len(self.points), device=self.device)  # mse, l0 since the last curve point
        self._n = 0

    def coefficient(self, step: int) -> Tensor:
        """The sparsity knob at `step`: λ warmed up linearly over sparsity_warmup_steps (k as given)."""
        warm = self.cfg.sparsity_warmup_steps
        return self.sae.coefficient(self.knob, min(1.0, (step + 1) / warm) if warm else 1.0)

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
            self.sae.track(parts["fired"])
            self._sums += torch.stack([parts["mse"].detach(), parts["l0"]])
            self._n += 1
        if step + 1 in self.record_at:
            mse, l0 = (self._sums / self._n).cpu()
            dead = self.sae.dead().float().mean(-1).cpu()
            self.curves.steps.append(step + 1)
            for k, v in zip(SAE_CURVES, (mse, l0, dead)):
                self.curves.values[k].append(v)
            self._sums.zero_()
            self._n = 0


def eval_features(world: WorldData, probs: Tensor, n: int) -> Tensor:
    """The held-out features every SAE of a study is measured on (one draw, seeded by the world)."""
    return world.sample(n, generator(world.cfg.seed, "sae-eval"), probs)
