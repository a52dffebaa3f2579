"""Headless Chromium through Selenium, for the explorer's tests and benchmark: Debian's `chromium` and
`chromium-driver` (`.ci/run` installs them), never a downloaded browser."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1000")


def chromium(profile: Path) -> webdriver.Chrome:
    """A fresh headless Chromium with its own profile folder, logging the page's console (JavaScript errors
    come as SEVERE entries)."""
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (binary and driver):
        raise RuntimeError("chromium and chromedriver not found: `apt-get install chromium chromium-driver` "
                           "(.ci/run does it)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={profile}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=opts, service=Service(executable_path=driver))


def open_page(browser: webdriver.Chrome, url: str, timeout: float = 30) -> float:
    """Load `url` (an explorer page: file://.../index.html#/...) as a fresh document, Plotly and all, and wait
    until it has drawn everything; returns the seconds from the request to that."""
    browser.get("about:blank")
    start = time.perf_counter()
    browser.get(url)
    return wait_drawn(browser, start, timeout)


def wait_drawn(browser: webdriver.Chrome, start: float, timeout: float = 30) -> float:
    """Wait until the page says it has drawn the current route (body[data-ready] is its hash, or "error")."""
    script = "const r = document.body && document.body.dataset.ready; return !!r && (r === 'error' || r === (location.hash || '#/'))"
    while time.perf_counter() - start < timeout:
        if browser.execute_script(script):
            return time.perf_counter() - start
        time.sleep(0.02)
    raise TimeoutError(f"{browser.current_url}: not drawn within {timeout} s")


def errors(browser: webdriver.Chrome) -> list[str]:
    """The console's SEVERE entries since the last call (uncaught exceptions, console.error, failed loads)."""
    return [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
