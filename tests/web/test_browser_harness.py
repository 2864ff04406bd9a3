"""The browser harness itself, on a tiny page from a throwaway server (not vpdesk's page):
each microphone set-up, secure and insecure origins, error recording, WebRTC on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from tests.web.browser import (
    INSECURE_HOST,
    Microphone,
    chromium_args,
    insecure_origin,
    new_page,
    rtc_inbound,
    serve_on_loopback,
    unexpected_errors,
)

TINY_PAGE = "<!doctype html><html><head><title>harness</title></head><body><p>ok</p></body></html>"
POLLS = 100  # bounded waits: at most POLLS × POLL_S
POLL_S = 0.1

GET_USER_MEDIA = """
async () => {
  try {
    const stream = await navigator.mediaDevices.getUserMedia({audio: true});
    const tracks = stream.getAudioTracks();
    const result = {ok: true, count: tracks.length, state: tracks[0].readyState,
                    kind: tracks[0].kind, enabled: tracks[0].enabled};
    stream.getTracks().forEach((t) => t.stop());
    return result;
  } catch (error) {
    return {ok: false, name: error.name, message: error.message};
  }
}
"""
AUDIO_INPUTS = """async () => (await navigator.mediaDevices.enumerateDevices())
  .filter((d) => d.kind === 'audioinput').length"""

# Measures the microphone's level through Web Audio: window.micRms() → RMS of the last
# 2048 samples (float, 0..1).
START_LEVEL_METER = """
async () => {
  const stream = await navigator.mediaDevices.getUserMedia({audio: true});
  const context = new AudioContext();
  await context.resume();
  const analyser = context.createAnalyser();
  analyser.fftSize = 2048;
  context.createMediaStreamSource(stream).connect(analyser);
  const buffer = new Float32Array(analyser.fftSize);
  window.micRms = () => {
    analyser.getFloatTimeDomainData(buffer);
    let sum = 0;
    for (const x of buffer) sum += x * x;
    return Math.sqrt(sum / buffer.length);
  };
}
"""

# Two peer connections in one page, the fake microphone sent from one to the other over
# loopback ICE; the receiving one is exposed where the vpdesk page puts its own.
LOOPBACK_CALL = """
async () => {
  const stream = await navigator.mediaDevices.getUserMedia({audio: true});
  const sender = new RTCPeerConnection();
  const receiver = new RTCPeerConnection();
  const forward = (to) => (e) => { if (e.candidate) to.addIceCandidate(e.candidate).catch(() => {}); };
  sender.onicecandidate = forward(receiver);
  receiver.onicecandidate = forward(sender);
  receiver.ontrack = (e) => {
    const audio = new Audio();
    audio.srcObject = new MediaStream([e.track]);
    audio.play().catch((err) => console.warn('play: ' + err));
  };
  for (const track of stream.getTracks()) sender.addTrack(track, stream);
  await sender.setLocalDescription();
  await receiver.setRemoteDescription(sender.localDescription);
  await receiver.setLocalDescription();
  await sender.setRemoteDescription(receiver.localDescription);
  window.vpdeskDebug = {pc: receiver, sender};
}
"""


@pytest.fixture
async def tiny_url() -> AsyncIterator[str]:
    """http://127.0.0.1:PORT of a throwaway server whose `/` is TINY_PAGE."""

    async def index(request: web.Request) -> web.Response:
        return web.Response(text=TINY_PAGE, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", index)
    async with serve_on_loopback(app) as base_url:
        yield base_url


async def poll(check, what: str):
    """`await check()` until it returns something truthy (bounded); that value."""
    for _ in range(POLLS):
        value = await check()
        if value:
            return value
        await asyncio.sleep(POLL_S)
    raise AssertionError(f"{what}: not after {POLLS} polls")


def test_args_per_microphone(tmp_path):
    wav = tmp_path / "x.wav"
    fake = chromium_args(Microphone.FAKE, wav)
    assert "--use-fake-device-for-media-stream" in fake
    assert "--use-fake-ui-for-media-stream" in fake
    assert f"--use-file-for-fake-audio-capture={wav.resolve()}" in fake
    assert "--allow-loopback-in-peer-connection" in fake
    denied = chromium_args(Microphone.DENIED)
    assert "--use-fake-ui-for-media-stream=deny" in denied
    assert "--use-fake-ui-for-media-stream" not in denied
    absent = chromium_args(Microphone.ABSENT, extra=["--lang=en"])
    assert "--use-fake-device-for-media-stream" not in absent
    assert absent[-1] == "--lang=en"
    with pytest.raises(ValueError):
        chromium_args(Microphone.ABSENT, wav)


async def test_fake_microphone_gives_a_live_audio_track(chromium, tiny_url):
    page = await new_page(chromium, base_url=tiny_url)
    await page.goto("/")
    result = await page.evaluate(GET_USER_MEDIA)
    assert result == {"ok": True, "count": 1, "state": "live", "kind": "audio", "enabled": True}


async def test_fake_microphone_plays_the_given_file(launch, tiny_url, speech_wav: Path):
    browser = await launch(Microphone.FAKE, fake_audio=speech_wav)
    page = await new_page(browser, base_url=tiny_url)
    await page.goto("/")
    await page.evaluate(START_LEVEL_METER)
    # Speech has pauses: some window within the bound is loud.
    rms = await poll(lambda: _above(page, 0.01), "speech from the fake microphone")
    assert rms > 0.01


async def _above(page, threshold: float) -> float:
    rms = await page.evaluate("window.micRms()")
    return rms if rms > threshold else 0.0


async def test_denied_microphone_rejects_not_allowed(launch, tiny_url):
    browser = await launch(Microphone.DENIED)
    page = await new_page(browser, base_url=tiny_url)
    await page.goto("/")
    assert await page.evaluate(AUDIO_INPUTS) >= 1  # the device is there; only permission lacks
    result = await page.evaluate(GET_USER_MEDIA)
    assert result["ok"] is False
    assert result["name"] == "NotAllowedError"


async def test_denied_holds_even_when_the_context_grants(launch, tiny_url):
    browser = await launch(Microphone.DENIED)
    page = await new_page(browser, base_url=tiny_url)
    await page.context.grant_permissions(["microphone"])
    await page.goto("/")
    assert (await page.evaluate(GET_USER_MEDIA))["name"] == "NotAllowedError"


async def test_absent_microphone_rejects_not_found(launch, tiny_url):
    browser = await launch(Microphone.ABSENT)
    page = await new_page(browser, base_url=tiny_url)
    await page.goto("/")
    assert await page.evaluate(AUDIO_INPUTS) == 0
    result = await page.evaluate(GET_USER_MEDIA)
    assert result["ok"] is False
    assert result["name"] == "NotFoundError"


async def test_loopback_is_secure_and_the_alias_is_not(chromium, tiny_url):
    secure = await new_page(chromium, base_url=tiny_url)
    await secure.goto("/")
    assert await secure.evaluate("window.isSecureContext") is True
    assert await secure.evaluate("typeof navigator.mediaDevices") == "object"

    aliased = await new_page(chromium, base_url=tiny_url, host_alias=INSECURE_HOST)
    await aliased.goto("/")
    assert aliased.url.startswith(f"http://{INSECURE_HOST}:")
    assert await aliased.text_content("p") == "ok"  # the same server answered
    assert await aliased.evaluate("window.isSecureContext") is False
    assert await aliased.evaluate("typeof navigator.mediaDevices") == "undefined"

    plain = await new_page(chromium)
    await plain.goto(insecure_origin(tiny_url + "/"))
    assert await plain.evaluate("window.isSecureContext") is False


async def test_page_errors_and_console_errors_are_recorded(chromium, tiny_url):
    page = await new_page(chromium, base_url=tiny_url)
    await page.goto("/")
    assert page.errors == []
    await page.evaluate("setTimeout(() => { throw new Error('harness boom'); }, 0)")
    await page.evaluate("console.error('harness complaint')")
    await page.evaluate("console.warn('only a warning')")

    async def both_seen():
        return len(page.errors) >= 2

    await poll(both_seen, "two recorded errors")
    assert any("pageerror" in e and "harness boom" in e for e in page.errors)
    assert any("console.error" in e and "harness complaint" in e for e in page.errors)
    assert not any("only a warning" in e for e in page.errors)
    assert len(unexpected_errors(chromium)) == len(page.errors)
    page.errors.clear()  # expected: the fixture's teardown check must not fail the test
    assert unexpected_errors(chromium) == []


async def test_rtc_inbound_is_empty_without_a_peer_connection(chromium, tiny_url):
    page = await new_page(chromium, base_url=tiny_url)
    await page.goto("/")
    assert await rtc_inbound(page) == []


async def test_loopback_peer_connections_carry_the_fake_microphone(chromium, tiny_url):
    page = await new_page(chromium, base_url=tiny_url)
    await page.goto("/")
    await page.evaluate(LOOPBACK_CALL)
    await page.wait_for_function(
        "window.vpdeskDebug.pc.connectionState === 'connected'", timeout=30_000
    )

    async def receiving():
        stats = await rtc_inbound(page)
        return stats if stats and stats[0]["packetsReceived"] > 0 else None

    stats = await poll(receiving, "inbound RTP packets")
    assert len(stats) == 1
    assert stats[0]["kind"] == "audio"
    assert isinstance(stats[0]["mid"], str)
    assert stats[0]["bytesReceived"] > 0
    await page.evaluate("window.vpdeskDebug.pc.close(); window.vpdeskDebug.sender.close()")
    assert await rtc_inbound(page) == []  # closed connections report nothing


async def test_the_site_fixture_serves_tones_the_browser_decodes(chromium, site):
    page = await new_page(chromium, base_url=site.url)
    await page.goto("/api/health")  # an origin on the site; not its page (written elsewhere)
    names = await page.evaluate("fetch('/api/tones').then((r) => r.json())")
    assert names == {"tones": ["busy", "emergency", "end_of_tx", "incoming", "talk_permit"]}
    decoded = await page.evaluate(
        """async (names) => {
          const context = new OfflineAudioContext(1, 48000, 48000);
          const out = {};
          for (const name of names) {
            const response = await fetch(`/tones/${name}.wav`);
            const audio = await context.decodeAudioData(await response.arrayBuffer());
            out[name] = {type: response.headers.get('content-type'), seconds: audio.duration};
          }
          return out;
        }""",
        names["tones"],
    )
    for name, info in decoded.items():
        assert info["type"] == "audio/wav", name
        assert 0 < info["seconds"] < 10, name
