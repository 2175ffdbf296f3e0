"""The web console in a real headless Chromium (Debian's chromium + chromedriver, driven by Selenium)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from demotools import Demo

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARTIFACTS = Path(os.environ.get("EVERSTREAM_ARTIFACTS", Path(__file__).resolve().parents[2] / "artifacts"))


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        if os.environ.get("CI") == "true":
            pytest.fail("Chromium and chromedriver are required in CI (scripts/test.sh installs them)")
        pytest.skip("Debian's chromium and chromium-driver are not installed")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1000"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def b_rows(browser: webdriver.Chrome, rows_js: str) -> list[list[str]]:
    rows: list[list[str]] = browser.execute_script(rows_js)
    return rows


def _number(text: str) -> int:
    return int(text.replace(",", "") or 0)


def test_console_shows_live_numbers_and_the_injected_alert(demo: Demo, browser: webdriver.Chrome) -> None:
    """Open the console; the captured count moves; the Alerts tab lists an injected fat-finger trade."""
    browser.get(demo.url)
    wait = WebDriverWait(browser, 30)
    wait.until(lambda b: _number(b.find_element(By.ID, "events-captured").text) > 0)
    first = _number(browser.find_element(By.ID, "events-captured").text)
    wait.until(lambda b: _number(b.find_element(By.ID, "events-captured").text) > first)
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#pipelines-table tbody tr")) == 6)
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#bars-chart .main-svg"))  # plotly drew the chart

    browser.find_element(By.ID, "tab-alerts").click()
    wait.until(ec.visibility_of_element_located((By.ID, "alerts-table")))
    # the table is re-rendered every second: read it in one script call (no stale element handles)
    rows_js = "return [...document.querySelectorAll('#alerts-table tbody tr')].map(r => [r.dataset.type, r.innerText])"
    hit = wait.until(lambda b: next((r for r in b.execute_script(rows_js) if "FATFINGER-" in r[1]), None))
    assert hit[0] == "large_trade"
    # filter to one type: the planted account takeovers (replayed history) are listed
    pick = ("const s = document.getElementById('alert-type'); "
            "if (![...s.options].some(o => o.value === 'account_takeover')) return false; "
            "s.value = 'account_takeover'; s.dispatchEvent(new Event('change')); return true")
    wait.until(lambda b: b.execute_script(pick))
    # after the next refresh only that type is listed, the planted takeovers among them
    ato = wait.until(lambda b: ((rows := b_rows(b, rows_js)) and all(r[0] == "account_takeover" for r in rows)
                     and [r for r in rows if "ATO0" in r[1]]) or None)
    assert len(ato) >= 1
    time.sleep(0.5)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "console-alerts.png"
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors

    browser.find_element(By.ID, "tab-topics").click()
    click_js = ("const r = document.querySelector(\"#topics-table tr[data-topic='trades']\"); "
                "if (r) r.click(); return !!r")
    wait.until(lambda b: b.execute_script(click_js))
    wait.until(lambda b: '"symbol"' in b.find_element(By.ID, "records").text)
    browser.find_element(By.ID, "tab-overview").click()
    browser.save_screenshot(str(ARTIFACTS / "console-overview.png"))
