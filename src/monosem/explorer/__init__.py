"""The explorer: a static site a researcher clicks through (study → model → neuron → features; SAE latents
against the true features; the claims), written as one `index.html`, its script and style, Plotly's bundled
JavaScript and one data file per page.

It opens from disk with no server and no network: each data file is a script, since a page opened as file:// may
not fetch a file beside it. `data/index.js` calls `MONOSEM.put("index", {...})`; every other page's file calls
`MONOSEM.putz(key, "...")` with the page packed (`pack`): its JSON and its matrices' bytes in one zlib stream,
base64, which the page inflates with the browser's DecompressionStream. A matrix is stored as integers of `bits`
bits with one scale (`encode`): a model's single-feature activations and an SAE's cosines in 8 bits (1/127 of
the matrix's largest value: what a heatmap's colours and its hover show), weights in 16. A neuron's output
weights are its 16 largest by magnitude (`TOP_OUTPUTS`; the rest's norm follows from ‖w_out‖ in its table row).
So the site grows with what a page shows, not with the bytes of every weight (docs/explorer.md: its size).

This module builds the pages' data from tensors and tables the caller has read, and writes the site; where the
pipeline keeps those files is the report stage's business.
"""

from __future__ import annotations

import base64
import json
import math
import shutil
import struct
import zlib
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from monosem.analysis.interpret import feature_order, neuron_order
from monosem.analysis.metrics import frac_mono
from monosem.analysis.sae_metrics import mcc

ASSETS = ("index.html", "app.js", "style.css")
AMPLITUDES = (0.25, 0.5, 1.0)  # the probe amplitudes of the interpret stage's sensitivity (interpret.AMPLITUDES)
TOP_OUTPUTS = 16  # a neuron's output weights kept for its page: the largest by magnitude
DTYPES = {8: "<i1", 16: "<i2"}


def encode(t: Tensor, bits: int = 16) -> dict:
    """A 2-D tensor as {"$m": [rows, cols, bits, scale], "q": bytes}: little-endian int`bits` of round(t / scale),
    scale = max|t| / (2^(bits−1) − 1), so within scale/2 of t; an integer tensor as it is (scale 1). `pack` moves
    the bytes out of the JSON."""
    a = t.detach().double().cpu().numpy()
    top = float(np.abs(a).max()) if a.size else 0.0
    scale = top / (2 ** (bits - 1) - 1) if top > 0 and t.is_floating_point() else 1.0
    q = np.round(a / scale).astype(DTYPES[bits])
    return {"$m": [*a.shape, bits, scale], "q": q.tobytes()}


def pack(value: Any) -> bytes:
    """A page as one zlib stream: a 4-byte little-endian length, the page's JSON (floats to 5 digits), then each
    matrix's bytes at an offset divisible by 4, which its {"$m": [rows, cols, bits, scale, offset]} names."""
    blobs: list[bytes] = []
    at = 0

    def walk(obj: Any) -> Any:
        nonlocal at
        if isinstance(obj, dict) and "$m" in obj:
            blobs.append(obj["q"] + b"\0" * (-len(obj["q"]) % 4))
            at, offset = at + len(blobs[-1]), at
            return {"$m": [*obj["$m"], offset]}
        if isinstance(obj, dict):
            return {k: walk(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [walk(v) for v in obj]
        return obj

    head = json.dumps(_round(walk(value)), separators=(",", ":"), allow_nan=False).encode()
    head += b" " * (-len(head) % 4)
    return zlib.compress(struct.pack("<I", len(head)) + head + b"".join(blobs), 6)


def unpack(data: bytes) -> Any:
    """`pack`'s inverse, each matrix as a float64 numpy array (the page's own decoding, in Python)."""
    raw = zlib.decompress(data)
    (n,) = struct.unpack_from("<I", raw)
    base = 4 + n

    def walk(obj: Any) -> Any:
        if isinstance(obj, dict) and "$m" in obj:
            rows, cols, bits, scale, offset = obj["$m"]
            q = np.frombuffer(raw, DTYPES[bits], rows * cols, base + offset)
            return q.reshape(rows, cols) * scale
        if isinstance(obj, dict):
            return {k: walk(v) for k, v in obj.items()}
        return [walk(v) for v in obj] if isinstance(obj, list) else obj

    return walk(json.loads(raw[4:base]))


def _round(obj: Any, digits: int = 5) -> Any:
    """Floats to `digits` significant digits (the pages show 3-4), NaN and inf as null: smaller data files."""
    if isinstance(obj, float):
        return float(f"{obj:.{digits}g}") if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _round(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_round(v, digits) for v in obj]
    return obj


def columns(rows: list[dict]) -> dict:
    """A table as {columns, rows}: each row a list, so the keys are written once."""
    cols = list(rows[0]) if rows else []
    return {"columns": cols, "rows": [[r.get(c) for c in cols] for r in rows]}


def model_page(sfa: Tensor, amplitude_sfa: dict[float, Tensor], bias: Tensor, w_out: Tensor, table: list[dict],
               summary: dict, curves: dict[str, list]) -> dict:
    """A neuron model's page: its single-feature activations (k, N) in the paper's order (neurons most
    monosemantic first, features by the neuron they drive most), bias, each neuron's `TOP_OUTPUTS` largest output
    weights of w_out (d_out, k) and their outputs (`w_out_top`, `w_out_index`: (top, k)), the interpret
    stage's neuron table and summary, its training curves, and frac_mono of every neuron at each probe
    amplitude (`amplitude_sfa`: the single-feature activations with probes scaled by that amplitude)."""
    order = neuron_order(sfa)
    top = w_out.abs().topk(min(TOP_OUTPUTS, w_out.shape[0]), dim=0).indices  # (top, k): each neuron's largest
    return {"sfa": encode(sfa, bits=8), "w_out_index": encode(top), "w_out_top": encode(w_out.gather(0, top)),
            "bias": bias.tolist(),
            "neuron_order": order.tolist(), "feature_order": feature_order(sfa, order).tolist(),
            "frac_mono_at": [{"amplitude": a, "values": frac_mono(s).tolist()} for a, s in amplitude_sfa.items()],
            "table": columns(table), "summary": summary, "curves": curves}


def tied_page(W: Tensor, b: Tensor, features: list[dict], curves: dict[str, list]) -> dict:
    """A tied model's page (TMS, the bounds' power model): W (m, n), the output bias b (n,), its per-feature
    table (norm, superposition, dimensionality) and its training curves."""
    return {"W": encode(W), "b": b.tolist(), "features": columns(features), "curves": curves}


def sae_page(W_dec: Tensor, G: Tensor) -> dict:
    """One SAE's cosines between its decoder atoms (m, n) and the true feature directions G (N, n), latents and
    features reordered so that the one-to-one matching of the MCC (sae_metrics.mcc) comes first, its pairs by
    |cos| descending; then the unmatched latents (or features) by their best |cos|."""
    Du = W_dec / W_dec.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    Gu = G / G.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    cos = Du.double() @ Gu.double().T  # (m, N)
    _, lat, feat = mcc(W_dec, G)
    pair_cos = cos[torch.as_tensor(lat), torch.as_tensor(feat)].abs()
    first = torch.argsort(pair_cos, descending=True, stable=True)
    lat, feat = torch.as_tensor(lat)[first].tolist(), torch.as_tensor(feat)[first].tolist()
    rest = lambda taken, best: sorted(set(range(len(best))) - set(taken), key=lambda i: -best[i])  # noqa: E731
    lat += rest(lat, cos.abs().max(1).values.tolist())
    feat += rest(feat, cos.abs().max(0).values.tolist())
    return {"cos": encode(cos[lat][:, feat], bits=8), "latent_order": lat, "feature_order": feat,
            "pairs": [[la, fe, float(cos[la, fe])] for la, fe in zip(lat, feat)][:len(first)]}


def _script(key: str, value: Any) -> str:
    if key == "index":  # read by every page as it opens: plain JSON
        return f"MONOSEM.put({json.dumps(key)}, {json.dumps(_round(value), separators=(',', ':'), allow_nan=False)});\n"
    return f"MONOSEM.putz({json.dumps(key)}, \"{base64.b64encode(pack(value)).decode()}\");\n"


def bundle(site: Path, path: Path) -> None:
    """The site written by `write_site` as one self-contained HTML file, its scripts, style and every data file
    inline: what MLflow's UI can show (it renders an HTML artifact on its own, without the files beside it), and
    a single file to send. Inline scripts end at the first `</script`: data escape `</` (as `<\\/`, the same string
    in JSON), the code is checked to hold none."""
    html = (site / "index.html").read_text()
    for name in ("plotly.min.js", "app.js"):
        code = (site / name).read_text()
        if "</script" in code.lower() or "<!--" in code:
            raise ValueError(f"{name} cannot be inlined: it holds an HTML end tag or comment")
        html = html.replace(f'<script src="{name}"></script>', f"<script>{code}</script>")
    html = html.replace('<link rel="stylesheet" href="style.css">', f"<style>{(site / 'style.css').read_text()}</style>")
    first = site / "data" / "index.js"
    data = [first] + sorted(p for p in (site / "data").rglob("*.js") if p != first)
    html = html.replace('<script src="data/index.js"></script>',
                        "\n".join("<script>" + p.read_text().replace("</", "<\\/") + "</script>" for p in data))
    path.write_text(html)


def write_site(out: Path, index: dict, pages: dict[str, dict]) -> dict[str, float]:
    """Write the explorer to `out` (replaced whole, so a failure leaves the previous one): the assets, Plotly's
    bundled JavaScript, `data/index.js` and `data/<key>.js` per page. Returns its size in MB and file count."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "data").mkdir(parents=True)
    here = resources.files(__package__)
    for name in ASSETS:
        (tmp / name).write_text(here.joinpath(name).read_text())
    (tmp / "plotly.min.js").write_bytes(resources.files("plotly").joinpath("package_data/plotly.min.js").read_bytes())
    (tmp / "data" / "index.js").write_text(_script("index", index))
    for key, page in pages.items():
        path = tmp / "data" / f"{key}.js"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_script(key, page))
    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    files = [p for p in out.rglob("*") if p.is_file()]
    return {"mb": sum(p.stat().st_size for p in files) / 2 ** 20, "files": len(files)}
