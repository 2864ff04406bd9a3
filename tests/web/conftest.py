"""Fixtures for browser tests: Playwright, Debian's Chromium, a running site, speech.

- `playwright`: Playwright's async API, started and stopped per test.
- `launch`: `await launch(Microphone.DENIED, fake_audio=None, extra=())` → a Browser,
  closed after the test; pages made on it with tests.web.browser.new_page are checked for
  browser errors at teardown.
- `chromium`: one `launch()` with the fake microphone (a beep).
- `site`: tests.server.harness.start_site with users u0..u2 (u0 dispatch), stopped after.
- `site_with`: `await site_with(token_ttl_s=8, ...)` → the same site with these
  ServerConfig fields, stopped after.
- `page`: a blank page on a throwaway server of server/web/ (modules at /web/js/), for
  the unit tests of the page's modules (tests.web.js_harness.import_and_run).
- `speech_wav`: a ≥ 12 s speech WAV (module scope) for `launch(fake_audio=...)`: the fake
  device loops its file, so it is longer than any one test's talking.

A test fails when a page still has entries in `page.errors` at teardown: uncaught errors
and console.error messages are bugs unless the test expected them (it then clears the
list after checking it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, Playwright, async_playwright

from tests.audio_tools import speech_wav as make_speech_wav
from tests.server.harness import Site, start_site
from tests.web.browser import Microphone, launch_chromium, unexpected_errors
from tests.web.js_harness import open_blank, serve_web_root

SPEECH_TEXT = (
    "Unit four to dispatch. We are on scene at the north gate, two vehicles, no injuries. "
    "Requesting one tow truck and traffic control. Over."
)
SPEECH_SECONDS_MIN = 12.0

Launcher = Callable[..., Awaitable[Browser]]


@pytest.fixture
async def playwright() -> AsyncIterator[Playwright]:
    driver = await async_playwright().start()
    try:
        yield driver
    finally:
        await driver.stop()


@pytest.fixture
async def launch(playwright: Playwright) -> AsyncIterator[Launcher]:
    browsers: list[Browser] = []

    async def launcher(
        microphone: Microphone = Microphone.FAKE,
        fake_audio: Path | None = None,
        extra: Sequence[str] = (),
    ) -> Browser:
        browser = await launch_chromium(playwright, microphone, fake_audio, extra)
        browsers.append(browser)
        return browser

    yield launcher
    errors = [error for browser in browsers for error in unexpected_errors(browser)]
    for browser in browsers:
        await browser.close()
    if errors:
        pytest.fail("unexpected browser errors:\n  " + "\n  ".join(errors), pytrace=False)


@pytest.fixture
async def chromium(launch: Launcher) -> Browser:
    return await launch(Microphone.FAKE)


@pytest.fixture
async def page(chromium: Browser) -> AsyncIterator[Page]:
    async with serve_web_root() as base_url:
        yield await open_blank(chromium, base_url)


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    running = await start_site(tmp_path / "site", users=3)
    try:
        yield running
    finally:
        await running.server.stop()


@pytest.fixture
async def site_with(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Site]]]:
    sites: list[Site] = []

    async def start(**config: object) -> Site:
        running = await start_site(tmp_path / f"site{len(sites)}", users=3, **config)
        sites.append(running)
        return running

    yield start
    for running in sites:
        await running.server.stop()


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_speech_wav(tmp_path_factory.mktemp("speech"), SPEECH_TEXT, SPEECH_SECONDS_MIN)
