"""Training step time against the time of the step's own matmuls, at three shapes, and the Lightning loop
against a bare loop of the same module.

    python benchmarks/train_throughput.py [--shapes default,regime,paper] [--repeats 5] [--threads 0] [--each]

Per shape: the median over interleaved repeats of (a) one whole training step of the batched module (sampling,
embedding, forward, backward, LAMB, bias decay, activation statistics, bookkeeping and curve points at a real
run's cadence: steps 1024 on of a run of the study's length), driven by a bare loop, and (b) its five matmuls alone, at the same instance layout and sizes: forward of both layers and the
backward's three (∂W2 = gᵀh, ∂h = g·W2, ∂W1 = ∂preᵀx). The ratio (a)/(b) is what the step costs beyond its
arithmetic; the step is timed with the fused CPU passes (the default: LAMB in one numba pass per block, the
sampler's uniforms to features in one) and with torch's ops for both (what a GPU runs, and the CPU ran before
the fused passes); --each times each fused pass alone too (LAMB's, the sampler's). GFLOP/s count those matmuls: 4·B·k·m + 6·B·k·N per instance and step. Shapes:
  default  the default profile's LR1 study (params.yaml): its instances, N, m, k, B
  regime   N 128, m 32, k 256, B 1024, 3 seeds (the scale of the bias trick's regime, issue 16)
  paper    N 512, m 64, k 1024, B 8192, 2 instances (the paper's shape; a few steps on the CPU)
Then the default shape trained by `fit` (Lightning, as the stage does) against the bare loop.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from monosem.config import Study, World  # noqa: E402
from monosem.params import load_params  # noqa: E402
from monosem.training.loop import fit  # noqa: E402
from monosem.training.timing import matmul_rate  # noqa: E402
from monosem.training.toy import ToyStudyModule  # noqa: E402
from monosem.worlds import generate_world  # noqa: E402


def shapes() -> dict[str, tuple[World, Study]]:
    params = load_params(ROOT / "params.yaml")
    lr1 = params.studies["LR1"]
    big = lambda k, B, seeds: Study(world="w", model={"neurons": k}, seeds=seeds,  # noqa: E731
                                    train={"steps": 4096, "batch_size": B, "lr": 0.01, "t_max": 512,
                                           "bias_offset": -1.0, "bias_decay": 0.3})
    return {"default": (params.worlds[lr1.world], lr1),
            "regime": (World(n_features=128, d_embed=32, eps=1 / 16, n_eval=1024, seed=0), big(256, 1024, [0, 1, 2])),
            "paper": (World(n_features=512, d_embed=64, eps=1 / 64, n_eval=1024, seed=0), big(1024, 8192, [0, 1]))}


class Stopwatch(L.Callback):
    """Times the training loop itself, from the first batch to the end, without Trainer start-up."""

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == 0:
            self.start = time.perf_counter()

    def on_train_end(self, trainer, module):
        self.seconds = time.perf_counter() - self.start


def with_steps(instances, steps: int):
    return [i.model_copy(update={"train": i.train.model_copy(update={"steps": steps})}) for i in instances]


def timed_fit(world, instances) -> tuple[float, ToyStudyModule]:
    """(seconds in the training loop, the trained module): trained by `fit`, as the train stage does."""
    module, watch = ToyStudyModule(world, instances), Stopwatch()
    fit(module, callbacks=[watch], progress=False)
    return watch.seconds, module


def bare_steps(world, instances, steps: int, start: int = 1024, fused: bool = True, sampler: bool | None = None) -> float:
    """Seconds per step of the module's own step driven by a bare for-loop (no Lightning): steps start ..
    start + steps − 1 of a run as long as the instances' own (so its curve points come at a real run's cadence,
    about one step in 40 at the default, and the bias decay of the first half is on), after 8 warm-up steps.
    `fused`: LAMB and the sampler as numba passes (the CPU default), else torch's ops (what a GPU runs);
    `sampler`, if given, for the sampler alone (`fused` then for LAMB alone)."""
    total = max(max(i.train.steps for i in instances), start + steps)
    module = ToyStudyModule(world, with_steps(instances, total))
    module.configure_optimizers()
    module.optimizer.fused = module.optimizer.fused and fused
    module.on_train_start()
    module.stream.fused = module.stream.fused and (fused if sampler is None else sampler)  # set by on_train_start
    for step in range(start - 8, start):  # warm-up: allocations, the first curve point's buffers
        module._step(step, None)
    t = time.perf_counter()
    for step in range(start, start + steps):
        module._step(step, None)
    return (time.perf_counter() - t) / steps


def matmuls_alone(n: int, B: int, m: int, k: int, d: int, steps: int) -> float:
    """Seconds per step of the step's five matmuls alone, at the module's layout (inst, batch, ·)."""
    x, W1, W2 = torch.randn(n, B, m), torch.randn(n, k, m), torch.randn(n, d, k)
    h, g = torch.randn(n, B, k), torch.randn(n, B, d)
    out = [torch.empty(n, B, k), torch.empty(n, B, d), torch.empty(n, d, k), torch.empty(n, B, k), torch.empty(n, k, m)]

    def once():
        torch.bmm(x, W1.transpose(1, 2), out=out[0]), torch.bmm(h, W2.transpose(1, 2), out=out[1])
        torch.bmm(g.transpose(1, 2), h, out=out[2]), torch.bmm(g, W2, out=out[3]), torch.bmm(h.transpose(1, 2), x, out=out[4])

    for _ in range(3):
        once()
    t = time.perf_counter()
    for _ in range(steps):
        once()
    return (time.perf_counter() - t) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="default,regime,paper")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    ap.add_argument("--each", action="store_true", help="also each fused pass alone (LAMB's, the sampler's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    table, each = {}, {}
    for name in args.shapes.split(","):
        world_cfg, study = shapes()[name]
        world, insts = generate_world(world_cfg), study.instances()
        i0 = insts[0]
        n, B, k, m, d = len(insts), i0.train.batch_size, i0.model.neurons, world.cfg.d_embed, world.d_out
        flops = n * (4 * B * k * m + 6 * B * k * d)
        steps = max(3, min(400, int(2e11 / flops)))  # about 200 GFLOP of matmuls per timing, at most 400 steps
        step, unfused, alone, lamb, sampler = [], [], [], [], []
        for _ in range(args.repeats):  # interleaved, so drifts in machine speed hit all alike
            step.append(bare_steps(world, insts, steps))
            unfused.append(bare_steps(world, insts, steps, fused=False))
            alone.append(matmuls_alone(n, B, m, k, d, steps))
            if args.each:
                lamb.append(bare_steps(world, insts, steps, fused=True, sampler=False))
                sampler.append(bare_steps(world, insts, steps, fused=False, sampler=True))
        table[name] = (n, B, m, k, d, flops, statistics.median(step), statistics.median(unfused),
                       statistics.median(alone))
        if args.each:
            each[name] = (statistics.median(lamb), statistics.median(sampler), min(step), max(step), min(unfused),
                          max(unfused))
    lit_vs_bare = None
    if "default" in table:
        world_cfg, study = shapes()["default"]
        world, insts = generate_world(world_cfg), with_steps(study.instances(), 1024)
        lit = statistics.median(timed_fit(world, insts)[0] / 1024 for _ in range(3))
        bare = statistics.median(bare_steps(world, insts, 1016, start=8) for _ in range(3))  # the same 1024 steps
        lit_vs_bare = (lit, bare)
    peak = matmul_rate(repeats=20)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; dense matmul 1024² (peak): "
          f"{peak / 1e9:.0f} GFLOP/s in this run; medians of {args.repeats}\n")
    print("| shape | instances × (B, m, k, N) | step ms | matmuls alone ms | step / matmuls | GFLOP/s | vs peak | "
          "step with torch's ops ms | its step / matmuls |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, (n, B, m, k, d, flops, step, unfused, alone) in table.items():
        print(f"| {name} | {n} × ({B}, {m}, {k}, {d}) | {step * 1e3:.2f} | {alone * 1e3:.2f} | {step / alone:.2f} | "
              f"{flops / step / 1e9:.1f} | {flops / step / peak:.2f} | {unfused * 1e3:.2f} | {unfused / alone:.2f} |")
    if each:
        print("\n| shape | both passes ms (range) | LAMB's pass alone ms | the sampler's alone ms | torch's ops ms (range) |"
              "\n|---|---|---|---|---|")
        for name, (lamb, sampler, lo, hi, ulo, uhi) in each.items():
            print(f"| {name} | {table[name][6] * 1e3:.2f} ({lo * 1e3:.2f}–{hi * 1e3:.2f}) | {lamb * 1e3:.2f} | "
                  f"{sampler * 1e3:.2f} | {table[name][7] * 1e3:.2f} ({ulo * 1e3:.2f}–{uhi * 1e3:.2f}) |")
    if lit_vs_bare:
        lit, bare = lit_vs_bare
        print(f"\nDefault shape, 1024 steps: Lightning's loop (`fit`) {lit * 1e3:.2f} ms per step, the bare loop "
              f"{bare * 1e3:.2f} ms: Lightning costs {100 * (lit / bare - 1):+.0f}%.")


if __name__ == "__main__":
    main()
