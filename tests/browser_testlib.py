"""Headless Chromium for the browser tests (``-m browser``), driven by selenium.

A test module imports the fixtures it uses (``from tests.browser_testlib import chromium, screenshot``).
Debian's ``chromium`` and ``chromium-driver`` (``/usr/bin/chromium``, ``/usr/bin/chromedriver``; other paths
from ``SLOTFILL_CHROMIUM`` / ``SLOTFILL_CHROMEDRIVER``) are named explicitly, so selenium never looks for,
or downloads, a browser of its own. ``scripts/test.sh`` installs both with apt-get when they are missing;
where they still are, or selenium is not installed, the tests skip and say which.

Screenshots go to ``SLOTFILL_SCREENSHOTS`` (default ``tests/.artifacts/screenshots``, git-ignored) and
their paths are printed as the tests run.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("SLOTFILL_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("SLOTFILL_CHROMEDRIVER", "/usr/bin/chromedriver")
SCREENSHOTS = Path(os.environ.get("SLOTFILL_SCREENSHOTS", REPO / "tests" / ".artifacts" / "screenshots"))
WINDOW = (1280, 1000)


def missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (it is in the dev extra: pip install -e '.[dev]')"
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (Path(path).is_file() and os.access(path, os.X_OK)) and not shutil.which(path):
            return f"{path} not found (apt-get install {package}; scripts/test.sh does it where apt-get works)"
    return None


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """A headless Chromium (selenium WebDriver) shared by a module's tests; skips, saying why, without one."""
    reason = missing()
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start; /dev/shm is small in containers.
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     f"--window-size={WINDOW[0]},{WINDOW[1]}", "--lang=en-US", "--no-first-run",
                     "--disable-extensions", "--disable-background-networking"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # for page_errors()
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def screenshot(capsys: pytest.CaptureFixture[str]) -> Callable[[Any, str], Path]:
    """``screenshot(driver_or_element, name)``: saves ``SCREENSHOTS/name.png`` and prints its path."""

    def save(target: Any, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        saved = target.save_screenshot(str(path)) if hasattr(target, "save_screenshot") else \
            target.screenshot(str(path))
        assert saved, f"no screenshot written to {path}"
        with capsys.disabled():  # shown even when pytest captures output
            print(f"\nscreenshot: {path}")
        return path

    return save


def page_errors(driver: Any) -> list[dict[str, Any]]:
    """The page's console messages of level SEVERE (script errors, refused loads, CSP violations)."""
    return [entry for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]
