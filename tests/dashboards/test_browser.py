"""The dashboards in a real browser: headless Chromium (Debian's package, driven by selenium)
against ``streamlit run`` on 127.0.0.1, every page visited, key elements asserted, one screenshot
per page saved to test-artifacts/."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from core.distributed import free_port

REPO = Path(__file__).resolve().parents[2]
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
                       reason="Debian chromium + chromium-driver not installed (apt-get install chromium chromium-driver)"),
]


@pytest.fixture(scope="module")
def server(session_runs_dir, dashboard_runs, tmp_path_factory):
    """``streamlit run dashboards/app.py`` on a free 127.0.0.1 port, pointed at the session's runs."""
    port = free_port()
    log = tmp_path_factory.mktemp("streamlit") / "server.log"
    env = {**os.environ, "SUITE_RUNS_DIR": str(session_runs_dir), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "streamlit", "run", str(REPO / "dashboards" / "app.py"), "--server.address", "127.0.0.1",
           "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none"]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read().strip() == b"ok":
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"streamlit did not come up on {url}:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    profile = tmp_path_factory.mktemp("chromium-profile")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                 "--window-size=1500,2000"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def settle(driver, title: str, timeout: float = 180) -> str:
    """Wait until the page shows ``title`` and Streamlit has stopped running; return the page text."""
    from selenium.webdriver.common.by import By

    deadline = time.time() + timeout
    quiet_since = None
    while time.time() < deadline:
        heads = [h.text for h in driver.find_elements(By.CSS_SELECTOR, "h1")]
        running = driver.find_elements(By.CSS_SELECTOR, "[data-testid='stStatusWidget']") or \
            driver.find_elements(By.CSS_SELECTOR, "[data-testid='stSpinner']")
        if title in " ".join(heads) and not running:
            quiet_since = quiet_since or time.time()
            if time.time() - quiet_since > 1.5:  # stable for a moment: the script run has finished
                return driver.find_element(By.CSS_SELECTOR, "[data-testid='stMain']").text
        else:
            quiet_since = None
        time.sleep(0.3)
    raise AssertionError(f"page {title!r} did not finish rendering in {timeout}s; h1s: {heads}")


# What each page must show once it has rendered: with a run for the domain, and without one.
EXPECT = {
    "Overview": (["Runs", "Compare two runs", "MLflow store"], ["No runs under"]),
    "Medical": (["Slices of", "Volumes", "Download mask"], ["No trained run of the medical domain"]),
    "Finance": (["Price history", "Forecast", "Backtest", "VaR breaches", "Variable importance"], ["No trained run of the finance domain"]),
    "Recommendation": (["User → top-K", "Cold start", "Metrics vs baselines"], ["No trained run of the recommendation domain"]),
}
PATHS = {"Overview": "", "Medical": "medical", "Finance": "finance", "Recommendation": "recommendation"}


@pytest.mark.parametrize("title", list(PATHS))
def test_page_renders_in_chromium(title, server, browser, dashboard_runs, artifacts_dir):
    from selenium.webdriver.common.by import By

    browser.get(f"{server}/{PATHS[title]}")
    text = settle(browser, title)
    browser.save_screenshot(str(artifacts_dir / f"dashboard-{title.lower()}.png"))
    assert not browser.find_elements(By.CSS_SELECTOR, "[data-testid='stException']"), f"{title}: a traceback is shown:\n{text[:2000]}"
    if title == "Overview":
        has_run = any(r.run_dir is not None for r in dashboard_runs.values())
    else:
        has_run = dashboard_runs[title.lower()].run_dir is not None
    expected = EXPECT[title][0 if has_run else 1]
    missing = [e for e in expected if e not in text]
    assert not missing, f"{title}: missing {missing} in page text:\n{text[:3000]}"
    # the sidebar navigation offers every page
    nav = browser.find_element(By.CSS_SELECTOR, "[data-testid='stSidebarNav']").text
    assert all(p in nav for p in PATHS), nav
    sidebar = browser.find_element(By.CSS_SELECTOR, "[data-testid='stSidebar']").text
    assert "not bound to 127.0.0.1" not in sidebar and "Runs root" in sidebar
    # every tab of the page, one screenshot each; charts drawn where the page draws them
    for tab in browser.find_elements(By.CSS_SELECTOR, "[role='tab']"):
        name = tab.text.strip()
        tab.click()
        time.sleep(1.5)
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        browser.save_screenshot(str(artifacts_dir / f"dashboard-{title.lower()}-{slug}.png"))
        if title == "Finance" and name in CHARTED:
            panels = [p for p in browser.find_elements(By.CSS_SELECTOR, "[role='tabpanel']") if p.is_displayed()]
            assert any(p.find_elements(By.CSS_SELECTOR, "[data-testid='stPlotlyChart']") for p in panels), f"{title}/{name}: no chart"
        assert not browser.find_elements(By.CSS_SELECTOR, "[data-testid='stException']"), f"{title}/{name}: a traceback is shown"


CHARTED = ("Forecast", "Backtest", "Folds, regimes & tests", "VaR breaches", "Variable importance")

