"""Time of the interpret analysis of one model at the paper's size (k = 1024, N = 512, m = 64, 8192 eval
samples), on random weights shaped like a trained model (biases around −0.3, a quarter positive).

    python benchmarks/interpret_speed.py [--repeats 3]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from monosem.analysis.interpret import analyse  # noqa: E402
from monosem.config import World  # noqa: E402
from monosem.worlds import generate_world  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    world = generate_world(World(n_features=512, d_embed=64, eps=1 / 64, n_eval=8192))
    gen = torch.Generator().manual_seed(0)
    k = 1024
    W1 = torch.randn(k, 64, generator=gen) * 0.5
    b = torch.randn(k, generator=gen) * 0.3 - 0.2
    W2 = torch.randn(512, k, generator=gen) * 0.05
    eval_x = world.inputs(world.eval_f)
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        res = analyse(W1, b, W2, world.P, F.relu, "decoder", eval_x)
        times.append(time.perf_counter() - t)
    s = res["summary"]
    print(f"analyse(k=1024, N=512, m=64, 8192 eval samples): median {statistics.median(times):.1f} s over "
          f"{args.repeats} ({s['n_mono']} mono, {s['n_poly']} poly, {s['n_dead']} dead neurons)")


if __name__ == "__main__":
    main()
