"""Headless Chromium (Debian's `chromium`, no browser download) driven by Playwright, signed in to a
ciserver's dashboard as a person would: through the sign-in form with an API token.

Every page records the dialogs it opened and what the browser's console said (a refused inline
script shows there), so a test can assert that nothing a pusher wrote ran."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Dialog, Page, sync_playwright

# Docker's default for a container is 64 MB of /dev/shm, too little for Chromium's renderer.
FLAGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"]


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("chromium is missing: apt-get install -y chromium (.ci/run installs it)")
    return found


@contextmanager
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=FLAGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Visitor:
    """One person's browser tab on the dashboard, with what it noticed."""

    page: Page
    base_url: str
    shots: Path
    dialogs: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # uncaught exceptions of the page's scripts

    def open(self, path: str) -> Page:
        self.page.goto(self.base_url + path)
        return self.page

    def screenshot(self, name: str, *, full_page: bool = True) -> Path:
        """A PNG of the page under the test run's directory (the good ones go to docs/screenshots)."""
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        return path


@contextmanager
def visitor(browser: Browser, base_url: str, token: str, shots: Path) -> Iterator[Visitor]:
    """A fresh browser context signed in with `token` through the sign-in form."""
    context = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 800})
    context.set_default_timeout(20_000)
    page = context.new_page()
    seen = Visitor(page, base_url, shots)

    def on_dialog(dialog: Dialog) -> None:
        # A button's "are you sure?" is answered yes; anything else is recorded and dismissed.
        seen.dialogs.append(f"{dialog.type}: {dialog.message}")
        if dialog.type == "confirm":
            dialog.accept()
        else:
            dialog.dismiss()

    def on_console(message: ConsoleMessage) -> None:
        seen.console.append(f"{message.type}: {message.text}")

    page.on("dialog", on_dialog)
    page.on("console", on_console)
    page.on("pageerror", lambda error: seen.errors.append(str(error)))
    try:
        if token:
            sign_in(page, base_url, token)
        yield seen
        # The dashboard's own script never throws, and nothing of its own breaks its policy.
        refused = [line for line in seen.console if "Content Security Policy" in line]
        assert not seen.errors and not refused, (seen.errors, refused)
    finally:
        context.close()


def sign_in(page: Page, base_url: str, token: str) -> None:
    page.goto(base_url + "/login")
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url(base_url + "/")
