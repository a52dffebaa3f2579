"""Lightning: a whole study's instances of one shape trained as one batched module.

Instances are ordered (sweep point, seed) with the seed fastest. Data come from one stream per seed;
instances with the same seed see the same samples (common random numbers), at their own feature density
if the study sweeps it (the same uniforms, thresholded at each density), exactly as each would if trained
alone.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from monosem.analysis.metrics import count_mono, single_feature_activations
from monosem.config import Instance
from monosem.toy.families import build_models
from monosem.toy.interventions import inhibition_penalty, moving_threshold, phi
from monosem.toy.models import ToyModels, l1_penalty
from monosem.toy.optim import BatchedAdamW, BatchedLamb, bias_decay_factor, cosine_factor
from monosem.training.loop import ChunkedSteps, Curves, log_steps, matmul_precision_of
from monosem.worlds import WorldData, derive_seed, features_from_uniforms, task_loss

CURVES = ("loss", "mono_per_feature", "mean_bias")
GRAPH_WARMUP = 3  # eager steps before a CUDA graph is captured (cuBLAS and the allocator settle on the side stream)
# Running activation statistics (for φ) use every 8th batch, a 12% step cost cut to 1.5%; the inhibition
# penalty needs them fresh and tracks every batch.
TRACK_EVERY = 8


class FeatureStream:
    """Fresh samples every step from one seeded generator per seed, on the training device, at each of the
    feature densities given as rows of `probs` (dens, N): features (dens, seed, batch, N)."""

    def __init__(self, world: WorldData, probs: Tensor, seeds: list[int], batch_size: int):
        self.world, self.probs, self.seeds, self.batch_size = world, probs, seeds, batch_size
        self.gens: list[torch.Generator] = []

    def reset(self, device: torch.device) -> None:
        self.probs = self.probs.to(device)
        self.gens = [torch.Generator(device).manual_seed(derive_seed(self.world.cfg.seed, s, "data")) for s in self.seeds]
        self.noise_gens = [torch.Generator(device).manual_seed(derive_seed(self.world.cfg.seed, s, "noise"))
                           for s in self.seeds]
        self.signed = self.world.cfg.task == "abs"  # v1 − v2: two uniforms per (sample, feature)
        per_seed = ((2,) if self.signed else ()) + (self.batch_size, self.world.cfg.n_features)
        self.u = torch.empty((len(self.seeds), *per_seed), device=device)
        # On the CPU one numba pass turns the uniforms into features (training.sample_kernel; equal to torch's bit
        # for bit); elsewhere torch's ops, which a CUDA graph captures.
        self.fused = device.type == "cpu" and self.world.cfg.values == "uniform" and self.u.dtype == torch.float32
        if self.fused:
            from monosem.training import sample_kernel  # numba: imported when a study first trains on the CPU
            self.kernel = sample_kernel.signed_masked_ratio if self.signed else sample_kernel.masked_ratio
            self.f = torch.empty((len(self.probs), len(self.seeds), self.batch_size, self.world.cfg.n_features), device=device)
            self.probs = self.probs.float().contiguous()

    def next(self) -> Tensor:
        """Features (dens, seed, batch, N); on the CPU in a buffer the next call overwrites."""
        for g, u in zip(self.gens, self.u):  # each seed's uniforms from its own generator, as a run alone draws them
            torch.rand(u.shape, generator=g, out=u)
        if self.fused:
            self.kernel(self.u.numpy(), self.probs.numpy(), self.f.numpy())
            return self.f
        return features_from_uniforms(self.u.unsqueeze(0), self.probs.unsqueeze(1), self.signed,
                                      self.world.cfg.values)  # (dens, seed, batch, N)

    def noise(self, m: int) -> Tensor:
        """Standard normal input noise, (seed, batch, m), from streams separate from the data's, so an
        instance sees the same samples whether or not others in its module are noisy."""
        return torch.stack([torch.randn((self.batch_size, m), generator=g, device=g.device) for g in self.noise_gens])


class ToyStudyModule(ChunkedSteps):
    def __init__(self, world: WorldData, instances: list[Instance]):
        super().__init__()
        keys = {i.group_key for i in instances}
        assert len(keys) == 1, "one module trains instances of one shape"
        self.instances = instances
        self.seeds = list(dict.fromkeys(i.seed for i in instances))
        cfg0 = instances[0]
        self.steps, self.t_max = cfg0.train.steps, cfg0.train.t_max
        self.world = world
        self.optimizer_name = cfg0.train.optimizer
        self.model = build_models(len(instances), cfg0.model, world.cfg.d_embed, world.d_out)
        for i, inst in enumerate(instances):
            self.model.init_instance(i, inst.seed, inst.train.bias_offset)
        per = lambda name: torch.tensor([getattr(i.train, name) for i in instances])  # noqa: E731
        self.register_buffer("lr", per("lr"))
        self.register_buffer("decay", per("bias_decay"))
        self.register_buffer("decay_factor", bias_decay_factor(self.decay, self.lr))
        self.register_buffer("l1", per("l1"))
        self.register_buffer("l1_out", per("l1_out"))
        self.register_buffer("noise_std", per("noise_std"))
        self.register_buffer("inhibit", per("inhibit"))
        self.register_buffer("inhibit_frac", per("inhibit_frac"))
        self.register_buffer("weight_decay", per("weight_decay"))
        self.use_decay = bool(self.decay.any())
        self.register_buffer("inhibit_tau", torch.full((len(instances),), float("nan")))
        self.use_inhibit = bool(self.inhibit.any())
        self._inhibit_fracs = [i.train.inhibit_frac for i in instances]
        # Skipping a zero penalty (or zero noise) saves up to a third of the step.
        self.use_l1, self.use_l1_out, self.use_noise = bool(self.l1.any()), bool(self.l1_out.any()), bool(
            self.noise_std.any())
        k = cfg0.model.neurons
        # Welford running statistics of every neuron's activation over all training samples (Wang et al.'s
        # monosemantic scale φ = (z − z̄)²/S² needs the mean and variance of the outputs seen so far).
        self.register_buffer("act_count", torch.zeros((), dtype=torch.float64))
        self._n_tracked = 0  # act_count on the host, so the step never waits to read it
        self.register_buffer("act_mean", torch.zeros(len(instances), k, dtype=torch.float64))
        self.register_buffer("act_m2", torch.zeros(len(instances), k, dtype=torch.float64))
        self.register_buffer("diverged_at", torch.full((len(instances),), -1))
        densities = list(dict.fromkeys(i.data.eps for i in instances))  # None: the world's own
        self.register_buffer("seed_idx", torch.tensor([self.seeds.index(i.seed) for i in instances]))
        dens_idx = torch.tensor([densities.index(i.data.eps) for i in instances])
        # Each instance's row of the stream's (dens × seed) samples; with one row per instance, in order, the
        # batch needs no gather.
        self.register_buffer("source", dens_idx * len(self.seeds) + self.seed_idx)
        self.gather = not torch.equal(self.source, torch.arange(len(instances)))
        probs = torch.stack([world.with_eps(e).probs for e in densities])
        self.stream = FeatureStream(world, probs, self.seeds, cfg0.train.batch_size)
        self.record_at = log_steps(self.steps, cfg0.train.log_points)
        # Task losses since the last curve point, one row per step: the curve's average and the step at which
        # an instance diverged (its first non-finite loss) are read from it when the point is recorded.
        window = max(b - a for a, b in zip([0] + self.record_at, self.record_at))
        self.register_buffer("losses", torch.zeros(window, len(instances)))
        self.record_at = set(self.record_at)
        self.curves = Curves.of(CURVES)
        self.start_step = self.done = 0  # steps done before this fit (a resumed run), and done so far
        self.rank, self.ranks = 0, 1  # this process's rank among the data-parallel ones (set when training)
        self._pending = None
        self.use_cuda_graphs = False  # set by `fit`
        self.automatic_optimization = False

    def configure_optimizers(self):
        if self.optimizer_name == "adamw":
            self.optimizer = BatchedAdamW(self.model.parameters(), lr=self.lr.clone(), weight_decay=self.weight_decay)
        else:
            self.optimizer = BatchedLamb(self.model.parameters(), lr=self.lr.clone())
        return self.optimizer

    def on_train_start(self) -> None:
        # Data parallel (DDP): every rank draws the whole batch from the shared seeded streams and trains on
        # its slice; DDP averages the gradients, so each step is the full batch's, as in one process.
        trainer = self._trainer
        self.rank, self.ranks = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        # The paper's decoder on one process backpropagates by hand (ToyModels.loss_and_grads); DDP needs
        # autograd's hooks, and the inhibition penalty and the tied models use autograd.
        self.by_hand = isinstance(self.model, ToyModels) and not self.use_inhibit and self.ranks == 1
        self.graphs = None
        if self.use_cuda_graphs and self.by_hand and self.device.type == "cuda" and self.optimizer_name == "lamb":
            self.graphs, self._side_stream = {}, torch.cuda.Stream(self.device)
            self._lr_factor = torch.ones((), device=self.device)
        self.world = self.world.to(self.device).stacked(self.seeds)  # per-seed embedders (seed, m, N), if any
        self.importance = self.world.importance
        self.stream.reset(self.device)
        self._loss_n = 0
        if self._pending is not None:  # resuming: the optimiser now exists, the streams are seeded
            self._restore_training_state(self._pending)
            self._pending = None

    # --- checkpoints: everything the remaining steps depend on, so a resumed run ends bit-identical ---

    def checkpoint(self) -> tuple[dict[str, Tensor], dict]:
        """(tensors, metadata) of the state after `self.done` steps: weights, optimiser moments, running
        statistics, divergence flags, the losses since the last curve point, curve points and every
        generator's state."""
        self.curves.settle()
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        tensors |= {f"buffer.{k}": getattr(self, k) for k in ("act_count", "act_mean", "act_m2", "diverged_at",
                                                              "inhibit_tau", "losses")}
        opt = getattr(self, "optimizer", None)
        tensors |= {f"opt.{k}": v for k, v in (opt.state_tensors() if opt else {}).items()}
        for k, v in self.curves.values.items():
            if v:
                tensors[f"curve.{k}"] = torch.stack(v)
        for i, (g, ng) in enumerate(zip(self.stream.gens, self.stream.noise_gens)):
            tensors[f"gen.data.{i}"], tensors[f"gen.noise.{i}"] = g.get_state(), ng.get_state()
        meta = {"step": self.done, "loss_n": self._loss_n, "curve_steps": list(self.curves.steps)}
        return {k: v.detach().cpu().clone() for k, v in tensors.items()}, meta  # a snapshot, not views

    def restore(self, tensors: dict[str, Tensor], meta: dict) -> None:
        """Load a checkpoint: weights, statistics and curves now; optimiser and generators when training
        starts (or never, if the checkpoint is already at the last step)."""
        with torch.no_grad():
            self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
            for k, v in tensors.items():
                if k.startswith("buffer."):
                    getattr(self, k[7:]).copy_(v)
        self.curves = Curves(list(meta["curve_steps"]),
                             {k: list(tensors[f"curve.{k}"]) if f"curve.{k}" in tensors else [] for k in CURVES})
        self.start_step = self.done = meta["step"]
        self._n_tracked = int(self.act_count)
        self._pending = (tensors, meta)

    def _restore_training_state(self, state: tuple[dict[str, Tensor], dict]) -> None:
        tensors, meta = state
        self.optimizer.load_state_tensors({k[4:]: v for k, v in tensors.items() if k.startswith("opt.")})
        self._loss_n = meta["loss_n"]
        for i, (g, ng) in enumerate(zip(self.stream.gens, self.stream.noise_gens)):
            g.set_state(tensors[f"gen.data.{i}"])
            ng.set_state(tensors[f"gen.noise.{i}"])

    def _step(self, step: int, opt) -> None:
        """One optimiser step of the paper's loop; `step` counts the updates done before it."""
        if self.graphs is not None:
            if step >= self.start_step + GRAPH_WARMUP:
                return self._graph_step(step)
            # Warm-up steps run eagerly on the capture's side stream (CUDA's graph-capture rule).
            self._side_stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self._side_stream):
                task = self._update(step % TRACK_EVERY == 0, self._decaying(step), cosine_factor(step, self.t_max))
            torch.cuda.current_stream().wait_stream(self._side_stream)
            return self._bookkeep(step, task)
        lr_factor = cosine_factor(step, self.t_max) if self.optimizer_name == "lamb" else 1.0
        task = self._update(step % TRACK_EVERY == 0, self._decaying(step), lr_factor)
        self._bookkeep(step, task)

    def _decaying(self, step: int) -> bool:
        return self.use_decay and step < self.steps / 2

    def _update(self, track: bool, decay: bool, lr_factor: float | Tensor) -> Tensor:
        """Draw a batch, compute the gradients, take the optimiser step (and the bias decay): the step's task
        loss per instance."""
        x, target = self.batch()
        if self.by_hand:
            task, h = self.model.loss_and_grads(x, target, self.l1 if self.use_l1 else None,
                                                self.l1_out if self.use_l1_out else None)
            if track:
                self._track_activations(h)
        else:
            loss, task = self.loss(x, target, track)
            self.optimizer.zero_grad()
            if self._trainer is not None:  # Lightning's backward: DDP's gradient hooks run through it
                self.manual_backward(loss)
            else:
                loss.backward()
        # The paper's cosine schedule (AdamW, TMS', keeps its rate constant). The optimiser is called directly:
        # Lightning's wrapper costs more than the step at the default shapes, and manual optimisation needs
        # nothing from it (the loop's length is the dataloader's).
        self.optimizer.step(lr_factor=lr_factor)
        if decay:
            with torch.no_grad():
                self.model.bias.mul_(self.decay_factor[:, None])
        return task

    def _graph_step(self, step: int) -> None:
        """The step as a captured CUDA graph: one launch instead of ~40, for steps bound by launch overhead.

        One graph per (activation statistics tracked, bias decayed) pair, captured on first use; the
        schedule's factor is a device scalar written before each replay; the data generators are registered
        with each graph, so every replay draws fresh samples.
        """
        track, decay = step % TRACK_EVERY == 0, self._decaying(step)
        self._lr_factor.fill_(cosine_factor(step, self.t_max))
        if (track, decay) not in self.graphs:
            graph = torch.cuda.CUDAGraph()
            for g in self.stream.gens + self.stream.noise_gens:
                graph.register_generator_state(g)
            pool = next(iter(self.graphs.values()))[0].pool() if self.graphs else None
            host = self.optimizer.t, self._n_tracked  # capturing runs the step's Python, not its kernels
            with torch.cuda.graph(graph, pool=pool, stream=self._side_stream):
                task = self._update(track, decay, self._lr_factor)
            self.optimizer.t, self._n_tracked = host
            self.graphs[track, decay] = (graph, task)
        graph, task = self.graphs[track, decay]
        graph.replay()
        self.optimizer.t += 1  # the host-side effects of the captured step
        if track:
            self._n_tracked += self.stream.batch_size
        self._bookkeep(step, task)

    def batch(self) -> tuple[Tensor, Tensor]:
        """A fresh batch: each instance's inputs x (inst, batch, m) and targets (inst, batch, out), this
        process's slice of it under data parallelism."""
        f = self.stream.next()  # (dens, seed, batch, N)
        x, target = self.world.inputs(f).flatten(0, 1), self.world.targets(f).flatten(0, 1)  # once per stream
        if self.gather:
            x, target = x[self.source], target[self.source]
        if self.use_noise:  # train-time input noise: one stream per seed, scaled per instance
            x = torch.addcmul(x, self.noise_std[:, None, None], self.stream.noise(x.shape[-1])[self.seed_idx])
        if self.ranks > 1:  # this rank's slice of the batch
            part = x.shape[1] // self.ranks
            x, target = (t[:, self.rank * part:(self.rank + 1) * part] for t in (x, target))
        return x, target

    def loss(self, x: Tensor, target: Tensor, track: bool = False) -> tuple[Tensor, Tensor]:
        """(Total loss summed over instances, task loss per instance), through autograd."""
        h, y = self.model(x)
        inhibition = self._inhibition(h) if self.use_inhibit and self._n_tracked > 1 else None
        if self.use_inhibit or track:
            self._track_activations(h.detach())
        loss = task = task_loss(y, target, self.importance)
        if self.use_l1:
            loss = loss + self.l1 * l1_penalty(h)
        if self.use_l1_out:  # the "lasso" of the paper's discussion: L1 on the outputs as well
            loss = loss + self.l1_out * l1_penalty(y)
        if inhibition is not None:
            loss = loss + self.inhibit * inhibition
        return loss.sum(), task.detach()  # instances are independent: sum, not mean

    @torch.no_grad()
    def _bookkeep(self, step: int, task: Tensor) -> None:
        """The step's losses, and a curve point when one is due."""
        self.losses[self._loss_n].copy_(task)
        self._loss_n += 1
        if step + 1 in self.record_at:
            self._record(step + 1)

    def _inhibition(self, h: Tensor) -> Tensor:
        """The L2E penalty against the statistics of the outputs seen before this batch, per instance."""
        mean = self.act_mean.to(h.dtype)
        var = (self.act_m2 / (self.act_count - 1)).to(h.dtype)
        scores = phi(h.detach(), mean, var)
        n = scores[0].numel()  # on the host, so the step does not wait for the device (+1: float32 rounding of frac)
        k_max = min(n, max(math.ceil(f * n) for f in self._inhibit_fracs) + 1)
        self.inhibit_tau.copy_(moving_threshold(scores, self.inhibit_frac, self.inhibit_tau, k_max=k_max))
        return inhibition_penalty(h, mean, scores, self.inhibit_tau)

    @torch.no_grad()
    def _track_activations(self, h: Tensor) -> None:
        """Merge this batch into the running mean and M2 of each neuron (Chan et al.'s parallel Welford)."""
        n_b = h.shape[1]
        mean_f = h.mean(1)  # (inst, k); per-batch moments in float32, merged in float64
        m2_b = (h - mean_f[:, None]).pow(2).sum(1).double()
        mean_b = mean_f.double()
        if self.ranks > 1:  # the whole batch's moments from every rank's slice (equal sizes)
            means, m2s = self.all_gather(mean_b), self.all_gather(m2_b)  # (ranks, inst, k)
            mean_b = means.mean(0)
            m2_b = m2s.sum(0) + n_b * (means - mean_b).pow(2).sum(0)
            n_b *= self.ranks
        total = self.act_count + n_b
        delta = mean_b - self.act_mean
        self.act_mean += delta * (n_b / total)
        self.act_m2 += m2_b + delta.pow(2) * (self.act_count * n_b / total)
        self.act_count.fill_(total)
        self._n_tracked += n_b

    @torch.no_grad()
    def _record(self, step: int) -> None:
        window = self.losses[:self._loss_n]  # the steps since the last point: step - n, ..., step - 1
        bad = ~torch.isfinite(window)
        first_bad = step - self._loss_n + bad.int().argmax(0)
        self.diverged_at.copy_(torch.where(bad.any(0) & (self.diverged_at < 0), first_bad, self.diverged_at))
        loss = window.mean(0)
        if self.ranks > 1:
            loss = self.all_gather(loss).mean(0)
        if self.model.privileged:  # models whose hidden units are neurons; the 0.999 rule needs fp32, not TF32
            probes = self.world.probes
            with matmul_precision_of("highest"):
                sfa = single_feature_activations(self.model, probes[self.seed_idx] if probes.dim() == 3 else probes)
            mono = count_mono(sfa) / self.world.cfg.n_features
        else:
            mono = torch.full_like(self.lr, float("nan"))
        row = {"loss": loss, "mono_per_feature": mono, "mean_bias": self.model.bias.mean(-1)}
        self.curves.steps.append(step)
        for k, v in row.items():
            self.curves.values[k].append(v)
        self._loss_n = 0


