"""Drive the explorer in a real browser: start `interp app` on a free loopback port, open pages
in headless Chromium (Debian's `chromium` + `chromium-driver`, through selenium) and take
screenshots. Used by the end-to-end test and to make the screenshots in docs/getting_started.md:

    python -m app.browser WORKSPACE OUT_DIR [LATENT]   # one PNG per page in OUT_DIR

Nothing is downloaded but the two Debian packages (`ensure_chromium` installs them with apt-get
when missing and running as root); selenium is pointed at /usr/bin/chromedriver, so its driver
manager never runs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROME_ARGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--disable-extensions", "--no-first-run",
               "--disable-default-apps", "--hide-scrollbars")

# (file name, URL path relative to the server, a text that must be on the page, at least this
# many drawn plotly figures, at least this many drawn tables)
PAGES = (("home", "", "interp explorer", 0, 1),
         ("activations", "Activation_stores", "Norms", 1, 1),
         ("sae", "SAEs", "Training", 1, 0),
         ("features", "Feature_browser", "Top contexts", 1, 0))


def ensure_chromium() -> None:
    """Install Debian's `chromium` and `chromium-driver` if either is missing (needs root)."""
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise RuntimeError("Headless Chromium is missing: install the Debian packages "
                           "`chromium` and `chromium-driver` (apt-get install chromium "
                           "chromium-driver) as root.")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium",
                    "chromium-driver"], check=True, env=env)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(workspace: str | Path, port: int | None = None, timeout: float = 120.0,
          log: str | Path | None = None) -> Iterator[str]:
    """Run `interp app WORKSPACE --headless` on a loopback port until the block ends; yields its
    URL once `/_stcore/health` answers."""
    port = port or free_port()
    out = open(log, "wb") if log else subprocess.DEVNULL
    # as a user would: from another folder, with the toolkit installed (pip install -e .);
    # `interp app` itself puts the checkout on the explorer's PYTHONPATH
    where = Path(workspace).resolve().parent
    proc = subprocess.Popen([sys.executable, "-m", "interp.cli", "app", str(workspace),
                             "--port", str(port), "--headless"], cwd=where, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"`interp app` exited with code {proc.returncode}"
                                   + (f"; see {log}" if log else ""))
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            if time.monotonic() > deadline:
                raise TimeoutError(f"The explorer did not answer on {url} in {timeout:.0f} s.")
            time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)  # the session holds interp and its streamlit child
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
        if log:
            out.close()


def chrome(width: int = 1400, height: int = 1600):
    """A headless Chromium through selenium, pointed at the Debian binaries."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for a in (*CHROME_ARGS, f"--window-size={width},{height}"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)


def wait_for_page(driver, text: str, plots: int = 1, tables: int = 0,
                  timeout: float = 90.0) -> None:
    """Wait until the page shows `text`, at least `plots` drawn plotly figures and `tables`
    drawn tables (each table's canvas present), and Streamlit has finished the script."""
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + timeout
    while True:
        body = driver.find_element(By.TAG_NAME, "body").text
        n = len(driver.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .main-svg"))
        frames = [f for f in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stDataFrame"]')
                  if f.is_displayed()]  # tables in closed tabs are never drawn
        drawn = sum(bool(f.find_elements(By.TAG_NAME, "canvas")) for f in frames)
        running = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"]')
        if text in body and n >= plots and drawn >= tables and drawn == len(frames) \
                and not running:
            time.sleep(1.0)  # let the last figures finish their transitions
            return
        if "Traceback" in body:
            raise AssertionError(f"The page shows a traceback:\n{body[:2000]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{driver.current_url}: no {text!r} with {plots} figure(s) after "
                               f"{timeout:.0f} s; the page says:\n{body[:2000]}")
        time.sleep(0.5)


def screenshot_pages(url: str, out_dir: str | Path, pages=PAGES, driver=None) -> list[Path]:
    """Open each page, wait for its text and a figure, save `<name>.png`; returns the files."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    own = driver is None
    driver = driver or chrome()
    files = []
    try:
        for name, path, text, plots, tables in pages:
            driver.get(f"{url}/{path}")
            wait_for_page(driver, text, plots=plots, tables=tables)
            f = out_dir / f"{name}.png"
            driver.save_screenshot(str(f))
            files.append(f)
    finally:
        if own:
            driver.quit()
    return files


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) not in (2, 3):
        raise SystemExit("usage: python -m app.browser WORKSPACE OUT_DIR [LATENT]")
    latent = f"?latent={int(argv[2])}" if len(argv) == 3 else ""
    pages = [(n, p + (latent if n == "features" else ""), *rest) for n, p, *rest in PAGES]
    ensure_chromium()
    with serve(argv[0]) as url:
        for f in screenshot_pages(url, argv[1], pages=pages):
            print(f)


if __name__ == "__main__":
    main()
