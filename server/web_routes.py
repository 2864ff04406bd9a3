"""Serving the field users' web page (`/`, `/web/...`) and the shipped tones (`/tones/...`).

The page is static files in one folder; the tones are the same WAVs the console plays.
Both folders are configuration (ServerConfig.web_dir / tones_dir); `default_web_dir()` and
`default_tones_dir()` are the shipped ones, wherever server.shipped finds them (a checkout,
an installed wheel or a PyInstaller bundle).

Request handlers run on the server's asyncio loop; the default_* functions are pure and may
be called from any thread.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path, PurePosixPath

from aiohttp import web

from . import shipped

logger = logging.getLogger(__name__)

INDEX_FALLBACK_TEXT = "vpdesk server (no web page installed)"

# The page loads only its own files, talks only to its own origin (WebSocket included),
# plays tones and received audio from its own origin or blob: URLs, and cannot be framed.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; connect-src 'self' ws: wss:; media-src 'self' blob:; "
    "img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'self'"
)
_PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# Browsers revalidate (ETag / Last-Modified) on every load: an upgraded server's page is
# picked up at once, an unchanged one costs a 304.
_STATIC_CACHE = "no-cache"
_TONE_CACHE = "public, max-age=3600"

# Our own table, not the platform's mimetypes: ES modules refuse any type but a JavaScript
# one, and Windows registries have been known to map .js to text/plain.
CONTENT_TYPES: dict[str, str] = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".wav": "audio/wav",
    ".txt": "text/plain; charset=utf-8",
}
_FALLBACK_CONTENT_TYPE = "application/octet-stream"

TONE_NAME = re.compile(r"^[a-z_]{1,40}\.wav$")


def default_web_dir() -> Path:
    """Where the page is when the configuration does not say: the shipped one."""
    return shipped.web_dir()


def default_tones_dir() -> Path:
    """Where the tones are when the configuration does not say: the shipped ones."""
    return shipped.tones_dir()


def _not_found(message: str) -> web.Response:
    # Same body shape as server.app.error_json (not imported: app imports this module).
    return web.json_response({"error": {"code": "not_found", "message": message}}, status=404)


def _safe_file(root: Path, relative: str) -> Path | None:
    """`relative` (a decoded URL path) as a regular file inside `root`, or None.

    Refuses empty, '.', '..' and hidden segments, backslashes and NULs before touching the
    file system, then checks the resolved path (symlinks followed) is still under `root`.
    """
    if not relative or "\\" in relative or "\0" in relative:
        return None
    parts = PurePosixPath(relative).parts
    if not parts or any(p in ("", ".", "..", "/") or p.startswith(".") for p in parts):
        return None
    try:
        base = root.resolve()
        candidate = base.joinpath(*parts).resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    if not candidate.is_relative_to(base) or not candidate.is_file():
        return None
    return candidate


def _content_type(path: Path) -> str:
    return CONTENT_TYPES.get(path.suffix.lower(), _FALLBACK_CONTENT_TYPE)


def _available_tones(tones_dir: Path | None) -> dict[str, Path]:
    """Tone name (file stem) → file, for every well-named WAV in `tones_dir`."""
    if tones_dir is None or not tones_dir.is_dir():
        return {}
    found: dict[str, Path] = {}
    for path in tones_dir.iterdir():
        if TONE_NAME.match(path.name) and path.is_file():
            found[path.stem] = path
    return found


class _WebHandlers:
    """The handlers, bound to the two folders. Called on the server's loop."""

    def __init__(self, web_dir: Path | None, tones_dir: Path | None) -> None:
        self.web_dir = web_dir
        self.tones_dir = tones_dir

    async def index(self, request: web.Request) -> web.StreamResponse:
        page = self.web_dir / "index.html" if self.web_dir is not None else None
        if page is None or not page.is_file():
            return web.Response(text=INDEX_FALLBACK_TEXT, content_type="text/plain",
                                headers={"Cache-Control": _STATIC_CACHE})
        headers = dict(_PAGE_HEADERS)
        headers["Content-Type"] = CONTENT_TYPES[".html"]
        return web.FileResponse(page, headers=headers)

    async def static(self, request: web.Request) -> web.StreamResponse:
        relative = request.match_info["path"]
        path = _safe_file(self.web_dir, relative) if self.web_dir is not None else None
        if path is None:
            return _not_found(f"no file {relative[:200]!r} in the web page")
        return web.FileResponse(path, headers={
            "Content-Type": _content_type(path),
            "Cache-Control": _STATIC_CACHE,
            "X-Content-Type-Options": "nosniff",
        })

    async def tone(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if not TONE_NAME.match(name):
            return _not_found("no such tone")
        path = _available_tones(self.tones_dir).get(name[: -len(".wav")])
        if path is None:
            return _not_found(f"no tone {name[:-4]!r}")
        return web.FileResponse(path, headers={
            "Content-Type": CONTENT_TYPES[".wav"],
            "Cache-Control": _TONE_CACHE,
            "X-Content-Type-Options": "nosniff",
        })

    async def tone_list(self, request: web.Request) -> web.Response:
        return web.json_response({"tones": sorted(_available_tones(self.tones_dir))})


def add_web_routes(app: web.Application, web_dir: Path | None, tones_dir: Path | None) -> None:
    """Register GET (and HEAD) `/`, `/web/{path}`, `/tones/{name}` and `/api/tones`.

    Either folder may be None or missing: `/` then answers a plain-text line and the rest
    404, so a server without the page still runs. Files are looked up per request, so a
    page installed after start is served. Call before the app starts.
    """
    handlers = _WebHandlers(web_dir, tones_dir)
    if web_dir is None or not (web_dir / "index.html").is_file():
        logger.info("web: no page in %s; / answers plain text", web_dir)
    app.router.add_get("/", handlers.index)
    app.router.add_get("/web/{path:.*}", handlers.static)
    app.router.add_get("/tones/{name}", handlers.tone)
    app.router.add_get("/api/tones", handlers.tone_list)
