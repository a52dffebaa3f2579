"""The explorer of a finished run: how long the report stage takes to write it, its size, and how long each kind
of page takes to open in headless Chromium (Debian's `chromium` and `chromium-driver`).

    python benchmarks/explorer_pages.py [RUN_DIR] [--shots DIR]

RUN_DIR (default: this checkout) holds a finished `make repro`: params.yaml, data/, models/, results/ and
reports/claims.json. The explorer is written to a temporary folder (RUN_DIR is only read), then each page is
opened as a fresh document from disk: the home page, the claims, every study, one model of each study (its first
that trained), three neurons of the first neuron model, every SAE study and the first SAE of each. A page counts
as open when it has drawn every plot and table (the page's own signal, `body[data-ready]`); any JavaScript error
fails the run. The first page the fresh browser opens (cold caches: Plotly's 4.6 MB parsed for the first time) is
timed apart. --shots writes a screenshot of each page kind there.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "pipeline"), str(ROOT / "tests")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", nargs="?", default=str(ROOT))
    ap.add_argument("--shots", type=Path)
    args = ap.parse_args()
    os.chdir(args.run_dir)  # the pipeline's layout is relative to the run's root

    from browser import chromium, errors, open_page

    from monosem.params import load_params
    from monosem.store.artifacts import read_json

    from report_explorer import build_explorer

    params = load_params()
    tmp = Path(tempfile.mkdtemp(prefix="explorer-bench-"))
    start = time.perf_counter()
    size = build_explorer(params, read_json("reports/claims.json"), tmp / "explorer",
                          {"name": params.tracking.experiment, "id": "0", "ui": "http://127.0.0.1:5000"})
    print(f"written in {time.perf_counter() - start:.1f} s: {size['pages']} pages, {size['files']} files, "
          f"{size['mb']:.1f} MB")

    index = (tmp / "explorer" / "index.html").as_uri()
    routes = {"home": [""], "claims": ["claims"], "study": [f"study/{n}" for n in params.studies],
              "model": [], "neuron": [], "SAE study": [f"saes/{n}" for n in params.saes], "SAE": []}
    for name in params.studies:
        with open(f"results/{name}/instances.csv") as fh:
            label = next(r["label"] for r in csv.DictReader(fh) if not r["diverged_at"])
        routes["model"].append(f"model/{name}/{label}")
        if not routes["neuron"] and params.studies[name].model.kind == "jermyn":
            routes["neuron"] = [f"neuron/{name}/{label}/{n}" for n in (0, 1, 2)]
    for name in params.saes:
        with open(f"results/saes/{name}/saes.csv") as fh:
            routes["SAE"].append(f"sae/{name}/{next(csv.DictReader(fh))['sae']}")

    browser = chromium(tmp / "profile")
    try:
        print("| page | pages opened | median s | max s | slowest |\n|---|---|---|---|---|")
        print(f"| home, the browser's first page | 1 | {open_page(browser, index):.2f} | | |")  # cold caches
        for kind, pages in routes.items():
            times = {}
            for route in pages:
                times[route] = open_page(browser, f"{index}#/{route}")
                bad = errors(browser) or browser.find_elements("css selector", ".error")
                if bad:
                    raise SystemExit(f"{route}: {bad if isinstance(bad[0], str) else bad[0].text}")
            if args.shots:
                args.shots.mkdir(parents=True, exist_ok=True)
                browser.save_screenshot(str(args.shots / f"{kind.replace(' ', '_')}.png"))
            slowest = max(times, key=times.get)
            print(f"| {kind} | {len(times)} | {statistics.median(times.values()):.2f} | {times[slowest]:.2f} | "
                  f"{slowest or 'home'} |")
    finally:
        browser.quit()


if __name__ == "__main__":
    main()
