"""Render the page `dvc plots show` writes in Debian's headless Chromium and report what it drew.

DVC's page loads Vega, Vega-Lite and Vega-Embed from a CDN this machine cannot reach; the same versions
come from the npm registry (`npm pack`, the built bundles only) and the page is rendered with those.
Each plot is drawn as SVG, so its titles can be read back from the DOM.

    python tests/plots_page.py dvc_plots/index.html   # prints the plots drawn, their titles and any errors
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

CDN = re.compile(r'<script src="https://cdn\.jsdelivr\.net/npm/([\w-]+)@([\d.]+)"></script>')
CHROMIUM = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync")
# Wraps vegaEmbed (which DVC's page calls once per plot) to draw SVG and count successes and failures;
# a later script writes the tally into the page once Chromium's virtual clock has let rendering finish.
WATCH = """<script>
window.__drawn = []; window.__errors = [];
window.addEventListener('error', e => __errors.push(String(e.message)));
window.addEventListener('unhandledrejection', e => __errors.push(String(e.reason)));
const __embed = window.vegaEmbed;
window.vegaEmbed = (el, spec, opts) => __embed(el, spec, Object.assign({renderer: 'svg'}, opts))
  .then(r => { __drawn.push(el); return r; }, e => { __errors.push(el + ': ' + e); throw e; });
</script>"""
TALLY = """<script>setTimeout(() => { const p = document.createElement('pre'); p.id = 'tally';
p.textContent = JSON.stringify({drawn: __drawn, errors: __errors}); document.body.appendChild(p); }, 5000);</script>"""


def missing() -> str | None:
    """What this check needs and the machine lacks (None: it can run)."""
    for tool in ("chromium", "npm"):
        if not shutil.which(tool):
            return f"{tool} not installed"
    return None


def local_page(page: Path, libs: Path) -> Path:
    """A copy of `page` beside it that loads the Vega libraries from `libs` (fetched there once)."""
    text = page.read_text()
    scripts = CDN.findall(text)
    assert {name for name, _ in scripts} == {"vega", "vega-lite", "vega-embed"}, scripts
    for name, version in scripts:
        bundle = libs / f"{name}@{version}.min.js"
        if not bundle.exists():
            with tempfile.TemporaryDirectory() as tmp:
                subprocess.run(["npm", "pack", "--silent", f"{name}@{version}"], cwd=tmp, check=True,
                               capture_output=True, timeout=120)
                with tarfile.open(next(Path(tmp).glob("*.tgz"))) as tar:
                    member = tar.extractfile(f"package/build/{name}.min.js")
                    libs.mkdir(parents=True, exist_ok=True)
                    bundle.write_bytes(member.read())
        text = text.replace(f'<script src="https://cdn.jsdelivr.net/npm/{name}@{version}"></script>',
                            f'<script src="{bundle.resolve().as_uri()}"></script>')
    text = text.replace("</head>", WATCH + "\n</head>").replace("</body>", TALLY + "\n</body>")
    out = page.with_name("local-" + page.name)
    out.write_text(text)
    return out


def render(page: Path, libs: Path) -> dict:
    """{'drawn': ids of the plots Vega drew, 'errors': script errors, 'titles': every plot's title text}."""
    local = local_page(page, libs).resolve()
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run(["chromium", *CHROMIUM, f"--user-data-dir={profile}", "--virtual-time-budget=20000",
                              "--dump-dom", local.as_uri()], capture_output=True, text=True, timeout=180).stdout
    tally = re.search(r'<pre id="tally">(.*?)</pre>', dom, re.S)
    result = json.loads(html.unescape(tally.group(1))) if tally else {"drawn": [], "errors": ["never finished"]}
    titles = re.findall(r'<g class="mark-group role-title[^"]*".*?<text[^>]*>([^<]*)</text>', dom, re.S)
    return result | {"titles": [html.unescape(t) for t in titles]}


if __name__ == "__main__":
    print(json.dumps(render(Path(sys.argv[1]), Path(tempfile.gettempdir()) / "monosem-vega"), indent=1))
