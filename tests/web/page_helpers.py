"""Driving the real field-user page (server/web/) in Chromium as a user would.

Sign-in through the form, presses on the PTT button, clicks on the channel rows; the
page's state is read from what it shows (data-state, aria-pressed, text) and, for media,
from its RTCPeerConnection's getStats through `window.vpdeskDebug`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from playwright.async_api import Page

from tests.server.harness import PASSWORD
from tests.web.browser import rtc_inbound


async def sign_in(page: Page, url: str, user: str, password: str = PASSWORD) -> None:
    """Open the page, sign in through the form, wait until its channels are joined."""
    await page.goto(url)
    await page.fill("#username", user)
    await page.fill("#password", password)
    await page.click("#login-button")
    await wait_online(page)


async def wait_online(page: Page, timeout_ms: float = 15000) -> None:
    await page.wait_for_selector('#connection[data-state="online"]', timeout=timeout_ms)
    # Joins follow the connection: wait until every listened channel has its slot.
    await page.wait_for_function(
        "() => { const a = window.vpdeskDebug.app;"
        " return [...a.board.listen].every((id) => a.board.mids.has(id)); }",
        timeout=timeout_ms,
    )


def row(page: Page, channel_name: str):
    return page.locator(".channel", has_text=channel_name)


async def channel_mids(page: Page) -> dict[int, str]:
    """channel id → mid of the page's receive slot for it."""
    pairs = await page.evaluate("() => [...window.vpdeskDebug.app.board.mids]")
    return {int(channel): mid for channel, mid in pairs}


async def inbound_for(page: Page, channel: int) -> dict:
    """The inbound-rtp stats of the slot the page has for `channel` ({} before any packet)."""
    mid = (await channel_mids(page)).get(channel)
    for entry in await rtc_inbound(page):
        if entry["mid"] == mid:
            return entry
    return {}


async def packets(page: Page, channel: int) -> int:
    return int((await inbound_for(page, channel)).get("packetsReceived") or 0)


async def tones_played(page: Page) -> list[str]:
    return await page.evaluate("() => window.vpdeskDebug.tonesPlayed()")


async def ptt_state(page: Page) -> str:
    return await page.get_attribute("#ptt-button", "data-state")


async def press_ptt(page: Page) -> None:
    """Mouse down on the big button (and keep holding)."""
    box = await page.locator("#ptt-button").bounding_box()
    await page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    await page.mouse.down()


async def release_ptt(page: Page) -> None:
    await page.mouse.up()


async def until(predicate: Callable[[], Awaitable[bool]], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll an async predicate every 100 ms until it holds; fail after `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def sessions_of(site, user: str) -> list:
    """The server's live sessions of `user` on a tests.server.harness Site."""
    return [s for s in site.hub.sessions.values() if s.user.name == user]


async def stored(page: Page, key: str):
    """A value of the page's localStorage record (store.js), as the page holds it."""
    return await page.evaluate("(key) => window.vpdeskDebug.app.store.get(key)", key)


def requests_to(page: Page, path: str) -> list[str]:
    """A list that fills with the method of every request the page makes to `path`."""
    seen: list[str] = []
    page.on("request", lambda request: request.url.endswith(path) and seen.append(request.method))
    return seen


@dataclass
class SocketLog:
    """What the page's WebSockets did: when each opened and closed (loop time), the token
    of every hello sent, every refused reply received."""

    opened: list[float] = field(default_factory=list)
    closed: list[float] = field(default_factory=list)
    hellos: list[str | None] = field(default_factory=list)
    refusals: list[dict] = field(default_factory=list)


def watch_sockets(page: Page) -> SocketLog:
    log = SocketLog()
    loop = asyncio.get_running_loop()

    def frame(payload) -> dict:
        try:
            message = json.loads(payload)
        except (TypeError, ValueError):
            return {}
        return message if isinstance(message, dict) else {}

    def on_sent(payload) -> None:
        message = frame(payload)
        if message.get("type") == "hello":
            log.hellos.append(message.get("token"))

    def on_received(payload) -> None:
        message = frame(payload)
        if message.get("ok") is False:
            log.refusals.append(message)

    def on_socket(ws) -> None:
        log.opened.append(loop.time())
        ws.on("framesent", on_sent)
        ws.on("framereceived", on_received)
        ws.on("close", lambda _: log.closed.append(loop.time()))

    page.on("websocket", on_socket)
    return log
