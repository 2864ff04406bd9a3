"""Unit-testing the web page's ES modules in Chromium, without the vpdesk server.

    async with serve_web_root() as base_url:
        page = await open_blank(browser, base_url)
        result = await import_and_run(page, "ptt.js", "{PttController, Mode}", "return 1;")

`serve_web_root()` is a throwaway aiohttp server on 127.0.0.1 (a free port): `/web/...` is
server/web/ (so a module is `/web/js/NAME.js`, as the real page loads it) and `/blank.html`
an empty page to import modules from. Modules need a JavaScript content type, or Chromium
refuses to run them; this server sets it itself rather than trusting the platform's table.

Everything here is called from the test's asyncio loop.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web
from playwright.async_api import Browser, Page

from tests.web.browser import new_page, serve_on_loopback

logger = logging.getLogger(__name__)

WEB_ROOT = Path(__file__).resolve().parents[2] / "server" / "web"
BLANK_PAGE = (
    "<!doctype html><html><head><meta charset='utf-8'><title>js modules</title>"
    # An icon of its own, so Chromium does not ask for /favicon.ico.
    "<link rel='icon' href='data:,'></head><body></body></html>"
)
# JavaScript for a scenario body: localStorage's surface, in memory (tabs of one origin
# share one), and the page's record key.
FAKE_STORAGE_JS = """
  const KEY = "vpdesk.web.v1";
  class FakeStorage {
    constructor(items = {}) { this.items = new Map(Object.entries(items)); }
    getItem(key) { return this.items.has(key) ? this.items.get(key) : null; }
    setItem(key, value) { this.items.set(key, String(value)); }
  }
"""
_CONTENT_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".html": "text/html",
    ".svg": "image/svg+xml",
}


@asynccontextmanager
async def serve_web_root(root: Path = WEB_ROOT) -> AsyncIterator[str]:
    """Serve `root` under /web/ and a blank page at /blank.html; yields the base URL."""
    root = root.resolve()

    async def blank(request: web.Request) -> web.Response:
        return web.Response(text=BLANK_PAGE, content_type="text/html")

    async def static(request: web.Request) -> web.Response:
        path = (root / request.match_info["path"]).resolve()
        # Only files inside root: a "../" in the URL must not reach the rest of the disk.
        if not path.is_relative_to(root) or not path.is_file():
            raise web.HTTPNotFound()
        content_type = _CONTENT_TYPES.get(path.suffix, "application/octet-stream")
        return web.Response(body=path.read_bytes(), content_type=content_type)

    app = web.Application()
    app.router.add_get("/blank.html", blank)
    app.router.add_get("/web/{path:.+}", static)
    async with serve_on_loopback(app) as base_url:
        logger.info("serving %s at %s", root, base_url)
        yield base_url


async def open_blank(browser: Browser, base_url: str) -> Page:
    """A new page (tests.web.browser.new_page, errors recorded) showing /blank.html."""
    page = await new_page(browser, base_url=base_url)
    await page.goto("/blank.html")
    return page


async def import_and_run(page: Page, module: str, names: str, body: str, arg: Any = None) -> Any:
    """Import `names` (a destructuring pattern, e.g. "{Store}") from /web/js/`module` and run
    `body` (the inside of an async function taking `arg`); its return value, as JSON."""
    script = (
        "async (arg) => {\n"
        f"  const {names} = await import('/web/js/{module}');\n"
        f"{body}\n"
        "}"
    )
    return await page.evaluate(script, arg)
