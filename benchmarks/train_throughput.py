"""Training throughput of the batched Lightning module vs a plain PyTorch loop of the same math, and both
against this machine's measured dense-matmul rate.

    python benchmarks/train_throughput.py [--study LR1] [--steps 1500] [--repeats 5]

Prints a markdown table of medians over interleaved repeats. The Lightning row times its training loop
(first batch to end); its Trainer start-up is printed separately. Samples/s counts every instance's samples
(instances × batch per step). FLOPs per step are the matmuls of forward and backward:
4·B·k·m + 6·B·k·d_out per instance (no gradient w.r.t. the input x).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

import lightning.pytorch as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from monosem.config import load_params  # noqa: E402
from monosem.lit import ToyStudyModule, fit  # noqa: E402
from monosem.optim import cosine_factor  # noqa: E402
from monosem.worlds import generate_world  # noqa: E402


def matmul_flops(n: int = 1024, repeats: int = 20) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times)


def plain_loop(module: ToyStudyModule, steps: int) -> float:
    """The module's own step (sampling, loss, bias decay, bookkeeping) and optimiser, driven by a bare
    for-loop instead of Lightning: the only difference is Lightning itself."""
    module.on_train_start()
    opt = module.configure_optimizers()
    t = time.perf_counter()
    for step in range(steps):
        loss, task = module.loss(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.param_groups[0]["lr"] = module.lr * cosine_factor(step, module.t_max)
        opt.step()
        module.after_update(step, task)
    return time.perf_counter() - t


def with_steps(instances, steps: int):
    return [i.model_copy(update={"train": i.train.model_copy(update={"steps": steps})}) for i in instances]


class Stopwatch(L.Callback):
    """Times the training loop itself, from the first batch to the end, without Trainer start-up."""

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == 0:
            self.start = time.perf_counter()

    def on_train_end(self, trainer, module):
        self.seconds = time.perf_counter() - self.start


def lightning_loop(world, instances, steps: int) -> tuple[float, float]:
    """(seconds in the training loop, seconds for the whole fit including Trainer start-up)."""
    module, watch = ToyStudyModule(world, with_steps(instances, steps)), Stopwatch()
    t = time.perf_counter()
    fit(module, callbacks=[watch], progress=False)
    return watch.seconds, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default="LR1")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    study = params.studies[args.study]
    world = generate_world(params.worlds[study.world])
    instances = study.instances()
    i0 = instances[0]
    n_inst, B, k, m, d_out = len(instances), i0.train.batch_size, i0.model.neurons, world.cfg.d_embed, world.d_out
    flops_step = n_inst * (4 * B * k * m + 6 * B * k * d_out)
    samples = n_inst * B * args.steps

    lightning_loop(world, instances, 20)  # warm-up (and Lightning's deterministic mode, on for both loops)
    lit, fit_total, plain = [], [], []
    for _ in range(args.repeats):  # interleaved, so drifts in machine speed hit both alike
        loop_s, total_s = lightning_loop(world, instances, args.steps)
        lit.append(loop_s)
        fit_total.append(total_s)
        plain.append(plain_loop(ToyStudyModule(world, with_steps(instances, args.steps)), args.steps))
    lit, plain, startup = statistics.median(lit), statistics.median(plain), statistics.median(
        t - s for t, s in zip(fit_total, lit))
    peak = matmul_flops()

    print(f"study {args.study}: {n_inst} instances, B={B}, m={m}, k={k}, out={d_out}; {args.steps} steps, "
          f"median of {args.repeats}; torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| loop | samples/s | step ms | GFLOP/s | vs plain | vs matmul peak |")
    print("|---|---|---|---|---|---|")
    for name, secs in (("Lightning (batched module)", lit), ("plain PyTorch loop", plain)):
        rate = flops_step * args.steps / secs
        print(f"| {name} | {samples / secs:,.0f} | {1e3 * secs / args.steps:.2f} | {rate / 1e9:.1f} | "
              f"{plain / secs:.2f} | {rate / peak:.2f} |")
    print(f"| dense matmul 1024² (peak) | | | {peak / 1e9:.1f} | | 1.00 |")
    print(f"\nLightning Trainer start-up, outside the loop: {startup:.2f} s per fit (median).")


if __name__ == "__main__":
    main()
