"""monosem: engineering and measuring monosemanticity in toy models (Jermyn, Schiefer & Hubinger 2022)."""

import torch

# Flush subnormal floats to zero, set here at import, before any parallel kernel starts torch's thread pool:
# the flag is per thread (the CPU's MXCSR) and new threads copy it from the thread that creates them, so set
# later it reaches the calling thread only, and a kernel whose work-to-thread split varies between runs then
# gives run-dependent results wherever subnormals occur (a dead neuron's Adam moments decay through them).
# Set everywhere, it is the same on every run and several times faster (D1's step 3.5 → 2.3 ms).
torch.set_flush_denormal(True)

__version__ = "0.1.0"
