"""Sparse autoencoders, one architecture a file, each registered by one line in `registry` (see `base` for the
conventions they share). Import sites use this package: `from monosem.sae import build_sae, ...`."""

from monosem.sae.base import SAE, input_scale, saelens_export
from monosem.sae.gated import GatedSAE, GatedWeightedSAE
from monosem.sae.jumprelu import JumpReluSAE
from monosem.sae.registry import ARCHITECTURES, architecture, build_sae, register
from monosem.sae.relu import ReluSAE, ReluWeightedSAE
from monosem.sae.topk import BatchTopKSAE, TopKSAE

__all__ = ["ARCHITECTURES", "SAE", "BatchTopKSAE", "GatedSAE", "GatedWeightedSAE", "JumpReluSAE", "ReluSAE",
           "ReluWeightedSAE", "TopKSAE", "architecture", "build_sae", "input_scale", "register", "saelens_export"]
