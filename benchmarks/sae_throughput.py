"""SAE training throughput: the batched Lightning module (a sweep × seeds in one module) against plain PyTorch
loops of the same math, for 4× and 16× dictionaries on a default SAE study's activations, and against this
machine's measured dense-matmul rate.

    python benchmarks/sae_throughput.py [--sae SAE_HIDDEN] [--arch relu] [--instances 8] [--steps 300] [--repeats 5]

Rows (medians over interleaved repeats; activations/s counts every SAE's inputs, instances × batch per step):
- Lightning: `SAEStudyModule` under `fit`, its training loop only (first batch to end);
- bare loop: the module's own step driven by a for-loop (the difference is Lightning itself);
- one at a time: a textbook loop that trains the same SAEs one after another, each with 2-D matmuls and its
  own Adam (what batching saves); it is ReLU-L1, so compare it with `--arch relu` (the default).
FLOPs per step and SAE: the encoder and decoder matmuls, forward and backward, 6·B·n·m each (12·B·n·m).
Activations come from the study's source (the toy model's layer), drawn fresh every step in all three loops.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_throughput import Stopwatch, matmul_flops  # noqa: E402

from monosem.config import load_params  # noqa: E402
from monosem.lit import fit  # noqa: E402
from monosem.models import ToyModels  # noqa: E402
from monosem.sae_lit import Activations, SAEStudyModule, eval_features  # noqa: E402
from monosem.worlds import generate_world  # noqa: E402


def lightning_loop(make) -> float:
    module, watch = make(), Stopwatch()
    fit(module, callbacks=[watch], progress=False)
    return watch.seconds


def bare_loop(module: SAEStudyModule, steps: int) -> float:
    module.on_train_start()
    opt = module.configure_optimizers()

    class Opt:  # what `_step` expects of Lightning's optimiser wrapper
        optimizer = opt
        step = opt.step
        zero_grad = opt.zero_grad

    module.manual_backward = lambda loss: loss.backward()
    t = time.perf_counter()
    for step in range(steps):
        module._step(step, Opt)
    return time.perf_counter() - t


def one_at_a_time(source, probs, n: int, m: int, lambdas: list[float], batch: int, steps: int, lr: float) -> float:
    """ReLU-L1 SAEs with unit-norm decoders, trained one after another: the plainest loop of the same math."""
    t = time.perf_counter()
    for j, lam in enumerate(lambdas):
        gen = torch.Generator().manual_seed(j)
        W_dec = torch.randn(m, n, generator=gen)
        W_dec = (W_dec / W_dec.norm(dim=-1, keepdim=True)).requires_grad_()
        W_enc = W_dec.detach().clone().requires_grad_()
        b_enc, b_dec = torch.zeros(m, requires_grad=True), torch.zeros(n, requires_grad=True)
        opt = torch.optim.Adam([W_enc, b_enc, W_dec, b_dec], lr=lr)
        for _ in range(steps):
            x = source(source.world.sample(batch, gen, probs))
            f = F.relu((x - b_dec) @ W_enc.T + b_enc)
            x_hat = f @ W_dec + b_dec
            loss = (x - x_hat).pow(2).sum(-1).mean() + lam * f.sum(-1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            with torch.no_grad():
                W_dec.grad -= (W_dec.grad * W_dec).sum(-1, keepdim=True) * W_dec
            opt.step()
            with torch.no_grad():
                W_dec /= W_dec.norm(dim=-1, keepdim=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sae", default="SAE_HIDDEN")
    ap.add_argument("--arch", default="relu")
    ap.add_argument("--instances", type=int, default=8)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    cfg = params.saes[args.sae]
    world = generate_world(params.worlds[cfg.world])
    inst = next(i for i in params.studies[cfg.study].instances() if i.label == cfg.instance)
    model = ToyModels(1, world.cfg.d_embed, inst.model.neurons, world.d_out, inst.model.activation)
    model.init_instance(0, 0, inst.train.bias_offset)  # untrained weights: the cost is the same
    model.requires_grad_(False)
    world = world.with_eps(inst.data.eps)
    source = Activations(world, model, cfg.layer, eval_features(world, world.probs, 4096))
    n = source(world.eval_f[:1]).shape[-1]
    B, lam = cfg.train.batch_size, [0.01 * (1 + i) for i in range(args.instances)]
    train = cfg.train.model_copy(update={"steps": args.steps, "log_points": 4})
    peak = matmul_flops()
    print(f"sae {args.sae}: {cfg.layer} layer, n = {n}; {args.arch}, {args.instances} SAEs, batch {B}, {args.steps} "
          f"steps, median of {args.repeats}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"dense matmul 1024²: {peak / 1e9:.1f} GFLOP/s\n")
    print("| dictionary | loop | activations/s | step ms | GFLOP/s | vs one at a time | vs matmul peak |")
    print("|---|---|---|---|---|---|---|")
    for mult in (4, 16):
        m = mult * n
        make = lambda: SAEStudyModule(source, world.probs, args.arch, lam, [0], m, train)  # noqa: E731
        lightning_loop(make)  # warm-up
        lit, bare, plain = [], [], []
        for _ in range(args.repeats):  # interleaved, so drifts in machine speed hit all alike
            lit.append(lightning_loop(make))
            bare.append(bare_loop(make(), args.steps))
            plain.append(one_at_a_time(source, world.probs, n, m, lam, B, args.steps, cfg.train.lr))
        flops = 12 * B * n * m * args.instances * args.steps
        acts = B * args.instances * args.steps
        ref = statistics.median(plain)
        for name, secs in (("Lightning, batched", lit), ("bare loop, batched", bare), ("one at a time", plain)):
            s = statistics.median(secs)
            print(f"| {mult}× ({m}) | {name} | {acts / s:,.0f} | {1e3 * s / args.steps:.2f} | {flops / s / 1e9:.1f} | "
                  f"{ref / s:.2f} | {flops / s / peak:.2f} |")


if __name__ == "__main__":
    main()
