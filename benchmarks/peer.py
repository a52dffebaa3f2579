"""The batched module against a plain single-model loop of the paper's algorithm, side by side in one run.

    python benchmarks/peer.py [--shapes default,regime] [--scale 1.0] [--threads 0]

The peer is the authors' loop written plainly (their `model3.py`): nn.Sequential(Linear, ReLU, Linear without
bias), `torch_optimizer.Lamb`, `CosineAnnealingLR` stepped every iteration, the bias decay b ← b(1 − decay·lr)
for the first half, a fresh batch every step, one model after another. It starts from the same initial
weights and draws the same samples (the same seeded stream and sampler) as the batched module, which trains
all the study's instances at once through Lightning, as `train@<study>` does. Reported: seconds per model
(training loop only), the ratio, and both loops' final eval loss and #mono/#features (mean ± std over the
instances), which must agree within the instances' spread; and the ceiling: the speed-up the batched module
would have if its step cost no more than its five matmuls (plain seconds per model ÷ the matmuls' seconds per
model at the batched layout, timed alone), which no batching of the same math can pass on this machine.
Timings in the same run as the matmul peak.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch_optimizer
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from train_throughput import matmuls_alone, timed_fit  # noqa: E402

from monosem.analysis.metrics import measure  # noqa: E402
from monosem.config import Study, World  # noqa: E402
from monosem.params import load_params  # noqa: E402
from monosem.toy.models import ToyModels  # noqa: E402
from monosem.training.timing import matmul_rate  # noqa: E402
from monosem.worlds import derive_seed, generate_world  # noqa: E402


def shapes() -> dict[str, tuple[World, Study]]:
    params = load_params(ROOT / "params.yaml")
    lr1 = params.studies["LR1"]
    regime = Study(world="w", model={"neurons": 256}, seeds=[0, 1, 2],
                   train={"steps": 4096, "batch_size": 1024, "lr": 0.01, "t_max": 512, "bias_offset": -1.0,
                          "bias_decay": 0.3})
    shared = params.worlds[lr1.world].model_copy(update={"embedder": "shared"})  # one P: both loops see the same
    return {"default": (shared, lr1),
            "regime": (World(n_features=128, d_embed=32, eps=1 / 16, n_eval=8192, seed=0), regime)}


def plain_loop(world, inst) -> tuple[nn.Sequential, float]:
    """One model trained by the authors' loop; returns (net, seconds)."""
    cfg = inst.train
    toy = ToyModels(1, world.cfg.d_embed, inst.model.neurons, world.d_out)
    toy.init_instance(0, inst.seed, cfg.bias_offset)  # the batched module's initial weights
    l1, l2 = nn.Linear(world.cfg.d_embed, inst.model.neurons), nn.Linear(inst.model.neurons, world.d_out, bias=False)
    with torch.no_grad():
        l1.weight.copy_(toy.W1[0]), l1.bias.copy_(toy.b1[0]), l2.weight.copy_(toy.W2[0])
    net = nn.Sequential(l1, nn.ReLU(), l2)
    opt = torch_optimizer.Lamb(net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.t_max)
    gen = torch.Generator().manual_seed(derive_seed(world.cfg.seed, inst.seed, "data"))
    start = time.perf_counter()
    for i in range(cfg.steps):
        f = world.sample(cfg.batch_size, gen)
        y = net(world.inputs(f))
        loss = ((y - world.targets(f)) ** 2).sum() / cfg.batch_size
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if i < cfg.steps / 2:
            with torch.no_grad():
                l1.bias.mul_(1 - cfg.bias_decay * cfg.lr)
    return net, time.perf_counter() - start


def evaluate(world, W1, b1, W2) -> tuple[list[float], list[float]]:
    model = ToyModels(len(W1), W1.shape[2], W1.shape[1], W2.shape[1])
    with torch.no_grad():
        model.W1.copy_(W1), model.b1.copy_(b1), model.W2.copy_(W2)
    v = measure(model, world.probes, world.inputs(world.eval_f), world.targets(world.eval_f))
    return v["loss"].tolist(), v["mono_per_feature"].tolist()


def spread(xs: list[float]) -> str:
    return f"{statistics.fmean(xs):.4f} ± {statistics.stdev(xs) if len(xs) > 1 else 0:.4f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="default,regime")
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of each study's steps")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for name in args.shapes.split(","):
        world_cfg, study = shapes()[name]
        steps = max(64, int(study.train.steps * args.scale))
        study = study.model_copy(update={"train": study.train.model_copy(update={"steps": steps})})
        world = generate_world(world_cfg)
        insts = study.instances()
        batched_s, module = timed_fit(world, insts)
        b = evaluate(world, module.model.W1.detach(), module.model.b1.detach(), module.model.W2.detach())
        nets, plain_s = [], 0.0
        for inst in insts:
            net, secs = plain_loop(world, inst)
            nets.append(net)
            plain_s += secs
        p = evaluate(world, *(torch.stack([getattr(n[i], a).detach() for n in nets])
                              for i, a in ((0, "weight"), (0, "bias"), (2, "weight"))))
        i0 = insts[0]
        alone = statistics.median(matmuls_alone(len(insts), i0.train.batch_size, world.cfg.d_embed, i0.model.neurons,
                                                world.d_out, 50) for _ in range(3))
        rows.append((name, world.cfg, insts, steps, batched_s, plain_s, b, p, alone * steps))
    peak = matmul_rate(repeats=20)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; dense matmul 1024²: {peak / 1e9:.0f} GFLOP/s "
          f"in this run\n")
    print("| shape | models | steps | batched s/model | plain s/model | speed-up | ceiling (matmuls only) | "
          "loss batched | loss plain | #mono/#features batched | #mono/#features plain |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, w, insts, steps, bs, ps, b, p, mm in rows:
        i0 = insts[0]
        print(f"| {name}: N {w.n_features}, m {w.d_embed}, k {i0.model.neurons}, B {i0.train.batch_size} | "
              f"{len(insts)} | {steps} | {bs / len(insts):.2f} | {ps / len(insts):.2f} | {ps / bs:.1f}× | "
              f"{ps / mm:.1f}× | {spread(b[0])} | {spread(p[0])} | {spread(b[1])} | {spread(p[1])} |")


if __name__ == "__main__":
    main()
