"""Training progress that reads well in a stage log: Lightning's bar on a terminal, otherwise one line per
tenth of training or every 30 s, whichever comes first (step, loss, time left), and none of Lightning's
advertisements.

A bar redrawn into a file is thousands of carriage-return frames (DVC's log of a default run had ~5,000);
a line per tenth says the same in ten lines.
"""

from __future__ import annotations

import logging
import math
import sys
import time
import warnings

import lightning.pytorch as L
import torch

# Lightning logs a "💡 Tip" for its cloud products from every Trainer (45 times in a default run), and the
# end of a fit that this module's last line already reports.
_NOISE = ("💡", "`Trainer.fit` stopped")


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_NOISE)


_DROP = _DropNoise()


def quiet_lightning() -> None:
    """Drop Lightning's tips and a deprecation it raises inside itself (torch's LeafSpec, nothing a user can
    act on); its device lines and real warnings stay."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_DROP)  # the loggers its rank-zero messages are made on
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


def on_terminal() -> bool:
    return sys.stderr.isatty()


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60}m {seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class ProgressLines(L.Callback):
    """One line each time training passes a tenth of its steps, or `every` seconds after the last line (at the
    end of a chunk of steps): the step, the mean over instances of the module's first curve (the loss, or the
    SAEs' MSE) at its latest record, and the time left at the rate so far. Reads `steps`, `start_step` and
    `curves` of a monosem module; rank zero only."""

    def __init__(self, parts: int = 10, stream=None, every: float = 30.0):
        self.parts, self.stream, self.every = parts, stream, every

    def on_train_start(self, trainer, module) -> None:
        self.start, self.clock = module.start_step, time.monotonic()
        self.last = self.clock
        self.next = self._boundary(module, self.start) + 1

    def _boundary(self, module, step: int) -> int:
        return math.floor(step * self.parts / module.steps)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        first, count = (int(v) for v in batch)
        done = first + count
        now = time.monotonic()
        due = self._boundary(module, done) >= self.next or now - self.last >= self.every or done >= module.steps
        if not due or not trainer.is_global_zero:
            return
        self.next, self.last = max(self.next, self._boundary(module, done) + 1), now
        elapsed = now - self.clock
        left = elapsed / max(done - self.start, 1) * (module.steps - done)
        line = f"  step {done}/{module.steps} ({100 * done // module.steps}%)"
        curves = module.curves
        if curves.steps:
            name, rows = next(iter(curves.values.items()))
            values = rows[-1][torch.isfinite(rows[-1])]
            if len(values):
                line += f"  {name} {values.mean().item():.4g}"
        line += f"  {_duration(left)} left" if done < module.steps else f"  done in {_duration(elapsed)}"
        print(line, file=self.stream or sys.stdout, flush=True)
