"""The SAE architectures by their params name: a new one is a file with its class (name, SAELens name, plot
style, sweep knob and optimiser defaults on the class) and one `register` line here (or in a test)."""

from __future__ import annotations

from monosem.sae.base import SAE
from monosem.sae.gated import GatedSAE, GatedWeightedSAE
from monosem.sae.jumprelu import JumpReluSAE
from monosem.sae.relu import ReluSAE, ReluWeightedSAE
from monosem.sae.topk import BatchTopKSAE, TopKSAE

ARCHITECTURES: dict[str, type[SAE]] = {}


def register(cls: type[SAE]) -> type[SAE]:
    """Make `cls` trainable under `cls.name` in params (usable as a class decorator)."""
    ARCHITECTURES[cls.name] = cls
    return cls


def architecture(name: str) -> type[SAE]:
    """The class of an architecture named in params; KeyError naming the allowed ones."""
    if name not in ARCHITECTURES:
        raise KeyError(f"no SAE architecture {name!r}; allowed: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def build_sae(name: str, n_inst: int, n: int, m: int) -> SAE:
    """The batched SAE of an architecture named in params."""
    return architecture(name)(n_inst, n, m)


register(ReluSAE)
register(ReluWeightedSAE)
register(GatedSAE)
register(GatedWeightedSAE)
register(TopKSAE)
register(BatchTopKSAE)
register(JumpReluSAE)
