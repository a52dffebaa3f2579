"""Each stage kind's measured cost in a finished run, beside what `make repro` projected for it.

    python benchmarks/stage_costs.py [--rate GFLOP/s] [--since ISO-TIME]    (in a checkout, after `make repro`)

Every stage appends its wall seconds and peak resident memory to `.monosem/stages.jsonl` as it finishes
(`pipeline/common.record_cost`); this reads the latest line of each stage the params define (those finished
after `--since`, if given), and prints a table per stage kind: the stages, their measured seconds (sum,
median, largest), the projection for the same stages (`monosem.training.timing` at the matmul rate given, by
default measured now: give the run's own), and the peak memory against the estimate the run was admitted on
(`monosem.training.memory`, as measured / estimate over the kind's stages).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from monosem.params import load_params  # noqa: E402
from monosem.training.memory import estimates, gb  # noqa: E402
from monosem.training.timing import duration, matmul_rate, stage_times  # noqa: E402

KINDS = ["generate", "train", "measure", "sae", "report"]


def costs(root: Path, since: str = "") -> dict[str, dict]:
    """The latest recorded cost of each stage (finished at or after `since`)."""
    out = {}
    path = root / ".monosem" / "stages.jsonl"
    for line in path.read_text().splitlines() if path.exists() else []:
        entry = json.loads(line)
        if entry["finished"] >= since:
            out[entry["stage"]] = entry
    return out


def table(params, measured: dict[str, dict], rate: float) -> list[dict]:
    """One row per stage kind with any stage measured."""
    projected = {t.stage: t for t in stage_times(params, rate)}
    estimate = {e.stage: e.bytes() for e in estimates(params)}
    rows = []
    for kind in KINDS:
        stages = [s for s, t in projected.items() if t.kind == kind and s in measured]
        if not stages:
            continue
        seconds = [measured[s]["seconds"] for s in stages]
        ratios = [measured[s]["peak_rss"] / estimate[s] for s in stages if s in estimate]
        rows.append({"kind": kind, "stages": len(stages), "of": sum(t.kind == kind for t in projected.values()),
                     "seconds": sum(seconds), "median": statistics.median(seconds), "largest": max(seconds),
                     "projected": sum(projected[s].seconds for s in stages),
                     "peak_rss": max(measured[s]["peak_rss"] for s in stages),
                     "ratio": (min(ratios), max(ratios)) if ratios else None})
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| stage kind | stages | measured | median | largest | projected | measured / projected | peak memory "
             "| peak / estimate |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r['ratio'][0]:.2f}–{r['ratio'][1]:.2f}" if r["ratio"] else "–"
        lines.append(f"| {r['kind']} | {r['stages']} of {r['of']} | {duration(r['seconds'])} | {r['median']:.1f} s "
                     f"| {r['largest']:.1f} s | {duration(r['projected'])} | {r['seconds'] / r['projected']:.2f} "
                     f"| {gb(r['peak_rss'])} | {ratio} |")
    total, proj = sum(r["seconds"] for r in rows), sum(r["projected"] for r in rows)
    lines.append(f"| all | {sum(r['stages'] for r in rows)} | {duration(total)} | | | {duration(proj)} "
                 f"| {total / proj:.2f} | | |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, help="the run's matmul rate in GFLOP/s (default: measured now)")
    ap.add_argument("--since", default="", help="only stages finished at or after this time (ISO, as recorded)")
    args = ap.parse_args()
    rate = args.rate * 1e9 if args.rate else matmul_rate()
    rows = table(load_params(), costs(Path.cwd(), args.since), rate)
    if not rows:
        sys.exit("no stage of params.yaml has a recorded cost in .monosem/stages.jsonl: run `make repro` first")
    print(f"projections at {rate / 1e9:.0f} GFLOP/s")
    print(markdown(rows))


if __name__ == "__main__":
    main()
