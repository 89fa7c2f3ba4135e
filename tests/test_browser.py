"""The demo's report in a real browser: headless Chromium (Debian's package) via Selenium.

Checks that the page logs no console error, requests nothing from outside the page,
shows every section and figure that the demo's results imply with a non-zero size, and
saves a full-page screenshot under the test's temporary directory. Skipped, with the
reason, where Chromium, its driver or Selenium is absent (`.ci/run` installs them).
"""

from __future__ import annotations

import base64
import json
import os
import shutil

import pandas as pd
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary on PATH "
                       "(Debian package 'chromium'; .ci/run installs it)"),
    pytest.mark.skipif(CHROMEDRIVER is None, reason="no chromedriver on PATH "
                       "(Debian package 'chromium-driver')"),
]


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # never let Selenium Manager download anything
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--hide-scrollbars", "--no-first-run",
                "--disable-extensions", "--disable-background-networking"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(120)
    yield driver
    driver.quit()


def _expected_figures(results) -> dict[str, int]:
    """Figures per report section that the demo's results imply."""
    summary = pd.read_csv(results / "align" / "summary.tsv", sep="\t", dtype={"subject": str})
    subjects = summary.drop_duplicates("subject")
    expected = {"Cross-modal": 1}
    for modality, n in subjects.groupby("modality")["subject"].nunique().items():
        expected[f"Layer curves: {modality}"] = n
        expected[f"Brain maps: {modality}"] = n  # every demo target has coordinates
    for folder in sorted((results / "models" / "voxel_xattn").iterdir()):
        expected[f"Voxel cross-attention encoder: {folder.name}"] = 2  # profile, transfer
    return expected


_PAGE_STATE = """
const sections = [...document.querySelectorAll('#content > .accordion-item')].map(s => {
  const title = s.querySelector('.accordion-header a').textContent.trim();
  const box = s.getBoundingClientRect();
  const imgs = [...s.querySelectorAll('img.figure-img')].map(i => {
    const r = i.getBoundingClientRect();
    return {w: r.width, h: r.height, nw: i.naturalWidth, nh: i.naturalHeight,
            complete: i.complete, alt: i.alt};
  });
  const tables = s.querySelectorAll('table').length;
  return {title, w: box.width, h: box.height, imgs, tables};
});
const toc = [...document.querySelectorAll('#toc-navbar a')].map(a => a.textContent.trim());
return {sections, toc, title: document.title, ready: document.readyState,
        height: document.documentElement.scrollHeight};
"""


def test_demo_report_in_headless_chromium(browser, demo_results, tmp_path):
    report = demo_results / "report.html"
    browser.get(report.as_uri())
    # get() can return before a large page has finished loading on a busy machine: wait
    # for the document (the assertion below still fails if it never completes)
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(browser, 120, poll_frequency=0.5).until(
            lambda d: d.execute_script("return document.readyState") == "complete")
    except TimeoutException:  # reported by the assertion on the state below
        pass
    state = browser.execute_script(_PAGE_STATE)
    assert state["ready"] == "complete"
    assert state["title"] == "brainhead alignment and decoding report: demo"

    # no console errors (warnings and info are allowed)
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    # no failed request, and no request leaving the page (everything is inline)
    failed, outside = [], []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.loadingFailed":
            failed.append(message["params"])
        elif message["method"] == "Network.requestWillBeSent":
            url = message["params"]["request"]["url"]
            if not url.startswith(("data:", "file:", "about:", "blob:")):
                outside.append(url)
    assert not failed, failed
    assert not outside, outside

    # every section the results imply, in the TOC and rendered, with its figures drawn
    expected = _expected_figures(demo_results)
    by_title = {s["title"]: s for s in state["sections"]}
    for title in ("Overview", "Best layers", "Provenance", *expected):
        assert title in state["toc"], (title, state["toc"])
        assert title in by_title, (title, list(by_title))
        section = by_title[title]
        assert section["w"] > 0 and section["h"] > 0, section
    for title, n in expected.items():
        imgs = by_title[title]["imgs"]
        assert len(imgs) == n, (title, imgs)
        for img in imgs:
            assert img["complete"] and img["nw"] > 0 and img["nh"] > 0, (title, img)
            assert img["w"] > 50 and img["h"] > 50, (title, img)
    assert by_title["Best layers"]["tables"] == 2 and by_title["Provenance"]["tables"] >= 3

    # a full-page screenshot, for a person to look at
    shot = browser.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True, "fromSurface": True,
        "clip": {"x": 0, "y": 0, "width": 1400, "height": state["height"], "scale": 0.6}})
    path = tmp_path / "report_full_page.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    assert path.read_bytes().startswith(b"\x89PNG") and path.stat().st_size > 100_000
    keep = os.environ.get("BRAINHEAD_SCREENSHOT")
    if keep:  # a copy where a person can open it
        shutil.copy(path, keep)
