"""The sampler's deterministic half (`worlds.features_from_uniforms`, uniform values) as one numba pass on the CPU
(`training.toy.FeatureStream` uses it there).

torch computes u / p, then a mask u ≥ p, then fills: three passes over the (density, seed, batch, N) features,
each broadcasting p. Here every feature is read once and written once, in parallel over (density, seed) rows.
The arithmetic is the same IEEE division (no fast-math reciprocal), so the features equal torch's bit for bit
(tests/test_kernels.py pins it); the uniforms still come from torch's generators, one per seed.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

import monosem.jit  # noqa: F401  (numba's settings: threading layer, cache outside src/)


@njit(cache=True, boundscheck=False, error_model="numpy", inline="always")
def _value(x, q):
    """One feature: u / p where the uniform u falls below its probability p, else 0."""
    return x / q if x < q else np.float32(0.0)


@njit(parallel=True, cache=True, boundscheck=False, error_model="numpy")
def masked_ratio(u, p, out):
    """out[d, s, b, n] = u[s, b, n] / p[d, n] where u < p, else 0 (float32, C-contiguous)."""
    D, S, B, N = out.shape
    for t in prange(D * S):
        d, s = t // S, t % S
        for b in range(B):
            for n in range(N):
                out[d, s, b, n] = _value(u[s, b, n], p[d, n])


@njit(parallel=True, cache=True, boundscheck=False, error_model="numpy")
def signed_masked_ratio(u, p, out):
    """The abs task's v1 − v2 (each at p/2): u (S, 2, B, N), out[d, s, b, n] = r(u[s, 0]) − r(u[s, 1])."""
    D, S, B, N = out.shape
    for t in prange(D * S):
        d, s = t // S, t % S
        for b in range(B):
            for n in range(N):
                q = p[d, n] / np.float32(2.0)
                out[d, s, b, n] = _value(u[s, 0, b, n], q) - _value(u[s, 1, b, n], q)
