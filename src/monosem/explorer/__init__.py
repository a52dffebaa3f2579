"""The explorer: a static site a researcher clicks through (study → model → neuron → features; SAE latents
against the true features; the claims), written as one `index.html`, its script and style, Plotly's bundled
JavaScript and one data file per page.

It opens from disk with no server and no network: each data file is a script (`MONOSEM.put(key, {...})`), since
a page opened as file:// may not fetch JSON beside it. Matrices travel as base64 int16 with one scale each
(`encode`): 2.7 bytes a number instead of ~6 as decimal text, and exact to 1/32767 of the matrix's largest value.

This module builds the pages' data from tensors and tables the caller has read, and writes the site; where the
pipeline keeps those files is the report stage's business.
"""

from __future__ import annotations

import base64
import json
import math
import shutil
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


def encode(t: Tensor) -> dict:
    """A 2-D tensor as {shape, scale, b64}: little-endian int16 of round(t / scale), scale = max|t| / 32767."""
    a = t.detach().double().cpu().numpy()
    top = float(np.abs(a).max()) if a.size else 0.0
    scale = top / 32767 if top > 0 else 1.0
    q = np.round(a / scale).astype("<i2")
    return {"shape": list(a.shape), "scale": scale, "b64": base64.b64encode(q.tobytes()).decode()}


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
    monosemantic first, features by the neuron they drive most), bias, output weights (d_out, k), the interpret
    stage's neuron table and summary, its training curves, and frac_mono of every neuron at each probe
    amplitude (`amplitude_sfa`: the single-feature activations with probes scaled by that amplitude)."""
    order = neuron_order(sfa)
    return {"sfa": encode(sfa), "w_out": encode(w_out), "bias": bias.tolist(),
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
    return {"cos": encode(cos[lat][:, feat]), "latent_order": lat, "feature_order": feat,
            "pairs": [[la, fe, float(cos[la, fe])] for la, fe in zip(lat, feat)][:len(first)]}


def _script(key: str, value: Any) -> str:
    return f"MONOSEM.put({json.dumps(key)}, {json.dumps(_round(value), separators=(',', ':'), allow_nan=False)});\n"


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
