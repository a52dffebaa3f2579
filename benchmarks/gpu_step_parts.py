"""Where the paper-shape step's time goes on a GPU, and what fusing it would buy: one experiment, ~3 minutes.

    python benchmarks/gpu_step_parts.py [--out DIR] [--device cuda] [--small]

At N 512, m 64, k 1024, B 8192, 6 instances (LR1 of PROFILE=paper), TF32 matmuls: (1) a profile of one
module step (the kernels, their share); (2) the hand-written forward/backward (`ToyModels.loss_and_grads`'
math) eager, under torch.compile (default and max-autotune) and with bf16 matmuls, each against its matmuls
alone and against fp32 'highest' gradients (max relative difference).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

RESULTS: dict = {}
LINES: list[str] = []


def say(s: str = "") -> None:
    print(s, flush=True)
    LINES.append(s)


def timed(fn, device, reps=30, warm=5) -> float:
    """Median seconds of fn() over reps, after warm-ups."""
    for _ in range(warm):
        fn()
    times = []
    for _ in range(reps):
        if device == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) / 1e3)
        else:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def step_math(x, target, W1, b1, W2, mm_dtype=None):
    """loss_and_grads' relu path (no L1), out of place so torch.compile can fuse it: (task, dW1, db1, dW2)."""
    B = x.shape[1]
    c = (lambda t: t.to(mm_dtype)) if mm_dtype is not None else (lambda t: t)
    pre = torch.bmm(c(x), c(W1).transpose(1, 2)).float() + b1.unsqueeze(1)
    h = pre.clamp_min(0)
    y = torch.bmm(c(h), c(W2).transpose(1, 2)).float()
    g = y - target
    task = g.square().sum(-1).mean(-1)
    alpha = 2 / B
    dW2 = torch.bmm(c(g).transpose(1, 2), c(h)).float() * alpha
    dh = torch.bmm(c(g), c(W2)).float()
    dpre = torch.where(h > 0, dh, 0.0)
    dW1 = torch.bmm(c(dpre).transpose(1, 2), c(x)).float() * alpha
    db1 = dpre.sum(1) * alpha
    return task, dW1, db1, dW2


def section(name):
    def wrap(fn):
        def run(*a, **k):
            say(f"\n### {name}\n")
            t = time.perf_counter()
            try:
                fn(*a, **k)
            except Exception:
                say("```\n" + traceback.format_exc()[-2500:] + "```")
            say(f"\n({time.perf_counter() - t:.1f} s)")
            save()
        return run
    return wrap


OUTDIR: list[Path] = []


def save():
    for o in OUTDIR:
        o.mkdir(parents=True, exist_ok=True)
        (o / "gpu_step_parts.md").write_text("\n".join(LINES) + "\n")
        (o / "gpu_step_parts.json").write_text(json.dumps(RESULTS, indent=1, default=str))


def shapes(small: bool):
    return (6, 512, 64, 1024, 512) if small else (6, 8192, 64, 1024, 512)  # n, B, m, k, d


@section("(1) One module step, profiled (TF32 matmuls)")
def profile_module(device, small):
    from monosem.config import Study, World
    from monosem.training.loop import matmul_precision_of
    from monosem.training.toy import ToyStudyModule
    from monosem.worlds import generate_world

    n, B, m, k, d = shapes(small)
    world = generate_world(World(n_features=d, d_embed=m, eps=1 / 64, n_eval=1024, seed=0))
    st = Study(world="w", model={"neurons": k}, sweep={"train.lr": [0.001, 0.003, 0.005, 0.007, 0.01, 0.03]},
               seeds=[0], train={"steps": 4096, "batch_size": B, "lr": 0.01, "t_max": 512, "log_points": 16})
    mod = ToyStudyModule(world, st.instances()).to(device)
    mod.configure_optimizers()
    mod.on_train_start()
    with matmul_precision_of("high"):
        step = [0]

        def one():
            mod._step(step[0], None)
            step[0] += 1

        t_step = timed(one, device)
        t_batch = timed(mod.batch, device)
        x, target = mod.batch()
        t_grads = timed(lambda: mod.model.loss_and_grads(x, target), device)
        t_opt = timed(lambda: mod.optimizer.step(lr_factor=0.5), device)
        acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if device == "cuda" else [])
        with torch.profiler.profile(activities=acts) as prof:
            for _ in range(10):
                one()
            if device == "cuda":
                torch.cuda.synchronize()
    say(f"step {t_step * 1e3:.3f} ms = batch {t_batch * 1e3:.3f} + loss_and_grads {t_grads * 1e3:.3f} + "
        f"LAMB {t_opt * 1e3:.3f} (+ bookkeeping), medians of 30")
    RESULTS["module"] = {"step": t_step, "batch": t_batch, "grads": t_grads, "lamb": t_opt}
    sort = "cuda_time_total" if device == "cuda" else "cpu_time_total"
    say("\n```\n" + prof.key_averages().table(sort_by=sort, row_limit=25, max_name_column_width=60) + "\n```")


@section("(2) The forward/backward math: eager, compiled, bf16")
def variants(device, small):
    n, B, m, k, d = shapes(small)
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(n, B, m, device=device, generator=g)
    target = torch.relu(torch.randn(n, B, d, device=device, generator=g))
    W1 = torch.randn(n, k, m, device=device, generator=g) / m ** 0.5
    b1 = torch.randn(n, k, device=device, generator=g) * 0.1
    W2 = torch.randn(n, d, k, device=device, generator=g) / k ** 0.5
    torch.set_float32_matmul_precision("highest")
    ref = step_math(x, target, W1, b1, W2)
    mm_flops = 2 * n * B * k * (m + d) + 2 * n * B * k * d * 2 + 2 * n * B * k * m
    torch.set_float32_matmul_precision("high")
    h = torch.randn(n, B, k, device=device)
    dy = torch.randn(n, B, d, device=device)

    def matmuls(dtype=torch.float32):
        a, w1, w2, hh, gg = (t.to(dtype) for t in (x, W1, W2, h, dy))
        return lambda: (torch.bmm(a, w1.transpose(1, 2)), torch.bmm(hh, w2.transpose(1, 2)),
                        torch.bmm(gg.transpose(1, 2), hh), torch.bmm(gg, w2), torch.bmm(hh.transpose(1, 2), a))

    alone = {"tf32": timed(matmuls(), device), "bf16": timed(matmuls(torch.bfloat16), device)}
    say(f"{mm_flops / 1e9:.0f} GFLOP of matmuls per step; the five matmuls alone: TF32 {alone['tf32'] * 1e3:.3f} ms, "
        f"bf16 {alone['bf16'] * 1e3:.3f} ms\n")
    say("| variant | ms | × its matmuls alone | TFLOP/s | max rel. diff of grads vs fp32 |")
    say("|---|---|---|---|---|")
    cands = [("eager, TF32", lambda *a: step_math(*a), "tf32"),
             ("eager, bf16 matmuls", lambda *a: step_math(*a, mm_dtype=torch.bfloat16), "bf16")]
    if device == "cuda":
        cands += [("compile default, TF32", torch.compile(step_math), "tf32"),
                  ("compile default, bf16 matmuls",
                   torch.compile(lambda *a: step_math(*a, mm_dtype=torch.bfloat16)), "bf16"),
                  ("compile max-autotune, TF32", torch.compile(step_math, mode="max-autotune-no-cudagraphs"), "tf32")]
    for name, fn, kind in cands:
        try:
            t0 = time.perf_counter()
            out = fn(x, target, W1, b1, W2)
            first = time.perf_counter() - t0
            t = timed(lambda: fn(x, target, W1, b1, W2), device)
            diff = max(float((a - r).abs().max() / r.abs().max()) for a, r in zip(out, ref))
            RESULTS.setdefault("variants", {})[name] = {"s": t, "first_call_s": first, "diff": diff}
            say(f"| {name} | {t * 1e3:.3f} | {t / alone[kind]:.2f} | {mm_flops / t / 1e12:.1f} | {diff:.1e} |"
                f" (first call {first:.0f} s)")
        except Exception as e:
            say(f"| {name} | failed: {type(e).__name__}: {str(e)[:200]} | | | |")
        save()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--small", action="store_true")
    a = ap.parse_args()
    OUTDIR.append(Path(a.out))
    say(f"# gpu_step_parts on {a.device}: torch {torch.__version__}, "
        f"{torch.cuda.get_device_name() if a.device == 'cuda' else 'CPU'}, {time.strftime('%Y-%m-%d')}")
    profile_module(a.device, a.small)
    variants(a.device, a.small)


if __name__ == "__main__":
    main()
