"""How much memory each stage will need, from the params alone, and how much the machine has.

A stage that cannot fit should say so before it starts, naming the key to change, not die in an allocation
error halfway (or be taken by the OOM killer). The estimate counts the large float32 tensors a stage holds
at its peak, as elements × the copies alive at once; the copies were calibrated against the peak resident
memory of the real stages (`benchmarks/memory_estimate.py`: 0.7-1.2 times the measured peak). Everything
small is the fixed `BASE`. A stage is refused only when the estimate exceeds all the memory available, so
an estimate a little high costs nothing unless the machine is already nearly full.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from monosem.config import Params, SaeStudy, Study, World
from monosem.toy.families import family

F32 = 4  # bytes
# torch, Lightning and matplotlib imported, as a stage starts (measured: 0.3-0.4 GB resident).
BASE = 0.3e9
# A training stage of tiny models: Lightning's trainer running and numba's compiled CPU passes besides (measured:
# 0.71-0.75 GB resident for the paper profile's TMS1 and TMS3 on 2026-12-07, `benchmarks/stage_costs.py`).
TRAIN_BASE = 0.7e9


@dataclass
class Need:
    """A large block of memory: what it holds, its bytes, the params that size it (key -> value; a refusal
    names the largest), and whether it lives on the accelerator when a stage computes on one (training, and
    measuring models and SAEs: pipeline/common.compute_device)."""

    what: str
    bytes: float
    keys: dict[str, int] = field(default_factory=dict)
    device: bool = False


def need(what: str, copies: float, keys: dict[str, int], device: bool = False) -> Need:
    """`copies` float32 tensors of the size the product of `keys`' values gives (a key's value used twice, as
    in an N × N matrix, goes into `copies`: a key names one value)."""
    return Need(what, copies * F32 * math.prod(keys.values()), keys, device)


@dataclass
class Estimate:
    """A stage's memory: `held` for the whole stage, plus the largest of `parts` (done one after another:
    shape groups, densities, SAE architectures)."""

    stage: str
    held: list[Need]
    parts: list[list[Need]] = field(default_factory=lambda: [[]])
    base: float = BASE

    def peak(self) -> list[Need]:
        return self.held + max(self.parts, key=lambda p: sum(n.bytes for n in p))

    def bytes(self) -> float:
        """All of it, in the host's memory (training on the CPU)."""
        return self.base + sum(n.bytes for n in self.peak())


def _key(name: str, study: Study, knob: str) -> str:
    """The params key that sets `knob` (e.g. model.neurons) in a study: the sweep's key when it is swept."""
    for key in study.sweep:
        parts = [k.strip() for k in key.split(",")]
        if knob in parts:
            return f"studies.{name}.sweep.{key}" + (f" ({knob})" if len(parts) > 1 else "")
    return f"studies.{name}.{knob}"


def generate(name: str, world: World) -> Estimate:
    """generate@<world>: the held-out set drawn (uniforms, values, a mask for its statistics) and serialised
    (safetensors copies tensors to bytes); the embedders' SVD in float64."""
    at = f"worlds.{name}"
    n, m, e = world.n_features, world.d_embed, world.n_eval
    return Estimate(f"generate@{name}", [need("the held-out set", 3, {f"{at}.n_eval": e, f"{at}.n_features": n}),
                                         need("the embedders", 8, {f"{at}.n_features": n, f"{at}.d_embed": m})])


def _loaded(name: str, world: World) -> Need:
    at = f"worlds.{name}"
    return need("the world's held-out set", 2, {f"{at}.n_eval": world.n_eval, f"{at}.n_features": world.n_features})


def study(params: Params, name: str) -> list[Estimate]:
    """train and measure of one study (measure measures, then interprets: its parts one after another)."""
    s = params.studies[name]
    world = params.worlds[s.world]
    at = f"worlds.{s.world}"
    feats, dims, evals = {f"{at}.n_features": world.n_features}, {f"{at}.d_embed": world.d_embed}, {f"{at}.n_eval": world.n_eval}
    outs = dims if world.task == "reprojector" else feats
    tied = family(s.model.kind).tied
    groups: dict[tuple, list] = {}
    for inst in s.instances():
        groups.setdefault(inst.group_key, []).append(inst)
    weights, train, measure, interpret, figures = [], [], [], [], []
    for members in groups.values():
        cfg = members[0]
        count = {f"studies.{name}: instances of one shape (sweep × seeds)": len(members)}
        k = {_key(name, s, "model.neurons"): cfg.model.neurons}
        b = {_key(name, s, "train.batch_size"): cfg.train.batch_size}
        w = [count | k | feats] if tied else [count | k | dims, count | k | outs]
        weights += w
        train.append([need("weights, gradients and optimiser state", 5, keys, device=True) for keys in w] + [
            # a batch's features, inputs, outputs and targets; the hidden layer before and after the activation,
            # their gradients and the deviations the running statistics use
            need("a batch's features", 3, count | b | feats, device=True),
            need("a batch's outputs and targets", 2, count | b | outs, device=True),
            need("a batch's inputs", 2, count | b | dims, device=True),
            need("a batch's hidden layer", 4, count | b | k, device=True),
            need("the single-feature probes", 3, count | feats | k, device=True)])
        if any(i.train.inhibit > 0 for i in members):  # the inhibition penalty trains by autograd, which keeps more
            train[-1].append(need("the hidden layers autograd keeps", 4, count | b | k, device=True))
        # measure takes the instances that see the same held-out set together: one density (and one embedder)
        together = Counter((i.data.eps, i.seed if world.embedder == "per_seed" else None) for i in members)
        mcount = {f"studies.{name}: instances of one shape and density (measured together)": max(together.values())}
        # measure and interpret compute where training does (pipeline/common.compute_device): device=True
        probes = need("the single-feature probes", 2, mcount | feats | k, device=True)
        if tied:  # the held-out set in chunks of 4096 samples; the features' Gram matrices WᵀW
            measure.append([need("outputs on a chunk of the held-out set", 3 * 4096, mcount | feats, device=True),
                            need("the features' Gram matrices", 4 * world.n_features, mcount | feats, device=True),
                            # another density's held-out set, drawn afresh, and its float64 copy (the energy)
                            need("one density's held-out set", 3, evals | feats, device=True), probes])
            interpret.append([need("the features' Gram matrices", 2 * world.n_features, count | feats)])
            if "neurons" in family(cfg.model.kind).figures:  # TMS' neuron figure: a bar per neuron and feature, ~11 KB each
                points = {f"studies.{name}.sweep: points": len(members) // len(s.seeds)}
                figures.append(need("the neuron figure's bars", 2 * 2750, points | k | feats))
        else:  # the hidden layer on the whole held-out set, clean and with input noise
            measure.append([need("the hidden layer on the held-out set", 5, mcount | evals | k, device=True),
                            need("noisy inputs on the held-out set", 2, mcount | evals | dims, device=True), probes])
            # one model at a time: its hidden layer and its (sub-networks') outputs on the held-out set
            interpret.append([need("one model's hidden layer on the held-out set", 6, evals | k, device=True),
                              need("one model's outputs on the held-out set", 6, evals | outs, device=True),
                              # its linear path W2·W1·P and the target map, (outputs × N) in float64, their SVDs
                              need("one model's linear path and target map", 10 * world.n_features, outs,
                                   device=True)])
    held = [_loaded(s.world, world)]
    trained = lambda copies: [need("the trained weights", copies, keys) for keys in weights]  # noqa: E731
    # measure: the weights loaded, and stacked per group; then interpreting, one group after another
    return [Estimate(f"train@{name}", held + trained(3), train, TRAIN_BASE),  # each instance's copy, and safetensors' bytes
            Estimate(f"measure@{name}", held + trained(2), measure + [part + figures for part in interpret])]


def sae(params: Params, name: str) -> Estimate:
    """sae@<name>: each architecture's SAEs train together (weights, Adam, a batch's latents); then they are
    measured on `n_eval` held-out activations, spliced back into the toy model."""
    cfg: SaeStudy = params.saes[name]
    world = params.worlds[cfg.world]
    toy = params.studies[cfg.study]
    width = ({_key(cfg.study, toy, "model.neurons"): toy.model.neurons} if cfg.layer == "hidden"
             else {f"worlds.{cfg.world}.d_embed": world.d_embed})
    latents, feats = {f"saes.{name}.latents": cfg.latents}, {f"worlds.{cfg.world}.n_features": world.n_features}
    parts = []
    for arch, knobs in cfg.architectures.items():
        count = {f"saes.{name}.architectures.{arch} × seeds": len(knobs) * len(cfg.seeds)}
        evals = count | {f"saes.{name}.n_eval": cfg.n_eval}
        parts.append([
            need("SAE weights, gradients and Adam moments", 8, count | width | latents, device=True),
            need("a batch's latents", 8, count | {f"saes.{name}.train.batch_size": cfg.train.batch_size} | latents,
                 device=True),
            need("latents on the held-out activations", 2, evals | latents, device=True),  # measured there too
            need("reconstructions on the held-out activations", 2, evals | width, device=True),
            need("spliced outputs on the held-out activations", 2, evals | feats, device=True)])
    return Estimate(f"sae@{name}", [_loaded(cfg.world, world)], parts)


def estimates(params: Params) -> list[Estimate]:
    """Every stage the params define."""
    out = [generate(name, w) for name, w in params.worlds.items()]
    for name in params.studies:
        out += study(params, name)
    return out + [sae(params, name) for name in params.saes]


def available_host() -> float:
    """Bytes the machine can give without swapping: the kernel's MemAvailable, or less under a cgroup v2
    memory limit (a container's, a CI job's)."""
    free = psutil.virtual_memory().available
    cgroup = Path("/sys/fs/cgroup")
    try:
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            free = min(free, int(limit) - int((cgroup / "memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return float(free)


def gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.0f} MB"


def refusal(est: Estimate, host: float, device: float | None = None, processes: int = 1) -> str | None:
    """One line naming the key behind the largest need when the stage will not fit, else None. `host`: the
    machine's available bytes; `device`: the accelerator's free bytes when training on one (None: on the
    CPU, where each of `processes` data-parallel processes holds its own copy of what training needs)."""
    peak = est.peak()
    sides = {"this machine": (host, [n for n in peak if device is None or not n.device], est.base)}
    if device is not None:
        sides["the accelerator"] = (device, [n for n in peak if n.device], 0)
    for where, (have, needs, base) in sides.items():
        total = base + sum(n.bytes * (processes if n.device and device is None else 1) for n in needs)
        if total > have:
            top = max(needs, key=lambda n: n.bytes)
            key, value = max(top.keys.items(), key=lambda kv: kv[1])
            return (f"{key} = {value}: {est.stage} needs about {gb(total)} of memory ({top.what}: {gb(top.bytes)}), "
                    f"more than the {gb(have)} {where} has available")
    return None


__all__ = ["BASE", "TRAIN_BASE", "Estimate", "Need", "available_host", "estimates", "generate", "refusal", "sae", "study"]
