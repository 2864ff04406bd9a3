"""The web page and the tones over real HTTP: headers, types, and nothing outside the folders."""

from __future__ import annotations

import json
import sys
import wave
from pathlib import Path

import aiohttp
import pytest
import yarl

from server.config import ConfigError, load_config
from server.web_routes import default_tones_dir, default_web_dir
from tests.server.harness import start_site
from vpdesk import paths
from vpdesk.embedded import embedded_config

ROOT = Path(__file__).resolve().parents[2]
TONE_NAMES = ["busy", "emergency", "end_of_tx", "incoming", "talk_permit"]
EXPECTED_CSP = (
    "default-src 'self'; connect-src 'self' ws: wss:; media-src 'self' blob:; "
    "img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'self'"
)
INDEX_HTML = "<!doctype html><title>test page</title><script type=module src=/web/js/x.js></script>"
SECRET = "TOP-SECRET-OUTSIDE-THE-WEB-FOLDER"


def write_tone(path: Path) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x01" * 800)
    return path


@pytest.fixture
def folders(tmp_path):
    """A throwaway page and tone folder, with secrets beside (not inside) each."""
    web_dir = tmp_path / "page"
    (web_dir / "js").mkdir(parents=True)
    (web_dir / "index.html").write_text(INDEX_HTML)
    (web_dir / "js" / "x.js").write_text("export const x = 1;\n")
    (web_dir / "style.css").write_text("body { color: black; }\n")
    (web_dir / "icon.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    (web_dir / "app.webmanifest").write_text("{}")
    (web_dir / ".hidden").write_text(SECRET)
    (tmp_path / "config.py").write_text(SECRET)
    tones_dir = tmp_path / "tones"
    tones_dir.mkdir()
    write_tone(tones_dir / "busy.wav")
    write_tone(tones_dir / "talk_permit.wav")
    write_tone(tones_dir / "Loud.wav")  # not a tone name: neither listed nor served
    (tmp_path / "secret.wav").write_text(SECRET)
    return web_dir, tones_dir


@pytest.fixture
async def site(tmp_path, folders):
    web_dir, tones_dir = folders
    site = await start_site(tmp_path / "site", users=1, web_dir=web_dir, tones_dir=tones_dir)
    yield site
    await site.server.stop()


async def fetch(url: str | yarl.URL) -> tuple[aiohttp.ClientResponse, bytes]:
    async with aiohttp.ClientSession() as http:
        async with http.get(url, allow_redirects=False) as resp:
            return resp, await resp.read()


def raw(site, path: str) -> yarl.URL:
    """The URL exactly as written: the client neither normalises '..' nor re-encodes."""
    return yarl.URL(site.url + path, encoded=True)


async def test_index_has_the_page_and_its_security_headers(site):
    resp, body = await fetch(site.url + "/")
    assert resp.status == 200
    assert body.decode() == INDEX_HTML
    assert resp.content_type == "text/html"
    assert resp.headers["Content-Security-Policy"] == EXPECTED_CSP
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert resp.headers["Cache-Control"] == "no-cache"


@pytest.mark.parametrize(
    "path, content_type, body",
    [
        ("/web/js/x.js", "text/javascript", "export const x = 1;\n"),
        ("/web/style.css", "text/css", "body { color: black; }\n"),
        ("/web/icon.svg", "image/svg+xml", "<svg xmlns='http://www.w3.org/2000/svg'/>"),
        ("/web/app.webmanifest", "application/manifest+json", "{}"),
        ("/web/index.html", "text/html", INDEX_HTML),
    ],
)
async def test_static_files_have_our_types_and_are_revalidated(site, path, content_type, body):
    resp, got = await fetch(site.url + path)
    assert resp.status == 200
    assert resp.content_type == content_type
    assert got.decode() == body
    assert resp.headers["Cache-Control"] == "no-cache"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    "path",
    [
        "/web/../config.py",
        "/web/js/../../config.py",
        "/web/%2e%2e/config.py",
        "/web/..%2fconfig.py",
        "/web/js/..%2F..%2Fconfig.py",
        "/web/..%5cconfig.py",
        "/web/%2fetc%2fpasswd",
        "/web/.hidden",
        "/web/",
        "/web/js",
        "/web/missing.js",
    ],
)
async def test_nothing_outside_the_web_folder_nor_listings(site, path):
    resp, body = await fetch(raw(site, path))
    assert resp.status == 404, path
    assert SECRET.encode() not in body
    assert json.loads(body)["error"]["code"] == "not_found"


async def test_a_tone_is_served_as_wav_and_cached(site, folders):
    resp, body = await fetch(site.url + "/tones/busy.wav")
    assert resp.status == 200
    assert resp.content_type == "audio/wav"
    assert resp.headers["Cache-Control"] == "public, max-age=3600"
    assert body == (folders[1] / "busy.wav").read_bytes()


@pytest.mark.parametrize(
    "path",
    ["/tones/nope.wav", "/tones/Loud.wav", "/tones/busy", "/tones/busy.mp3",
     "/tones/..%2Fsecret.wav", "/tones/%2e%2e%2fsecret.wav", "/tones/" + "a" * 41 + ".wav"],
)
async def test_unknown_or_odd_tone_names_are_404_json(site, path):
    resp, body = await fetch(raw(site, path))
    assert resp.status == 404, path
    assert SECRET.encode() not in body
    # Our handler refused it (the raw path reached the server), not aiohttp's router.
    assert json.loads(body)["error"]["code"] == "not_found"


async def test_tone_list_names_only_well_named_wavs(site):
    async with aiohttp.ClientSession() as http:
        async with http.get(site.url + "/api/tones") as resp:
            assert resp.status == 200
            assert await resp.json() == {"tones": ["busy", "talk_permit"]}


async def test_every_response_says_nosniff(site):
    resp, _ = await fetch(site.url + "/api/health")
    assert resp.status == 200
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Referrer-Policy"] == "no-referrer"


@pytest.mark.parametrize("make_page_dir", [True, False])
async def test_without_a_page_the_index_is_plain_text(tmp_path, make_page_dir):
    empty = tmp_path / "nopage"
    if make_page_dir:
        empty.mkdir()
    site = await start_site(tmp_path / "site", users=1, web_dir=empty, tones_dir=tmp_path / "none")
    try:
        resp, body = await fetch(site.url + "/")
        assert resp.status == 200
        assert resp.content_type == "text/plain"
        assert body == b"vpdesk server (no web page installed)"
        resp, _ = await fetch(site.url + "/web/js/app.js")
        assert resp.status == 404
        resp, _ = await fetch(site.url + "/tones/busy.wav")
        assert resp.status == 404
        async with aiohttp.ClientSession() as http:
            async with http.get(site.url + "/api/tones") as resp:
                assert await resp.json() == {"tones": []}
    finally:
        await site.server.stop()


async def test_default_folders_serve_the_shipped_tones(tmp_path):
    site = await start_site(tmp_path / "site", users=1)
    try:
        shipped = ROOT / "server" / "tones" / "busy.wav"
        resp, body = await fetch(site.url + "/tones/busy.wav")
        assert resp.status == 200
        assert body[:4] == b"RIFF" and body[8:12] == b"WAVE"
        assert body == shipped.read_bytes()
        async with aiohttp.ClientSession() as http:
            async with http.get(site.url + "/api/tones") as resp:
                assert await resp.json() == {"tones": TONE_NAMES}
    finally:
        await site.server.stop()


def test_default_folders_in_a_checkout_and_in_a_bundle(tmp_path, monkeypatch):
    assert default_web_dir() == ROOT / "server" / "web"
    assert default_tones_dir() == ROOT / "server" / "tones"
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    assert default_web_dir() == tmp_path / "server" / "web"
    assert default_tones_dir() == tmp_path / "server" / "tones"


def test_load_config_reads_the_folders_as_paths(tmp_path):
    config_file = tmp_path / "server.toml"
    config_file.write_text('web_dir = "/x"\ntones_dir = "/srv/tones"\n')
    config = load_config(config_file)
    assert config.web_dir == Path("/x")
    assert config.tones_dir == Path("/srv/tones")
    assert load_config(None).web_dir is None and load_config(None).tones_dir is None
    config_file.write_text("web_dir = 3\n")
    with pytest.raises(ConfigError, match="web_dir"):
        load_config(config_file)


def test_embedded_config_serves_the_console_s_own_page_and_tones(tmp_path):
    config = embedded_config(tmp_path, "127.0.0.1:0")
    assert config.web_dir == paths.web_dir()
    assert config.tones_dir == paths.shipped_tones_dir()
    assert (config.tones_dir / "busy.wav").is_file()
