"""How long each stage will take, from the params alone and this machine's measured matmul rate: what `make
repro` prints before any work starts (`pipeline/validate.py`), and refuses above a limit.

The model, calibrated on the measured default run of 2026-12-07 (docs/performance.md, "A whole run") and
`benchmarks/interpret_speed.py`'s 3.0 s per model at the paper's size:

- a training loop runs at `TRAIN_EFFICIENCY` of the measured dense matmul rate R, counting its matmuls' FLOPs:
  6·B·(d_in·k + k·d_out) per instance and step (forward and backward), plus `STEP_SECONDS` per step of each
  module (instances of one shape train as one: Python, the optimiser's launch, Lightning); SAEs at
  `SAE_EFFICIENCY` of R for 12·B·width·latents per SAE and step;
- measuring and interpreting a model evaluate it on its held-out set about `EVAL_PASSES` times:
  2·n_eval·k·(d_in + d_out + N) FLOPs per pass, at R;
- every stage pays `STAGE_SECONDS` around its work (starting Python, torch and Lightning; DVC's bookkeeping);
- the report stage reads every model: `REPORT_SECONDS_PER_MODEL`.

It is an estimate to decide whether to start, within a factor 1.5 of a measured default run, not a benchmark.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from monosem.config import Params
from monosem.toy.families import family

TRAIN_EFFICIENCY = 0.50  # the default run's toy loops: 963 s at 206 GFLOP/s, less STEP_SECONDS × 135,976 steps
STEP_SECONDS = 1e-3  # per step of a module, whatever its size (a 1-wide model's step takes about this)
SAE_EFFICIENCY = 0.33  # its SAE loops: 131 s
EVAL_PASSES = 30  # measure + interpret per model: ~0.17 s at the default's shape, ~3 s at the paper's
STAGE_SECONDS = 4.0  # per stage process: imports (~2.5 s beside MLflow's worker), DVC ≈ 0.5-1 s
REPORT_SECONDS_PER_MODEL = 0.03


@dataclass
class StageTime:
    stage: str
    kind: str  # generate | train | measure (measuring and interpreting) | sae | report
    seconds: float


def matmul_rate(device: str = "cpu", repeats: int = 9) -> float:
    """The device's dense float32 matmul rate now (FLOP/s, median of `repeats`; about 0.1-0.3 s on a CPU)."""
    n = 1024 if device == "cpu" else 8192
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(3):
        a @ b
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        sync()
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times)


def _shape(params: Params, name: str) -> tuple[int, int, int]:
    """(d_in, d_out, N) of a study's models."""
    s = params.studies[name]
    w = params.worlds[s.world]
    if family(s.model.kind).tied:  # x = f, y = Wᵀ W x: N in, N out
        return w.n_features, w.n_features, w.n_features
    return w.d_embed, (w.d_embed if w.task == "reprojector" else w.n_features), w.n_features


def stage_times(params: Params, rate: float, train_rate: float | None = None) -> list[StageTime]:
    """Every stage the params define, with its projected seconds at the matmul rate `rate` (FLOP/s), the
    training loops at `train_rate` (an accelerator's; default `rate`)."""
    train_rate = train_rate or rate
    out = [StageTime(f"generate@{name}", "generate", STAGE_SECONDS) for name in params.worlds]
    models = 0
    for name, s in params.studies.items():
        d_in, d_out, n = _shape(params, name)
        train = evaluate = 0.0
        instances = s.instances()
        modules = {inst.group_key: inst.train.steps for inst in instances}
        for inst in instances:
            k, b, steps = inst.model.neurons, inst.train.batch_size, inst.train.steps
            train += steps * 6 * b * (d_in * k + k * d_out)
            evaluate += EVAL_PASSES * 2 * params.worlds[s.world].n_eval * k * (d_in + d_out + n)
            models += 1
        loop = STEP_SECONDS * sum(modules.values()) + train / (TRAIN_EFFICIENCY * train_rate)
        out += [StageTime(f"train@{name}", "train", STAGE_SECONDS + loop),
                StageTime(f"measure@{name}", "measure", STAGE_SECONDS + evaluate / rate)]
    for name, cfg in params.saes.items():
        toy = params.studies[cfg.study]
        width = toy.model.neurons if cfg.layer == "hidden" else params.worlds[cfg.world].d_embed
        count = sum(len(knobs) for knobs in cfg.architectures.values()) * len(cfg.seeds)
        flops = count * cfg.train.steps * 12 * cfg.train.batch_size * width * cfg.latents
        out.append(StageTime(f"sae@{name}", "sae", STAGE_SECONDS + flops / (SAE_EFFICIENCY * train_rate)))
    return out + [StageTime("report", "report", STAGE_SECONDS + REPORT_SECONDS_PER_MODEL * models)]


def about_to_run(params: Params, stale: set[str] | None) -> set[str]:
    """The stages `dvc repro` will run: those DVC reports changed (`stale`; None: all) and every stage
    downstream of one (a world's studies and SAEs, a study's measure and SAEs; the report)."""
    every = {t.stage for t in stage_times(params, 1.0)}
    if stale is None:
        return every
    run = set(stale) & every
    for name, world in params.worlds.items():
        if f"generate@{name}" in run:
            run |= {f"train@{s}" for s, st in params.studies.items() if st.world == name}
            run |= {f"sae@{s}" for s, sae in params.saes.items() if sae.world == name}
    for name in params.studies:
        if f"train@{name}" in run:
            run |= {f"measure@{name}"} | {f"sae@{s}" for s, sae in params.saes.items() if sae.study == name}
    if run:
        run.add("report")
    return run


def duration(seconds: float) -> str:
    """4 s, 3 min 20 s, 2 h 05 min, 3.2 days, 4.1 years."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        s = round(seconds)
        return f"{s // 60} min {s % 60:02d} s"
    if seconds < 86400 * 2:
        m = round(seconds / 60)
        return f"{m // 60} h {m % 60:02d} min"
    return f"{seconds / 86400:.1f} days" if seconds < 86400 * 365 else f"{seconds / 86400 / 365:.1f} years"


def summary(times: list[StageTime], rate: float, device: str) -> str:
    """One line per stage kind and the whole, for the stages about to run."""
    kinds: dict[str, list[StageTime]] = {}
    for t in times:
        kinds.setdefault(t.kind, []).append(t)
    total = sum(t.seconds for t in times)
    lines = [f"projected: {duration(total)} for {len(times)} stages on this {device} "
             f"(matmul rate {rate / 1e9:.0f} GFLOP/s now)"]
    lines += [f"  {kind:9} {len(ts):4} stage{'s' if len(ts) > 1 else ' '}  {duration(sum(t.seconds for t in ts))}"
              for kind, ts in kinds.items()]
    return "\n".join(lines)


__all__ = ["StageTime", "about_to_run", "duration", "matmul_rate", "stage_times", "summary"]
