"""End to end: `interp app` serves a workspace of real tiny runs on a free loopback port and
headless Chromium (Debian `chromium` + `chromium-driver`, installed here if missing) shows a run,
its figures and a feature page; screenshots land in the test's tmp dir."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("selenium")

from app import browser  # noqa: E402
from app.kinds import KINDS  # noqa: E402
from app_workspace import build_workspace  # noqa: E402

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def chromium():
    if os.geteuid() != 0 and not browser.CHROMIUM.exists():
        pytest.skip("chromium is not installed and installing it needs root")
    browser.ensure_chromium()
    driver = browser.chrome()
    yield driver
    driver.quit()


def test_browser_shows_runs_and_plots(chromium, tmp_path, tiny_llama_dir, tiny_llama):
    from selenium.webdriver.common.by import By

    ws = build_workspace(tmp_path / "ws", tiny_llama_dir, tiny_llama)
    with browser.serve(ws, log=tmp_path / "server.log") as url:
        assert url.startswith("http://127.0.0.1:")
        # each page must show its text and (but Home) a drawn plotly figure, no traceback
        shots = browser.screenshot_pages(url, tmp_path / "shots", driver=chromium)
        body = chromium.find_element(By.TAG_NAME, "body").text
        assert "tiny-topk" in body and "Top contexts" in body  # the run, on the last page
        nav = chromium.find_element(By.CSS_SELECTOR, '[data-testid="stSidebarNav"]').text
        assert [t for t in [v.title for v in KINDS.values()] + ["All runs"] if t not in nav] == []
        chromium.get(f"{url}/Feature_browser?run=tiny-topk&latent=3")
        browser.wait_for_page(chromium, "Latent 3", plots=1)
        chromium.save_screenshot(str(tmp_path / "shots" / "latent3.png"))
    assert [p.name for p in shots] == ["home.png", "activations.png", "sae.png", "features.png"]
    for p in shots:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000
