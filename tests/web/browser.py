"""Debian's Chromium, headless, driven by Playwright (async API), for tests of the web page.

    browser = await launch_chromium(playwright, Microphone.FAKE, fake_audio=wav)
    page = await new_page(browser, base_url=site.url)
    await page.goto("/")
    ...
    assert page.errors == []          # what the page threw or logged as an error

The microphone is one of three set-ups (see `Microphone`); each was checked on Chromium
156 with Playwright 1.65:
- FAKE: `--use-fake-device-for-media-stream` (a device that plays `fake_audio`, looped, or a
  beep) and `--use-fake-ui-for-media-stream` (the permission prompt accepts by itself).
- DENIED: the fake device, and `--use-fake-ui-for-media-stream=deny`: the prompt refuses
  by itself, even when the Playwright context grants "microphone". getUserMedia rejects
  with NotAllowedError.
- ABSENT: no fake device, the accepting fake UI, and the browser's environment hides every
  real audio stack (PULSE_SERVER names a socket nobody listens on, ALSA_CONFIG_PATH is
  empty): no input device at all, getUserMedia rejects with NotFoundError. (Without the
  environment, a PulseAudio daemon the tests started, or a sound card, could offer one.)

Insecure origin: every browser launched here resolves INSECURE_HOST to 127.0.0.1, so
`insecure_origin(url)` is the same server on an origin that is not a secure context
(`window.isSecureContext` false, no `navigator.mediaDevices`), as a phone on
http://192.168.x.y would see it. 127.0.0.1 itself is a secure context.

Browser errors: `new_page` records on `page.errors` (a plain list of str attached to the
Playwright Page) every uncaught exception (`pageerror`) and every console message of type
"error" (failed loads included), except the 404 of Chromium's own /favicon.ico guess.
The fixtures in tests/web/conftest.py fail a test whose pages end with errors
left in that list: a test that expects an error checks it and clears the list.

Everything here is called from the test's asyncio loop.
"""

from __future__ import annotations

import enum
from contextlib import asynccontextmanager
import logging
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from aiohttp import web
from playwright.async_api import Browser, Page, Playwright

logger = logging.getLogger(__name__)

CHROMIUM = Path("/usr/bin/chromium")
# A name only our browsers resolve (to 127.0.0.1): a non-secure origin for the same server.
INSECURE_HOST = "field.vpdesk.test"

# Headless in a container, no traffic of its own (the tests run in a loopback-only network
# namespace, where any lookup would just stall).
_HEADLESS_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
_MEDIA_ARGS = (
    # Without it Chromium gathers no ICE candidate on 127.0.0.1, the only address here.
    "--allow-loopback-in-peer-connection",
    # Tones and received audio play without a click first.
    "--autoplay-policy=no-user-gesture-required",
    f"--host-resolver-rules=MAP {INSECURE_HOST} 127.0.0.1",
)
_FAKE_DEVICE = "--use-fake-device-for-media-stream"
_ACCEPT_PROMPT = "--use-fake-ui-for-media-stream"
_DENY_PROMPT = "--use-fake-ui-for-media-stream=deny"

# Per browser: the pages new_page made on it, for the error check at teardown.
_PAGES_ATTR = "vpdesk_pages"


class Microphone(enum.Enum):
    """What getUserMedia({audio: true}) finds."""

    FAKE = "fake"  # a live fake device, permission granted
    DENIED = "denied"  # a device exists, the permission is refused: NotAllowedError
    ABSENT = "absent"  # no device at all: NotFoundError


def chromium_args(
    microphone: Microphone = Microphone.FAKE,
    fake_audio: Path | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """Command-line switches for a headless test browser with this microphone.

    `fake_audio` (FAKE and DENIED only): a WAV the fake device plays, looping with a small
    shift each time round; append "%noloop" to the path for once only. None: a beep.
    """
    args = [*_HEADLESS_ARGS, *_MEDIA_ARGS]
    if microphone is Microphone.FAKE:
        args += [_FAKE_DEVICE, _ACCEPT_PROMPT]
    elif microphone is Microphone.DENIED:
        args += [_FAKE_DEVICE, _DENY_PROMPT]
    else:
        args += [_ACCEPT_PROMPT]
    if fake_audio is not None:
        if microphone is Microphone.ABSENT:
            raise ValueError("an absent microphone plays no fake audio")
        args.append(f"--use-file-for-fake-audio-capture={Path(fake_audio).resolve()}")
    args += list(extra)
    return args


def chromium_env(
    microphone: Microphone, base: dict[str, str] | None = None
) -> dict[str, str] | None:
    """The browser's environment: None (inherit ours) except for ABSENT, where PulseAudio
    and ALSA are pointed at nothing so that no real input device can appear."""
    if microphone is not Microphone.ABSENT:
        return None
    env = dict(os.environ if base is None else base)
    env["PULSE_SERVER"] = "unix:/nonexistent/vpdesk-tests/pulse"
    env["ALSA_CONFIG_PATH"] = os.devnull
    env.pop("PULSE_SOURCE", None)
    return env


async def launch_chromium(
    playwright: Playwright,
    microphone: Microphone = Microphone.FAKE,
    fake_audio: Path | None = None,
    extra: Sequence[str] = (),
) -> Browser:
    """Debian's Chromium, headless, with this microphone. Never a downloaded browser."""
    if not CHROMIUM.exists():
        raise FileNotFoundError(f"{CHROMIUM} is missing (Debian package: chromium)")
    options: dict = {}
    env = chromium_env(microphone)
    if env is not None:
        options["env"] = env
    browser = await playwright.chromium.launch(
        executable_path=str(CHROMIUM),
        headless=True,
        args=chromium_args(microphone, fake_audio, extra),
        **options,
    )
    setattr(browser, _PAGES_ATTR, [])
    logger.info("launched %s %s (microphone %s)", CHROMIUM, browser.version, microphone.value)
    return browser


def insecure_origin(url: str) -> str:
    """`url` with its host replaced by INSECURE_HOST (port, path and query kept): the same
    server on an origin that is not a secure context. Only in browsers from launch_chromium."""
    return _with_host(url, INSECURE_HOST)


def _with_host(url: str, host: str) -> str:
    parts = urlsplit(url)
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _record_errors(page: Page) -> list[str]:
    errors: list[str] = []

    def on_page_error(error) -> None:
        errors.append(f"pageerror: {error}")

    def on_console(message) -> None:
        if message.type != "error":
            return
        url = (message.location or {}).get("url", "")
        # Chromium asks for /favicon.ico by itself when a page declares no icon; its 404
        # is the browser's guess failing, not the page's bug.
        if urlsplit(url).path == "/favicon.ico":
            return
        where = f" ({url}:{(message.location or {}).get('lineNumber', '')})" if url else ""
        errors.append(f"console.error: {message.text}{where}")

    page.on("pageerror", on_page_error)
    page.on("console", on_console)
    return errors


async def new_page(
    browser: Browser,
    *,
    viewport: tuple[int, int] = (1280, 800),
    base_url: str | None = None,
    host_alias: str | None = None,
) -> Page:
    """A page in a new context, with `page.errors: list[str]` recording what went wrong.

    `base_url` lets `page.goto("/")` and relative URLs work. `host_alias` (e.g.
    INSECURE_HOST) replaces the host of `base_url`, to load the same server from another
    origin; the browser must resolve that name (launch_chromium maps INSECURE_HOST).
    """
    if host_alias is not None:
        if base_url is None:
            raise ValueError("host_alias needs a base_url to rewrite")
        base_url = _with_host(base_url, host_alias)
    options: dict = {"viewport": {"width": viewport[0], "height": viewport[1]}}
    if base_url is not None:
        options["base_url"] = base_url
    context = await browser.new_context(**options)
    page = await context.new_page()
    page.errors = _record_errors(page)  # type: ignore[attr-defined]
    pages = getattr(browser, _PAGES_ATTR, None)
    if pages is None:
        pages = []
        setattr(browser, _PAGES_ATTR, pages)
    pages.append(page)
    return page


def unexpected_errors(browser: Browser) -> list[str]:
    """Errors still recorded on the pages new_page made on `browser` (closed ones too)."""
    found: list[str] = []
    for index, page in enumerate(getattr(browser, _PAGES_ATTR, [])):
        found += [f"page {index} ({_url_of(page)}): {error}" for error in page.errors]
    return found


def _url_of(page: Page) -> str:
    try:
        return page.url
    except Exception:  # noqa: BLE001 - a closed page may not say
        return "?"


_INBOUND_JS = """
async () => {
  const debug = window.vpdeskDebug;
  const found = debug ? debug.pc : null;
  if (!found) return [];
  const pcs = Array.isArray(found) ? found : [found];
  const out = [];
  for (const pc of pcs) {
    if (!pc || pc.connectionState === 'closed') continue;
    const report = await pc.getStats();
    report.forEach((s) => {
      if (s.type !== 'inbound-rtp') return;
      out.push({
        mid: s.mid ?? null,
        kind: s.kind ?? null,
        packetsReceived: s.packetsReceived ?? 0,
        bytesReceived: s.bytesReceived ?? 0,
        audioLevel: s.audioLevel ?? null,
        totalAudioEnergy: s.totalAudioEnergy ?? null,
      });
    });
  }
  return out;
}
"""


async def rtc_inbound(page: Page) -> list[dict]:
    """The inbound-rtp stats of the page's peer connection (`window.vpdeskDebug.pc`, or a
    list of them): one dict per received stream with mid, kind, packetsReceived,
    bytesReceived, audioLevel and totalAudioEnergy (None where Chromium has no value yet).
    [] when the page exposes no peer connection."""
    return await page.evaluate(_INBOUND_JS)


@asynccontextmanager
async def serve_on_loopback(app: web.Application) -> AsyncIterator[str]:
    """Serve a throwaway aiohttp app on 127.0.0.1 (a free port); yields its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
