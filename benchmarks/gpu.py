"""The CUDA path on one GPU, in one command: is it correct, how fast is it at the paper's shapes, and what would
`make repro PROFILE=paper` cost there. About 40 s on an H200 (limit: 8 minutes).

    python benchmarks/gpu.py [--out benchmarks/results] [--device cuda] [--scale 1.0]

(a) Correctness. (a1) identical batches fed to the module on the CPU and on the GPU (fp32): the weights after
    300 steps agree to float rounding; the same on the GPU with the step replayed as a captured CUDA graph.
    (a2) a small study trained natively on each device (each draws from its own generators: CPU and CUDA
    random streams differ), metrics compared per sweep point: |Δ mean| within twice the seeds' spread.
(b) The GPU's dense matmul rate at fp32, TF32 and bf16 (8192³, median of 10 after 3 warm-ups).
(c) One paper-shape study group (LR1's six learning rates at N 512, m 64, k 1024, B 8192) for 2^10 steps:
    step time, TFLOP/s of the step's matmuls, ratio to (b) at the same precision, and the step over its five
    matmuls alone (issue 22's measure), eager and as a CUDA graph, fp32 and TF32.
(d) The projected training time of `PROFILE=paper` from (c) and the small-shape step time of (e):
    Σ over shape groups of steps × max(FLOP per step / rate, small-step floor).
(e) The default profile's LR1 study end to end on the GPU (train, then measure): wall time and metrics.
(f) Precision: the bias trick's verdict-bearing numbers (#mono/#features and loss per point, 3 seeds) trained
    with fp32 and with TF32 matmuls, side by side.

`--device cpu --scale 0.05` runs every section that needs no CUDA on the CPU (a check of this script).
Prints markdown; writes gpu.md and gpu.json to --out.
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

import lightning.pytorch as L  # noqa: E402

from monosem.analysis.metrics import measure  # noqa: E402
from monosem.config import Study, World  # noqa: E402
from monosem.params import load_params  # noqa: E402
from monosem.training.loop import fit, matmul_precision_of  # noqa: E402
from monosem.training.toy import ToyStudyModule  # noqa: E402
from monosem.worlds import generate_world  # noqa: E402

OUT: list[str] = []
NUMBERS: dict = {}
DEST: list[Path] = []  # where gpu.md and gpu.json go, rewritten after every section (a run cut short keeps its part)


def say(line: str = "") -> None:
    print(line, flush=True)
    OUT.append(line)


def save() -> None:
    for out in DEST:
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu.md").write_text("\n".join(OUT) + "\n")
        (out / "gpu.json").write_text(json.dumps(NUMBERS, indent=1, default=str))


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class Stopwatch(L.Callback):
    """The training loop's wall time, first batch to end, the device drained at both ends."""

    def __init__(self, device: str):
        self.device = device

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == 0:
            sync(self.device)
            self.start = time.perf_counter()

    def on_train_end(self, trainer, module):
        sync(self.device)
        self.seconds = time.perf_counter() - self.start


def study(world: str, k: int, B: int, steps: int, t_max: int, sweep: dict, seeds: list[int], **train) -> Study:
    return Study(world=world, model={"neurons": k}, sweep=sweep, seeds=seeds,
                 train={"steps": steps, "batch_size": B, "lr": 0.01, "t_max": t_max, "log_points": 16} | train)


def train(world, instances, device: str, precision: str = "highest", graphs: bool = False):
    """(module, loop seconds): a study group trained by `fit` on `device`."""
    module, watch = ToyStudyModule(world, instances), Stopwatch(device)
    accelerator = "gpu" if device.startswith("cuda") else "cpu"
    fit(module, accelerator, [watch], progress=False, matmul_precision=precision, cuda_graphs=graphs)
    return module, watch.seconds


def metrics(module: ToyStudyModule, world) -> dict[str, list[float]]:
    """Per instance, the eval loss and #mono/#features, in fp32 on the CPU (as the measure stage)."""
    model = module.model.cpu()
    out = {}
    for eps in dict.fromkeys(i.data.eps for i in module.instances):
        w = world.with_eps(eps)
        members = [j for j, i in enumerate(module.instances) if i.data.eps == eps]
        with matmul_precision_of("highest"):
            values = measure(model, w.probes, w.inputs(w.eval_f), w.targets(w.eval_f))
        for j in members:
            out.setdefault("loss", {})[j] = float(values["loss"][j])
            out.setdefault("mono", {})[j] = float(values["mono_per_feature"][j])
    return {k: [v[j] for j in range(len(module.instances))] for k, v in out.items()}


def by_point(module: ToyStudyModule, values: dict[str, list[float]]) -> dict[str, dict[str, tuple[float, float]]]:
    """{point: {metric: (mean, std over seeds)}}."""
    points: dict[str, list[int]] = {}
    for j, inst in enumerate(module.instances):
        points.setdefault(inst.point_label, []).append(j)
    return {p: {k: (statistics.fmean(v[j] for j in js), statistics.stdev([v[j] for j in js]) if len(js) > 1 else 0.0)
                for k, v in values.items()} for p, js in points.items()}


def section(name: str):
    def wrap(fn):
        def run(*args, **kwargs):
            say(f"\n### {name}\n")
            t = time.perf_counter()
            try:
                fn(*args, **kwargs)
            except Exception:  # a broken section is reported, the others still run
                say("```\n" + traceback.format_exc()[-3000:] + "```")
                NUMBERS.setdefault("failed", []).append(name)
            say(f"\n({time.perf_counter() - t:.1f} s)")
            save()
        return run
    return wrap


# --- (a) correctness ---------------------------------------------------------------------------------------


def lockstep(world, instances, devices: tuple[str, str], steps: int, graphs: tuple[bool, bool] = (False, False),
             feed: bool = True) -> dict[str, float]:
    """Two modules trained step by step side by side; with `feed`, the second is fed the first's batches.
    Returns the largest |Δw| / max|w| per tensor."""
    mods = []
    for device, graph in zip(devices, graphs):
        m = ToyStudyModule(world, instances).to(device)
        m.use_cuda_graphs = graph
        m.configure_optimizers()
        m.on_train_start()
        mods.append(m)
    a, b = mods
    if feed:
        draw, last = a.batch, []

        def recorded():
            last[:] = draw()
            return tuple(last)

        a.batch = recorded
        b.batch = lambda: tuple(t.to(devices[1]) for t in last)
    for step in range(steps):
        a._step(step, None)
        b._step(step, None)
    sync(devices[1])
    return {name: float((getattr(a.model, name).detach().cpu() - getattr(b.model, name).detach().cpu()).abs().max()
                        / getattr(a.model, name).detach().abs().max().cpu())
            for name in ("W1", "b1", "W2")}


@section("(a) Correctness: the CPU and the GPU train the same models")
def correctness(device: str, scale: float) -> None:
    world = generate_world(World(n_features=64, d_embed=16, eps=1 / 32, n_eval=4096, seed=0))
    steps = max(20, int(300 * scale))
    insts = study("w", 128, 128, 8192, 32, {"train.lr": [0.003, 0.03]}, [0, 1], bias_offset=-1.0,
                  bias_decay=0.48, l1=0.001).instances()
    rows = []
    with matmul_precision_of("highest"):
        rows.append(("CPU vs " + device + ", identical batches, fp32", lockstep(world, insts, ("cpu", device), steps)))
        if device.startswith("cuda"):
            rows.append(("GPU eager vs GPU CUDA graph, same generators",
                         lockstep(world, insts, (device, device), steps, graphs=(False, True), feed=False)))
    say(f"After {steps} steps of 4 instances (N 64, m 16, k 128, B 128, bias trick, L1): max |Δw| / max |w|\n")
    say("| comparison | W1 | b1 | W2 |")
    say("|---|---|---|---|")
    for name, d in rows:
        say(f"| {name} | {d['W1']:.1e} | {d['b1']:.1e} | {d['W2']:.1e} |")
    NUMBERS["a1"] = {name: d for name, d in rows}

    # (a2) each device with its own random streams: the same study, statistically the same models
    n = max(64, int(2048 * scale))
    st = study("w", 128, 128, n, 32, {"train.lr": [0.003, 0.01, 0.03]}, [0, 1, 2])
    results = {}
    for dev in ("cpu", device):
        module, secs = train(world, st.instances(), dev)
        results[dev] = (by_point(module, metrics(module, world)), secs)
    say(f"\nThe default LR1 shape, {n} steps, 3 seeds, each device's own generators: mean ± std over seeds; "
        "agreement = |Δ mean| ≤ 2·max(std, 0.01)\n")
    say("| point | metric | CPU | GPU | agree |")
    say("|---|---|---|---|---|")
    agree = True
    for p, vals in results["cpu"][0].items():
        for k, (mc, sc) in vals.items():
            mg, sg = results[device][0][p][k]
            ok = abs(mc - mg) <= 2 * max(sc, sg, 0.01)
            agree &= ok
            say(f"| {p} | {k} | {mc:.4f} ± {sc:.4f} | {mg:.4f} ± {sg:.4f} | {'yes' if ok else 'NO'} |")
    say(f"\nTraining loop: CPU {results['cpu'][1]:.1f} s, {device} {results[device][1]:.1f} s.")
    NUMBERS["a2"] = {"agree": agree, "cpu_s": results["cpu"][1], "gpu_s": results[device][1]}


# --- (b) matmul rates --------------------------------------------------------------------------------------


def matmul_rate(device: str, dtype: torch.dtype, precision: str, n: int) -> float:
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    times = []
    with matmul_precision_of(precision):
        for i in range(13):
            sync(device)
            t = time.perf_counter()
            a @ b
            sync(device)
            if i >= 3:
                times.append(time.perf_counter() - t)
    return 2 * n ** 3 / statistics.median(times)


@section("(b) The GPU's dense matmul rate")
def rates(device: str, scale: float) -> None:
    n = 8192 if device.startswith("cuda") else 1024
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "CPU"
    say(f"{name}, torch {torch.__version__}, {n}³ matmul, median of 10\n")
    say("| precision | TFLOP/s |")
    say("|---|---|")
    NUMBERS["rates"] = {}
    for label, dtype, prec in (("fp32", torch.float32, "highest"), ("tf32", torch.float32, "high"),
                               ("bf16", torch.bfloat16, "highest")):
        r = matmul_rate(device, dtype, prec, n)
        NUMBERS["rates"][label] = r
        say(f"| {label} | {r / 1e12:.1f} |")
    NUMBERS["device"] = name


# --- (c) the paper's shape ---------------------------------------------------------------------------------


def step_flops(k: int, B: int, m: int, d_out: int) -> int:
    """The step's matmuls per instance: forward 2·B·k·(m + d_out), backward twice that without ∂x."""
    return 4 * B * k * m + 6 * B * k * d_out


def matmuls_alone(device: str, n: int, B: int, m: int, k: int, d: int, precision: str, reps: int) -> float:
    """Seconds of the step's five matmuls alone (forward and backward of both layers, this layout)."""
    x, W1, W2 = (torch.randn(s, device=device) for s in ((n, B, m), (n, k, m), (n, d, k)))
    h, dy = torch.randn(n, B, k, device=device), torch.randn(n, B, d, device=device)
    with matmul_precision_of(precision):
        for i in range(reps + 3):
            if i == 3:
                sync(device)
                t = time.perf_counter()
            torch.bmm(x, W1.transpose(1, 2)), torch.bmm(h, W2.transpose(1, 2))
            torch.bmm(dy.transpose(1, 2), h), torch.bmm(dy, W2), torch.bmm(h.transpose(1, 2), x)
        sync(device)
    return (time.perf_counter() - t) / reps


@section("(c) One paper-shape study group: LR1's six learning rates at k 1024, B 8192")
def paper_shape(device: str, scale: float) -> None:
    N, m, k, B = 512, 64, 1024, 8192
    if not device.startswith("cuda"):
        N, m, k, B = 128, 16, 256, 512  # the CPU check runs the same code at a size it can afford
    steps = max(32, int(1024 * scale))
    world = generate_world(World(n_features=N, d_embed=m, eps=1 / 64, n_eval=1024, seed=0))
    insts = study("w", k, B, steps, 512, {"train.lr": [0.001, 0.003, 0.005, 0.007, 0.01, 0.03]}, [0]).instances()
    flops = len(insts) * step_flops(k, B, m, N)
    say(f"N {N}, m {m}, k {k}, B {B}, {len(insts)} instances, {steps} steps; {flops / 1e9:.0f} GFLOP per step\n")
    say("| precision | loop | step ms | matmuls alone ms | step / matmuls | TFLOP/s | vs matmul rate |")
    say("|---|---|---|---|---|---|---|")
    NUMBERS["paper_shape"] = {}
    for label, prec in (("fp32", "highest"), ("tf32", "high")):
        alone = matmuls_alone(device, len(insts), B, m, k, N, prec, reps=20)
        for graphs in ((False, True) if device.startswith("cuda") else (False,)):
            _, secs = train(world, insts, device, prec, graphs)
            step = secs / steps
            rate = flops / step
            peak = NUMBERS.get("rates", {}).get(label, float("nan"))
            loop = "CUDA graph" if graphs else "eager"
            NUMBERS["paper_shape"][f"{label}/{loop}"] = {"step_s": step, "matmuls_s": alone, "flops_per_s": rate,
                                                          "vs_peak": rate / peak}
            say(f"| {label} | {loop} | {step * 1e3:.2f} | {alone * 1e3:.2f} | {step / alone:.2f} | "
                f"{rate / 1e12:.1f} | {rate / peak:.2f} |")


# --- (e) the default LR1 study end to end ------------------------------------------------------------------


@section("(e) The default profile's LR1 study end to end on the GPU")
def default_lr1(device: str, scale: float) -> None:
    params = load_params(ROOT / "params.yaml")
    st = params.studies["LR1"]
    steps = max(64, int(st.train.steps * scale))
    st = st.model_copy(update={"train": st.train.model_copy(update={"steps": steps})})
    world = generate_world(params.worlds[st.world])
    rows = []
    for graphs in ((False, True) if device.startswith("cuda") else (False,)):
        t = time.perf_counter()
        module, secs = train(world, st.instances(), device, graphs=graphs)
        values = by_point(module, metrics(module, world))
        rows.append(("CUDA graph" if graphs else "eager", secs, time.perf_counter() - t, values))
        NUMBERS.setdefault("lr1", {})["graph" if graphs else "eager"] = {"loop_s": secs, "step_s": secs / steps,
                                                                         "points": values}
    say(f"{len(st.instances())} instances, {steps} steps of batch {st.train.batch_size}\n")
    say("| loop | training loop s | step ms | train + measure s | " + " | ".join(
        f"{p}: #mono/#features, loss" for p in rows[0][3]) + " |")
    say("|---|---|---|---|" + "---|" * len(rows[0][3]))
    for loop, secs, total, values in rows:
        cells = " | ".join(f"{v['mono'][0]:.3f} ± {v['mono'][1]:.3f}, {v['loss'][0]:.4f}" for v in values.values())
        say(f"| {loop} | {secs:.1f} | {1e3 * secs / steps:.3f} | {total:.1f} | {cells} |")


# --- (d) the projection ------------------------------------------------------------------------------------


@section("(d) Projected training time of PROFILE=paper on this GPU")
def projection(device: str, scale: float) -> None:
    from monosem.toy.families import family

    params = load_params(ROOT / "profiles" / "paper.yaml")
    shapes = NUMBERS.get("paper_shape", {})
    floors = NUMBERS.get("lr1", {})
    for label in ("fp32", "tf32"):
        for loop, floor_key in (("eager", "eager"), ("CUDA graph", "graph")):
            if f"{label}/{loop}" not in shapes or floor_key not in floors:
                continue
            rate, floor = shapes[f"{label}/{loop}"]["flops_per_s"], floors[floor_key]["step_s"]
            total = flops_all = 0.0
            for name, s in params.studies.items():
                w = params.worlds[s.world]
                d_out = w.d_embed if w.task == "reprojector" else w.n_features
                groups: dict = {}
                for inst in s.instances():
                    groups.setdefault(inst.group_key, []).append(inst)
                for members in groups.values():
                    i0 = members[0]
                    k, B, steps = i0.model.neurons, i0.train.batch_size, i0.train.steps
                    if family(i0.model.kind).tied:  # tied: x' = act(WᵀWx + b), three matmuls forward, six back
                        f = len(members) * 18 * B * k * w.n_features
                    else:
                        f = len(members) * step_flops(k, B, w.d_embed, d_out)
                    flops_all += f * steps
                    total += steps * max(f / rate, floor)
            NUMBERS.setdefault("projection", {})[f"{label}/{loop}"] = {"hours": total / 3600, "flop": flops_all}
            say(f"- {label}, {loop}: {flops_all:.2e} FLOP in {total / 3600:.2f} h of training loops "
                f"(rate {rate / 1e12:.1f} TFLOP/s from (c), per-step floor {floor * 1e3:.2f} ms from (e))")
    say("\nTraining loops only: measure, interpret and the SAE stages, and each stage's start-up, come on top.")


# --- (f) precision ------------------------------------------------------------------------------------------


@section("(f) fp32 vs TF32: the bias trick's numbers")
def precision(device: str, scale: float) -> None:
    world = generate_world(World(n_features=128, d_embed=32, eps=1 / 16, n_eval=8192, seed=0))
    steps = max(64, int(4096 * scale))
    trick = study("w", 256, 1024, steps, 512, {"train.bias_offset,train.bias_decay": [[-1.0, 0.293], [0.0, 0.0]]},
                  [0, 1, 2])
    say(f"N 128, m 32, k 256, ε 1/16, B 1024, {steps} steps, T_max 512, lr 0.01; bias trick (offset −1, decay "
        "0.293) vs none; 3 seeds; metrics in fp32\n")
    say("| matmuls | point | #mono/#features | eval loss |")
    say("|---|---|---|---|")
    for label, prec in (("fp32", "highest"), ("tf32", "high")):
        module, _ = train(world, trick.instances(), device, prec)
        values = by_point(module, metrics(module, world))
        NUMBERS.setdefault("precision", {})[label] = values
        for p, v in values.items():
            say(f"| {label} | {p} | {v['mono'][0]:.3f} ± {v['mono'][1]:.3f} | {v['loss'][0]:.4f} ± {v['loss'][1]:.4f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of each section's steps (a quick check)")
    args = ap.parse_args()
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("error: no CUDA device here (run with --device cpu to check the script itself)")
    start = time.perf_counter()
    DEST.append(Path(args.out))
    say(f"# benchmarks/gpu.py on {args.device}, {time.strftime('%Y-%m-%d')}, torch {torch.__version__}")
    rates(args.device, args.scale)
    correctness(args.device, args.scale)
    paper_shape(args.device, args.scale)
    default_lr1(args.device, args.scale)
    projection(args.device, args.scale)
    precision(args.device, args.scale)
    say(f"\nTotal {time.perf_counter() - start:.0f} s.")
    save()


if __name__ == "__main__":
    main()
