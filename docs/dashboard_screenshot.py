"""Screenshot of the Dask dashboard during a reconstruct run: docs/images/dashboard.png.

Starts ``python -m pipeline.reconstruct photos`` on 2,000 photo tiles (a
LocalCluster, dashboard on 127.0.0.1:8787), waits until a tenth of the
images are done, and has headless Chromium render the dashboard's status
page, whose Progress panel shows the whole job (``reconstruct N / 250``
tasks of 8 images).  Needs Chromium and Playwright to drive it (Debian:
``apt-get install chromium``; ``pip install playwright``: no browser
download, the system's Chromium is used).  Usage::

    python docs/dashboard_screenshot.py [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zarr

HERE = Path(__file__).resolve().parent
IMAGES = 2000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        store = Path(folder) / "photos.zarr"
        run = subprocess.Popen(
            [sys.executable, "-m", "pipeline.reconstruct", "photos", "--set",
             f"dataset.count={IMAGES}", "--out", str(store), "--workers", "2", "-q"])
        try:
            wait_for(store, IMAGES // 10)
            shoot(args.chromium, HERE / "images" / "dashboard.png")
        finally:
            run.send_signal(signal.SIGINT)
            run.wait(timeout=120)


def wait_for(store: Path, done: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if zarr.open_group(store, mode="r")["done"][:].sum() >= done:
                return
        except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError):
            pass
        time.sleep(1)
    raise TimeoutError(f"fewer than {done} images done after {timeout} s")


def shoot(chromium: str, target: Path) -> None:
    """The dashboard's plots draw over a websocket after the page loads: wait, then shoot."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto("http://127.0.0.1:8787/status")
        page.wait_for_timeout(6000)
        page.screenshot(path=target)
        browser.close()
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
