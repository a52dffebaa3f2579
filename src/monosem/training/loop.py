"""The training loop shared by the toy models (`training.toy.ToyStudyModule`) and the SAEs (`training.sae.SAEStudyModule`):
a module that takes its own optimiser steps, seen by Lightning as chunks of steps; its curve points; the
callbacks that hand curves and checkpoints out while it trains; `fit`.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import lightning.pytorch as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader

STEPS_PER_BATCH = 16


def log_steps(steps: int, points: int) -> list[int]:
    """Steps (counted after the update) at which curves are recorded: powers of two, as the authors'
    snapshots, plus `points` evenly spaced ones, plus the last."""
    powers = {2 ** i for i in range(int(math.log2(steps)) + 1)}
    even = {max(1, round(j * steps / points)) for j in range(1, points + 1)}
    return sorted(powers | even | {steps})


@dataclass
class Curves:
    """Curve points: a step and one value per instance for each curve (`Curves.of(names)` starts empty ones). Points are recorded on the training
    device and moved to the CPU together (`settle`), so recording one never waits for the device."""

    steps: list[int] = field(default_factory=list)
    values: dict[str, list[Tensor]] = field(default_factory=dict)
    settled: int = 0

    @classmethod
    def of(cls, names: tuple[str, ...]) -> Curves:
        return cls(values={k: [] for k in names})

    def settle(self) -> None:
        n = len(self.steps)
        if n > self.settled:
            for k, v in self.values.items():
                v[self.settled:n] = torch.stack(v[self.settled:n]).cpu().unbind()
            self.settled = n

    def row(self, j: int) -> dict[str, Tensor]:
        self.settle()
        return {k: v[j] for k, v in self.values.items()}


class ChunkedSteps(L.LightningModule):
    """A module trained by its own `_step(step, opt)` (manual optimisation) for `steps` steps from `start_step`;
    Lightning sees each chunk of steps as one batch."""

    def train_dataloader(self):
        # Each "batch" is a chunk of steps (first step, count); samples are drawn on the device. Chunking
        # amortises Lightning's per-batch hooks (~0.8 ms) over STEPS_PER_BATCH optimiser steps.
        # Under DDP a chunk is one step: its reducer expects one backward pass per forward call.
        per = STEPS_PER_BATCH if self.trainer.world_size == 1 else 1
        chunks = [(s, min(per, self.steps - s)) for s in range(self.start_step, self.steps, per)]
        return DataLoader(chunks, batch_size=None)

    def training_step(self, batch, batch_idx: int):
        first, count = batch
        opt = self.optimizers()
        for step in range(first, first + count):
            self._step(step, opt)
        self.done = first + count

    def on_train_end(self) -> None:
        self.curves.settle()


class CurveSink(L.Callback):
    """Hands newly recorded curve rows to `sink(steps, rows)` at most every `every_s` seconds and at the end."""

    def __init__(self, sink: Callable[[list[int], list[dict[str, Tensor]]], None], every_s: float):
        self.sink, self.every_s, self.clock = sink, every_s, time.monotonic
        self.sent = 0
        self.last = self.clock()

    def _flush(self, module: ChunkedSteps) -> None:
        n = len(module.curves.steps)
        module.curves.settle()
        if n > self.sent:
            self.sink(module.curves.steps[self.sent:n], [module.curves.row(j) for j in range(self.sent, n)])
            self.sent = n
        self.last = self.clock()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if self.clock() - self.last > self.every_s:
            self._flush(module)

    def on_train_end(self, trainer, module):
        self._flush(module)


class Checkpointer(L.Callback):
    """Hands `save(step, tensors, meta)` the module's checkpoint whenever a chunk of steps crosses a
    multiple of `every` steps."""

    def __init__(self, every: int, save: Callable[[int, dict[str, Tensor], dict], None]):
        self.every, self.save = every, save

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        first, count = (int(v) for v in batch)
        if (first + count) // self.every > first // self.every:
            self.save(first + count, *module.checkpoint())


def fit(module: ChunkedSteps, accelerator: str = "cpu", callbacks: list | None = None, progress: bool = True,
        devices: int = 1, strategy: str = "auto", num_nodes: int = 1, matmul_precision: str = "highest",
        cuda_graphs: bool = False) -> None:
    """Train a study's module (a toy study's or an SAE study's). Subnormal floats are flushed to zero from `import monosem` on (see there).

    `matmul_precision` "high" lets float32 matmuls use TF32 on GPUs that have it (training only: curve points
    and every metric are computed at full precision); `cuda_graphs` replays each step as a captured graph.
    With `progress`: Lightning's bar on a terminal, else a line per tenth of training (monosem.training.progress).
    """
    from monosem.training.progress import ProgressLines, on_terminal, quiet_lightning

    quiet_lightning()
    callbacks = list(callbacks or [])
    bar = progress and on_terminal()
    if bar:
        callbacks.append(L.callbacks.TQDMProgressBar(refresh_rate=max(1, module.steps // STEPS_PER_BATCH // 50)))
    elif progress:
        callbacks.append(ProgressLines())
    module.use_cuda_graphs = cuda_graphs
    trainer = L.Trainer(max_epochs=1, accelerator=accelerator, devices=devices,
                        strategy=strategy, num_nodes=num_nodes, use_distributed_sampler=False, logger=False,
                        enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=bar,
                        callbacks=callbacks, num_sanity_val_steps=0, deterministic=accelerator == "cpu")
    with matmul_precision_of(matmul_precision):
        trainer.fit(module)


@contextmanager
def matmul_precision_of(precision: str):
    """torch's float32 matmul precision set for a block, then restored."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)
