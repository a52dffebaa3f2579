"""Sparse autoencoders, one architecture a file, each registered by one line in `registry` (see `base` for the
conventions they share). Import sites use this package: `from monosem.sae import build_sae, ...`."""

from .base import SAE, input_scale, saelens_export
from .gated import GatedSAE, GatedWeightedSAE
from .jumprelu import JumpReluSAE
from .registry import ARCHITECTURES, architecture, build_sae, register
from .relu import ReluSAE, ReluWeightedSAE
from .topk import BatchTopKSAE, TopKSAE

__all__ = ["ARCHITECTURES", "SAE", "BatchTopKSAE", "GatedSAE", "GatedWeightedSAE", "JumpReluSAE", "ReluSAE",
           "ReluWeightedSAE", "TopKSAE", "architecture", "build_sae", "input_scale", "register", "saelens_export"]
