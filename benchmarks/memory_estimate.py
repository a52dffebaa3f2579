"""The memory estimate (`monosem.training.memory`) against the peak resident memory of the real stages.

    python benchmarks/memory_estimate.py [--only train@TRAIN_K ...]

Builds a temporary repo with params where one term of each stage dominates (a wide hidden layer, many
features, a large held-out set, a large dictionary), runs every stage under `/usr/bin/time` and prints
each stage's estimate beside its measured peak RSS (the stage process; its MLflow worker is not counted).
The estimate should stay a little below the measured peak: it exists to refuse what cannot fit, not to
refuse what might.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from e2e import make_repo  # noqa: E402

from monosem.params import parse_params  # noqa: E402
from monosem.training import memory  # noqa: E402

TRAIN = {"steps": 16, "batch_size": 64, "lr": 0.01, "t_max": 8, "log_points": 2}
PARAMS = {
    "worlds": {
        "small": {"n_features": 64, "d_embed": 16, "eps": 0.05, "n_eval": 1024},
        "wide": {"n_features": 4096, "d_embed": 64, "eps": 0.01, "n_eval": 1024},
        "evals": {"n_features": 64, "d_embed": 16, "eps": 0.05, "n_eval": 65536},
        "gen": {"n_features": 512, "d_embed": 16, "eps": 0.05, "n_eval": 131072},
        "tms": {"n_features": 1024, "d_embed": 1024, "eps": 0.05, "task": "tms", "n_eval": 8192},
    },
    "studies": {
        "TINY": {"world": "small", "model": {"neurons": 16}, "train": TRAIN, "seeds": [0]},
        "TRAIN_K": {"world": "small", "model": {"neurons": 4096}, "train": TRAIN | {"batch_size": 4096},
                    "sweep": {"train.lr": [0.01, 0.003]}, "seeds": [0]},
        "TRAIN_N": {"world": "wide", "model": {"neurons": 32}, "train": TRAIN | {"batch_size": 4096},
                    "sweep": {"train.lr": [0.01, 0.003]}, "seeds": [0]},
        "MEASURE": {"world": "evals", "model": {"neurons": 256}, "train": TRAIN,
                    "sweep": {"train.lr": [0.01, 0.003], "train.noise_std": [0.0, 0.1]}, "seeds": [0]},
        "TIED": {"world": "tms", "model": {"kind": "tms_hidden", "neurons": 16},
                 "train": TRAIN | {"optimizer": "adamw", "batch_size": 1024}, "sweep": {"train.lr": [0.01, 0.003]},
                 "seeds": [0, 1, 2, 3]},
    },
    "saes": {
        "SAE_BIG": {"study": "TINY", "instance": "base,seed=0", "world": "small", "layer": "input", "latents": 8192,
                    "architectures": {"relu": [0.01, 0.1], "topk": [4, 8]}, "seeds": [0],
                    "train": {"steps": 16, "batch_size": 1024, "log_points": 2}, "n_eval": 4096},
    },
    "tracking": {"experiment": "memory"},
}
ORDER = ["generate@" + w for w in PARAMS["worlds"]] + [
    f"{stage}@{s}" for s in PARAMS["studies"] for stage in ("train", "measure")] + [
    "sae@" + s for s in PARAMS["saes"]]


def peak_rss(repo: Path, stage: str) -> float:
    kind, name = stage.split("@")
    out = subprocess.run(["/usr/bin/time", "-f", "maxrss %M", sys.executable, f"pipeline/{kind}.py", name], cwd=repo,
                         capture_output=True, text=True, env=os.environ | {"PYTHONWARNINGS": "ignore"})
    if out.returncode != 0:
        raise SystemExit(f"{stage} failed:\n{out.stderr[-3000:]}")
    return float(re.findall(r"maxrss (\d+)", out.stderr)[-1]) * 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", nargs="*", help="stages to measure (the ones they need run too, unreported)")
    args = parser.parse_args()
    estimates = {e.stage: e for e in memory.estimates(parse_params(PARAMS))}
    wanted = set(args.only or ORDER)
    for stage in list(wanted):  # and what they read
        kind, name = stage.split("@")
        study = PARAMS["saes"][name]["study"] if kind == "sae" else name
        if kind != "generate":
            wanted |= {f"generate@{PARAMS['studies'][study]['world']}"} | ({f"train@{study}"} if kind != "train" else set())
    print("| stage | largest term | estimate | measured peak RSS | estimate / measured |\n|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        repo = make_repo(Path(tmp), PARAMS)
        for stage in [s for s in ORDER if s in wanted]:
            rss = peak_rss(repo, stage)
            if args.only and stage not in args.only:
                continue
            est = estimates[stage]
            top = max(est.peak(), key=lambda n: n.bytes)
            print(f"| {stage} | {top.what} ({memory.gb(top.bytes)}) | {memory.gb(est.bytes())} | {memory.gb(rss)} "
                  f"| {est.bytes() / rss:.2f} |", flush=True)


if __name__ == "__main__":
    main()
