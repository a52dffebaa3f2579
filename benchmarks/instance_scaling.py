"""How the cost of one batched study grows with its number of instances (1, 4, 16, 64).

    python benchmarks/instance_scaling.py [--study LR1] [--steps 1000] [--repeats 3] [--sizes 1,4,16,64]

Each size trains the study's first instance shape with that many seeds, through the same Lightning `fit`
the train stage uses, in a fresh process (so peak memory is that size's own). Prints a markdown table of
medians over the repeats: training-loop seconds, samples/s per instance and in all, time per instance
relative to one instance alone, and the process's peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one(study_name: str, n: int, steps: int) -> dict:
    """Train n instances for `steps` steps in this process; report loop seconds and peak RSS."""
    sys.path.insert(0, str(ROOT / "src"))
    from train_throughput import Stopwatch  # the training loop alone, without Trainer start-up

    from monosem.params import load_params
    from monosem.training.loop import fit
    from monosem.training.toy import ToyStudyModule
    from monosem.worlds import generate_world

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    params = load_params(ROOT / "params.yaml")
    study = params.studies[study_name]
    world = generate_world(params.worlds[study.world])
    base = study.instances()[0]
    base = base.model_copy(update={"train": base.train.model_copy(update={"steps": steps})})
    instances = [base.model_copy(update={"seed": s}) for s in range(n)]

    watch = Stopwatch()
    fit(ToyStudyModule(world, instances), callbacks=[watch], progress=False)
    return {"n": n, "seconds": watch.seconds, "batch": base.train.batch_size,
            "shape": f"B={base.train.batch_size}, m={world.cfg.d_embed}, k={base.model.neurons}, out={world.d_out}",
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default="LR1")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", default="1,4,16,64")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.study, args.one, args.steps)))
        return

    sizes = [int(s) for s in args.sizes.split(",")]
    runs: dict[int, list[dict]] = {n: [] for n in sizes}
    for _ in range(args.repeats):  # interleaved, so drifts in machine speed hit every size alike
        for n in sizes:
            out = subprocess.run([sys.executable, __file__, "--study", args.study, "--steps", str(args.steps),
                                  "--one", str(n)], capture_output=True, text=True, check=True)
            runs[n].append(json.loads(out.stdout.strip().splitlines()[-1]))
    first = runs[sizes[0]][0]
    print(f"study {args.study} shape ({first['shape']}), {args.steps} steps, median of {args.repeats}\n")
    print("| instances | loop s | samples/s per instance | samples/s in all | s per instance vs 1 alone | peak RSS MB |")
    print("|---|---|---|---|---|---|")
    alone = statistics.median(r["seconds"] for r in runs[sizes[0]]) / sizes[0]
    for n in sizes:
        secs = statistics.median(r["seconds"] for r in runs[n])
        per = first["batch"] * args.steps / secs
        print(f"| {n} | {secs:.2f} | {per:,.0f} | {per * n:,.0f} | {secs / n / alone:.2f} | "
              f"{statistics.median(r['peak_rss_mb'] for r in runs[n]):.0f} |")


if __name__ == "__main__":
    main()
