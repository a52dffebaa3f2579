"""SAE training throughput: the batched Lightning module (a sweep in one module) against plain PyTorch loops of
the same math that train the same SAEs one after another, and against this machine's dense-matmul rate.

    python benchmarks/sae_throughput.py [--steps 150] [--repeats 5] [--only relu|topk] [--threads N]

Two parts, medians over interleaved repeats (the matmul rate is measured in each repeat too):
- ReLU-L1 (unit-norm decoder), 8 SAEs of a λ sweep, 4× and 16× dictionaries on the default SAE studies'
  activations (SAE_INPUT: LR1's 16-dim input, SAE_HIDDEN: its 128 hidden neurons), batch 256, lr 3e-3.
  Loops: `SAEStudyModule` under `fit` (its training loop, first batch to end); the module's own step in a bare
  for-loop (the difference is Lightning), also with the plain loss under autograd instead of the fused CPU
  loss; a textbook loop (2-D matmuls, autograd, torch's Adam) per SAE.
- TopK (Gao et al.): 256 latents on 64-dim inputs (the input x = P·f of a world of 256 features, 8 active on
  average), batch 1024, lr 3e-4; a k sweep of 8 SAEs (k = 4, 8, ..., 32) in one module (also under autograd), the
  module with one SAE (k 8), and the textbook loop (topk + scatter, autograd) of that one SAE. Too few steps for
  dead latents: no AuxK.

samples/s per SAE: samples × SAEs / time, i.e. what one SAE's share of a batched step costs (a sweep of 8 at a
step of T ms: 8 × batch / T); "vs one at a time" divides the textbook loop's time per SAE by the row's.
FLOPs per SAE and step: the encoder's and decoder's matmuls as dense, forward and backward, 12·B·n·m (the fused
losses skip some: ReLU the input's gradient, TopK everything after the encoder but k latents per sample; the
ratio to the matmul rate is of this fixed count).
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

from train_throughput import Stopwatch  # noqa: E402

from monosem.config import SaeTrain, World  # noqa: E402
from monosem.params import load_params  # noqa: E402
from monosem.toy.models import ToyModels  # noqa: E402
from monosem.training.loop import fit  # noqa: E402
from monosem.training.sae import Activations, SAEStudyModule, eval_features  # noqa: E402
from monosem.training.timing import matmul_rate  # noqa: E402
from monosem.worlds import generate_world  # noqa: E402

TOPK_KS = [4, 8, 12, 16, 20, 24, 28, 32]


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


def plain(module: SAEStudyModule) -> SAEStudyModule:
    """The module with the plain loss under autograd instead of the fused CPU loss (what the fusion saves)."""
    module.sae.fused = False
    return module


def one_at_a_time(source, probs, n: int, m: int, knobs: list[float], batch: int, steps: int, lr: float,
                  topk: bool = False) -> float:
    """SAEs with unit-norm decoders trained one after another, the plainest loop of the same math: ReLU-L1 with
    λ = knob, or TopK with k = knob."""
    t = time.perf_counter()
    for j, knob in enumerate(knobs):
        gen = torch.Generator().manual_seed(j)
        W_dec = torch.randn(m, n, generator=gen)
        W_dec = (W_dec / W_dec.norm(dim=-1, keepdim=True)).requires_grad_()
        W_enc = W_dec.detach().clone().requires_grad_()
        b_enc, b_dec = torch.zeros(m, requires_grad=True), torch.zeros(n, requires_grad=True)
        opt = torch.optim.Adam([W_enc, b_enc, W_dec, b_dec], lr=lr)
        for _ in range(steps):
            x = source(source.world.sample(batch, gen, probs))
            pre = (x - b_dec) @ W_enc.T + b_enc
            if topk:
                vals, idx = pre.topk(int(knob), dim=-1)
                f = torch.zeros_like(pre).scatter(-1, idx, F.relu(vals))
                loss = (x - (f @ W_dec + b_dec)).pow(2).sum(-1).mean()
            else:
                f = F.relu(pre)
                loss = (x - (f @ W_dec + b_dec)).pow(2).sum(-1).mean() + knob * f.sum(-1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            with torch.no_grad():
                W_dec.grad -= (W_dec.grad * W_dec).sum(-1, keepdim=True) * W_dec
            opt.step()
            with torch.no_grad():
                W_dec /= W_dec.norm(dim=-1, keepdim=True)
    return time.perf_counter() - t


def study_source(params, name: str):
    """A default SAE study's activations (an untrained toy model: the cost is the same) and its training config."""
    cfg = params.saes[name]
    world = generate_world(params.worlds[cfg.world])
    inst = next(i for i in params.studies[cfg.study].instances() if i.label == cfg.instance)
    model = ToyModels(1, world.cfg.d_embed, inst.model.neurons, world.d_out, inst.model.activation)
    model.init_instance(0, 0, inst.train.bias_offset)
    model.requires_grad_(False)
    world = world.with_eps(inst.data.eps)
    return Activations(world, model, cfg.layer, eval_features(world, world.probs, 4096)), cfg.train


def measure(cases: dict, repeats: int) -> tuple[dict[str, float], float]:
    """Median seconds of each case's loop and the median matmul rate, all interleaved over the repeats (drifts in
    the machine's speed, here shared with other work, hit all alike)."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    peaks = []
    for _ in range(repeats):
        peaks.append(matmul_rate(repeats=20))
        for name, run in cases.items():
            times[name].append(run())
    return {k: statistics.median(v) for k, v in times.items()}, statistics.median(peaks)


def row(label: str, name: str, secs: float, saes: int, batch: int, steps: int, flops_sae_step: float, ref: float,
        peak: float) -> str:
    flops = flops_sae_step * saes * steps
    return (f"| {label} | {name} | {batch * saes * steps / secs:,.0f} | {1e3 * secs / steps:.2f} | "
            f"{flops / secs / 1e9:.1f} | {ref / (secs / saes):.2f} | {flops / secs / peak:.2f} |")


HEADER = ("| shape | loop | samples/s per SAE | step ms | GFLOP/s | vs one at a time | vs matmul peak |\n"
          "|---|---|---|---|---|---|---|")


def relu_part(params, steps: int, repeats: int) -> None:
    print(f"ReLU-L1, 8 SAEs (λ sweep), batch 256, {steps} steps\n\n{HEADER}")
    lam = [0.01 * (1 + i) for i in range(8)]
    for name in ("SAE_INPUT", "SAE_HIDDEN"):
        source, cfg = study_source(params, name)
        n, B = source(source.world.eval_f[:1]).shape[-1], cfg.batch_size
        train = cfg.model_copy(update={"steps": steps, "log_points": 4})
        for mult in (4, 16):
            m = mult * n
            make = lambda: SAEStudyModule(source, source.world.probs, "relu", lam, [0], m, train)  # noqa: E731
            lightning_loop(make)  # warm-up
            med, peak = measure({
                "Lightning, batched": lambda: lightning_loop(make),
                "bare loop, batched": lambda: bare_loop(make(), steps),
                "bare loop, batched, autograd": lambda: bare_loop(plain(make()), steps),
                "one at a time": lambda: one_at_a_time(source, source.world.probs, n, m, lam, B, steps, cfg.lr),
            }, repeats)
            ref = med["one at a time"] / len(lam)
            for j, (loop, secs) in enumerate(med.items()):
                label = f"{name}, n = {n}, {mult}× ({m}), matmul {peak / 1e9:.0f} GFLOP/s" if j == 0 else ""
                print(row(label, loop, secs, len(lam), B, steps, 12 * B * n * m, ref, peak))
    print()


def topk_part(steps: int, repeats: int) -> None:
    n, m, B, lr = 64, 256, 1024, 3e-4
    world = generate_world(World(n_features=256, d_embed=n, eps=8 / 256, n_eval=4096, seed=0))
    source = Activations(world, None, "input", world.eval_f)
    train = SaeTrain(steps=steps, batch_size=B, lr=lr, log_points=4)
    sweep = lambda: SAEStudyModule(source, world.probs, "topk", TOPK_KS, [0], m, train)  # noqa: E731
    alone = lambda: SAEStudyModule(source, world.probs, "topk", [8], [0], m, train)  # noqa: E731
    lightning_loop(sweep)  # warm-up, and numba's compilation
    med, peak = measure({
        f"Lightning, batched k sweep ({len(TOPK_KS)} SAEs)": lambda: lightning_loop(sweep),
        "bare loop, batched k sweep, autograd": lambda: bare_loop(plain(sweep()), steps),
        "Lightning, one SAE (k 8)": lambda: lightning_loop(alone),
        "one at a time (k 8)": lambda: one_at_a_time(source, world.probs, n, m, [8], B, steps, lr, topk=True),
    }, repeats)
    print(f"TopK, {m} latents on {n}-dim inputs, batch {B}, lr {lr:g}, {steps} steps\n\n{HEADER}")
    ref = med["one at a time (k 8)"]
    for j, (loop, secs) in enumerate(med.items()):
        label = f"TopK {m} × {n}, matmul {peak / 1e9:.0f} GFLOP/s" if j == 0 else ""
        print(row(label, loop, secs, len(TOPK_KS) if "sweep" in loop else 1, B, steps, 12 * B * n * m, ref, peak))
    print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only", choices=("relu", "topk"))
    ap.add_argument("--threads", type=int, help="torch's (and numba's) threads; default: torch's own choice")
    args = ap.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; medians of {args.repeats} interleaved "
          f"repeats; matmul: dense 1024² float32, measured in each repeat\n")
    if args.only != "topk":
        relu_part(load_params(Path(__file__).resolve().parents[1] / "params.yaml"), args.steps, args.repeats)
    if args.only != "relu":
        topk_part(args.steps, args.repeats)


if __name__ == "__main__":
    main()
