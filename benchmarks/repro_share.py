"""How much of a whole `make repro` is spent inside the training loops, with the matmul rate of the same run.

    python benchmarks/repro_share.py [--command "dvc repro --force"]    (in a checkout; from its root)
    python benchmarks/repro_share.py --wall SECONDS                     (a run already done: only the sum)

Runs the command (by default every stage, forced), times its wall clock, then sums the training loops' own
seconds that the stages record: `train_seconds` of every toy study (`models/<study>/instances.json`) and of
every SAE study (`results/saes/<name>/measured.json`). The rest is what the stages cost around their loops:
start-up (imports), measuring, interpreting, figures, DVC and MLflow. The matmul rate is measured before and
after (the machine's speed varies from day to day; compare the share, and the seconds only against the rate).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from monosem.training.timing import matmul_rate  # noqa: E402


def loop_seconds(root: Path) -> dict[str, float]:
    """Each study's training-loop seconds, as its stage recorded them."""
    out = {}
    for f in sorted(root.glob("models/*/instances.json")):
        out[f"train@{f.parent.name}"] = json.loads(f.read_text())["train_seconds"]
    for f in sorted(root.glob("results/saes/*/measured.json")):
        out[f"sae@{f.parent.name}"] = json.loads(f.read_text())["train_seconds"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--command", default="dvc repro --force", help="what to run and time (from the checkout's root)")
    ap.add_argument("--wall", type=float, help="skip the run: the wall seconds of one already done")
    args = ap.parse_args()
    root = Path.cwd()
    before = matmul_rate(repeats=20) / 1e9
    print(f"matmul rate before: {before:.0f} GFLOP/s", flush=True)
    if args.wall is None:
        start = time.perf_counter()
        subprocess.run(shlex.split(args.command), check=True)
        wall = time.perf_counter() - start
    else:
        wall = args.wall
    after = matmul_rate(repeats=20) / 1e9
    loops = loop_seconds(root)
    inside = sum(loops.values())
    print(f"matmul rate after: {after:.0f} GFLOP/s")
    for name, s in sorted(loops.items(), key=lambda kv: -kv[1])[:8]:
        print(f"  {name:<24} {s:7.1f} s")
    print(f"{len(loops)} training loops: {inside:.0f} s of {wall:.0f} s wall = {inside / wall:.0%} inside the loops; "
          f"{wall - inside:.0f} s around them")


if __name__ == "__main__":
    main()
