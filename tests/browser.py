"""A real headless Chromium for the tests of labkit's HTML pages, driven through selenium and the
chromedriver of Debian's `chromium-driver` (scripts/setup installs both; no driver is downloaded)."""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service


@contextmanager
def chromium(width: int = 1280, height: int = 900):
    """A headless Chromium that keeps the page's console messages and uncaught exceptions.

    Missing Chromium is a failure, not a skip: the class page is only tested here.
    """
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not browser or not driver:
        pytest.fail("Chromium or chromedriver is missing: run scripts/setup (Debian packages chromium, chromium-driver).")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--window-size={width},{height}", "--force-device-scale-factor=1"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    session = webdriver.Chrome(service=Service(driver), options=options)
    try:
        yield session
    finally:
        session.quit()


def script_errors(session) -> list[str]:
    """The console errors and uncaught exceptions since the last call (Chromium logs both as SEVERE),
    including Content-Security-Policy refusals."""
    return [entry["message"] for entry in session.get_log("browser") if entry["level"] == "SEVERE"]


def open_page(session, path: Path) -> None:
    session.get(path.resolve().as_uri())
    assert session.execute_script("return document.readyState") == "complete"
