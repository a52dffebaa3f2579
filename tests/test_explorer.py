"""The explorer as a researcher uses it: a real `dvc repro` on tiny params writes reports/explorer/, and a real
headless Chromium opens its pages from disk, reads them, sorts and filters tables and clicks a neuron."""

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request

import pytest
from e2e import ROOT, client, make_repo, sh, tiny

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = make_repo(tmp_path_factory.mktemp("explore"), tiny(["LR1"]))  # LR1 and the SAE study on it
    sh("dvc repro", repo)
    return repo


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        if os.environ.get("MONOSEM_CI"):
            pytest.fail("chromium and chromedriver not found: CI must test the explorer in a browser (.ci/run installs them)")
        pytest.skip("chromium not installed (Debian: apt install chromium chromium-driver)")
    from browser import chromium

    b = chromium(tmp_path_factory.mktemp("profile"))
    yield b
    b.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    """Screenshots of the pages, for a person to look at (the path is printed with -s)."""
    path = tmp_path_factory.mktemp("screenshots")
    print(f"explorer screenshots: {path}")
    return path


def visit(browser, repo, route: str) -> None:
    """Open a page as a fresh document and fail on anything the browser or the page reports as an error."""
    from browser import open_page

    seconds = open_page(browser, f"{(repo / 'reports/explorer/index.html').as_uri()}#/{route}")
    check_clean(browser, route)
    print(f"{route}: drawn in {seconds:.2f} s")


def check_clean(browser, route: str) -> None:
    from browser import errors

    assert errors(browser) == [], route
    assert browser.execute_script("return document.body.dataset.ready") != "error", \
        browser.find_element("css selector", "main").text
    assert browser.find_elements("css selector", ".error") == []


def js(browser, script: str):
    return browser.execute_script("return " + script)


def rows(browser, table: str) -> list[list[str]]:
    return [[td.text for td in tr.find_elements("css selector", "td")]
            for tr in browser.find_elements("css selector", f"#{table} tbody tr")]


def test_study_page_has_every_model_in_a_sortable_table_and_the_sweep_plot(repo, browser, shots):
    visit(browser, repo, "study/LR1")
    table = rows(browser, "instances")
    assert len(table) == 4 and {r[0] for r in table} == {"lr=0.003,seed=0", "lr=0.003,seed=1", "lr=0.03,seed=0",
                                                         "lr=0.03,seed=1"}
    assert all(r[-1] == "run" for r in table)  # each row links to its MLflow run
    assert js(browser, "document.querySelectorAll('#sweep .scatterlayer .point').length") == 4  # seeds as points
    header = next(th for th in browser.find_elements("css selector", "#instances th") if th.text == "loss")
    col = [th.text for th in browser.find_elements("css selector", "#instances th")].index("loss")
    header.click()
    losses = [float(r[col]) for r in rows(browser, "instances")]
    assert losses == sorted(losses)
    header.click()
    assert [float(r[col]) for r in rows(browser, "instances")] == sorted(losses, reverse=True)
    browser.save_screenshot(str(shots / "study.png"))


def test_model_page_draws_the_heatmap_and_a_click_on_a_neuron_opens_its_page(repo, browser, shots):
    from browser import wait_drawn

    label = "lr=0.03,seed=0"
    visit(browser, repo, f"model/LR1/{label}")
    assert js(browser, "document.getElementById('sfa').data[0].z.length") == 8  # features
    assert js(browser, "document.getElementById('sfa').data[0].z[0].length") == 16  # neurons
    assert js(browser, "document.querySelectorAll('#sfa .hm image').length") == 1  # the heatmap is drawn
    assert len(rows(browser, "neurons")) == 16
    assert len(browser.find_elements("css selector", "#curves .scatterlayer .trace")) == 3
    table = json.loads((repo / "results/LR1/interp/summaries" / f"{label}.json").read_text())
    select = browser.find_element("css selector", ".controls select")
    select.find_element("css selector", "option[value='poly']").click()
    assert len(rows(browser, "neurons")) == table["n_poly"] and all(r[1] == "poly" for r in rows(browser, "neurons"))
    browser.save_screenshot(str(shots / "model.png"))

    # Click the heatmap cell of the third neuron in the plot's order (feature row 0): its page opens.
    rank = 2
    neuron = js(browser, f"document.getElementById('sfa').data[0].customdata[0][{rank}][0]")
    dx, dy = js(browser, f"""(() => {{
        const gd = document.getElementById('sfa'), L = gd._fullLayout, r = gd.getBoundingClientRect();
        const x = L.xaxis._offset + L.xaxis.l2p({rank}), y = L.yaxis._offset + L.yaxis.l2p(0);
        return [x - r.width / 2, y - r.height / 2]; }})()""")
    from selenium.webdriver import ActionChains

    start = time.perf_counter()
    ActionChains(browser).move_to_element_with_offset(browser.find_element("id", "sfa"), int(dx), int(dy)).click().perform()
    deadline = time.time() + 10
    while "neuron/" not in browser.current_url and time.time() < deadline:
        time.sleep(0.05)
    assert browser.current_url.endswith(f"#/neuron/LR1/{label.replace(',', '%2C').replace('=', '%3D')}/{neuron}")
    wait_drawn(browser, start)
    check_clean(browser, "neuron after click")
    assert browser.find_element("css selector", "h1").text == f"Neuron {neuron} of LR1 · {label}"


def test_neuron_page_shows_its_response_outputs_and_sensitivity(repo, browser, shots):
    label = "lr=0.03,seed=0"
    with open(repo / "results/LR1/interp/neurons" / f"{label}.csv") as fh:
        neurons = {int(r["neuron"]): r for r in csv.DictReader(fh)}
    n = next(k for k, r in neurons.items() if r["class"] == "poly")
    visit(browser, repo, f"neuron/LR1/{label}/{n}")
    assert browser.find_element("id", "class").text == "poly"
    assert js(browser, "document.getElementById('response').data[0].y.length") == 8  # every feature
    assert js(browser, "document.getElementById('outputs').data[0].y.length") == 8  # every output (8 < TOP_OUTPUTS)
    assert len(browser.find_elements("css selector", "#response .bars .point")) >= 1
    response = js(browser, "document.getElementById('response').data[0].y")
    assert response == sorted(response, reverse=True)
    # its top feature, as interpret says, within half a step of the page's 8 bits (of the model's largest activation)
    step = max(float(r["activation_1"]) for r in neurons.values()) / 127
    assert response[0] == pytest.approx(float(neurons[n]["activation_1"]), abs=step / 2 + 1e-6)
    sens = rows(browser, "sensitivity")
    assert len(sens) == 6 and sens[1][2] == "no"  # polysemantic at the paper's 0.999
    assert browser.find_element("id", "mixes").text.startswith("Mixes ")
    browser.save_screenshot(str(shots / "neuron.png"))


def test_a_heatmap_past_the_cell_limit_keeps_its_first_lines_in_the_pages_order_and_says_so(repo, browser):
    from browser import wait_drawn

    visit(browser, repo, "model/LR1/lr=0.03,seed=0")  # 8 features × 16 neurons, 16 latents for the SAE
    heat = lambda el: js(browser, f"[document.getElementById('{el}').data[0].z.length, "  # noqa: E731
                                  f"document.getElementById('{el}').data[0].z[0].length, "
                                  f"document.getElementById('{el}').layout.title.text]")
    full = js(browser, "document.getElementById('sfa').data[0].z")
    for route, el, want, what in (("model/LR1/lr=0.003,seed=1", "sfa", (8, 5), "the first 5 of 16 neurons"),
                                  ("sae/SAE1/relu-lambda0.01-seed0", "cosine", (5, 8), "the first 5 of 16 latents")):
        start = time.perf_counter()  # the same document: the limit set here holds for the next page drawn
        browser.execute_script(f"MONOSEM.maxCells = 40; location.hash = '#/{route}'")
        wait_drawn(browser, start)
        check_clean(browser, route)
        rows_, cols, title = heat(el)
        assert (rows_, cols) == want and what in title, (route, title)
    browser.execute_script("MONOSEM.maxCells = 2 ** 19; location.hash = '#/model/LR1/lr=0.03,seed=0'")
    wait_drawn(browser, time.perf_counter())
    assert js(browser, "document.getElementById('sfa').data[0].z") == full  # under the limit: every neuron
    assert "the first" not in heat("sfa")[2]


def test_sae_pages_show_every_sae_and_one_saes_cosines_against_the_true_features(repo, browser, shots):
    saes = (repo / "results/saes/SAE1/saes.csv").read_text().splitlines()[1:]
    visit(browser, repo, "saes/SAE1")
    assert len(rows(browser, "saes")) == len(saes) == 12
    assert js(browser, "document.querySelectorAll('#pareto .scatterlayer .point').length") == 3 * 12  # three panels
    visit(browser, repo, "sae/SAE1/gated-lambda0.01-seed0")
    assert js(browser, "document.getElementById('cosine').data[0].z.length") == 16  # latents
    assert js(browser, "document.getElementById('cosine').data[0].z[0].length") == 8  # true features
    assert js(browser, "document.querySelectorAll('#cosine .hm image').length") == 1
    pairs = rows(browser, "pairs")
    assert len(pairs) == 8 and all(-1 <= float(p[2]) <= 1 for p in pairs)
    mcc = json.loads((repo / "results/saes/SAE1/measured.json").read_text())["saes"]["gated-lambda0.01-seed0"]["mcc"]
    assert sum(abs(float(p[2])) for p in pairs) / 8 == pytest.approx(mcc, abs=2e-3)  # the MCC's own matching
    browser.save_screenshot(str(shots / "sae.png"))


def test_claims_page_lists_every_claim_and_the_report_run_holds_the_explorer_as_one_page(repo, browser, tmp_path):
    from browser import errors

    visit(browser, repo, "claims")
    claims = json.loads((repo / "reports/claims.json").read_text())
    assert len(rows(browser, "claims")) == len(claims)
    c, exp = client(repo)
    run = next(r for r in c.search_runs([exp.experiment_id]) if r.info.run_name == "report")
    assert run.info.status == "FINISHED" and run.data.metrics["claims"] == len(claims)
    assert {a.path for a in c.list_artifacts(run.info.run_id)} == {"report.md", "claims.json", "explorer.html"}

    # MLflow's UI shows an HTML artifact alone, as a blob in a sandboxed frame: the bundle must work there.
    html = open(c.download_artifacts(run.info.run_id, "explorer.html", str(tmp_path))).read()
    browser.get("about:blank")
    browser.execute_script("""const f = document.createElement('iframe'); f.id = 'artifact'; f.sandbox = 'allow-scripts';
        f.style.width = '1200px'; f.style.height = '800px'; document.body.appendChild(f);
        f.src = URL.createObjectURL(new Blob([arguments[0]], {type: 'text/html'}));""", html)
    browser.switch_to.frame("artifact")
    try:
        deadline = time.time() + 30
        while js(browser, "document.body && document.body.dataset.ready") != "#/" and time.time() < deadline:
            time.sleep(0.1)
        browser.find_element("link text", "LR1").click()  # the frame cannot change its URL: the page still moves
        while js(browser, "document.body.dataset.ready") != "#/study/LR1" and time.time() < deadline:
            time.sleep(0.1)
        assert len(rows(browser, "instances")) == 4
        browser.find_element("link text", "lr=0.03,seed=0").click()
        while not js(browser, "document.body.dataset.ready").startswith("#/model/") and time.time() < deadline:
            time.sleep(0.1)
        assert js(browser, "document.querySelectorAll('#sfa .hm image').length") == 1
    finally:
        browser.switch_to.default_content()
    assert errors(browser) == []


def test_make_explore_prints_the_path_and_serves_the_pages_on_loopback(repo, browser):
    shutil.copy(ROOT / "Makefile", repo / "Makefile")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(["make", "-s", "-C", str(repo), "explore", f"EXPLORE_PORT={port}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == f"explorer: file://{repo}/reports/explorer/index.html"
        deadline = time.time() + 60
        while True:
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=2).read().decode()
                break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, "make explore did not serve"
                time.sleep(0.3)
        assert "<title>monosem explorer</title>" in page
        from browser import open_page

        open_page(browser, f"http://127.0.0.1:{port}/#/study/LR1")
        check_clean(browser, "served study page")
        assert len(rows(browser, "instances")) == 4
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
