"""Numba's settings for every CPU kernel of the library (`toy.lamb_kernel`, `sae.kernels`): import this module
before compiling one."""

from __future__ import annotations

import os
from pathlib import Path

import numba

numba.config.THREADING_LAYER = "workqueue"  # not a second OpenMP runtime beside torch's
# Compiled kernels are cached outside the source tree: src/monosem is a DVC dependency of every stage, and a
# file written into it would make DVC rerun them all.
numba.config.CACHE_DIR = numba.config.CACHE_DIR or str(
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "monosem" / "numba")
FAST = {"reassoc", "contract"}  # sums in any order (vectorised), fused multiply-adds; no assumptions about NaN
