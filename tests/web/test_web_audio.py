"""Audio through the real page: Chromium's fake microphone to an aiortc listener, an
aiortc talker to the page (read off the page's getStats), and mute stopping packets."""

from __future__ import annotations

import asyncio

import numpy as np

from tests.audio_tools import RATE, TrackRecorder, WavTrack, aligned_correlation, read_wav, voiced_extent
from tests.server.harness import PttClient, close_all
from tests.web.browser import Microphone, new_page
from tests.web.page_helpers import (
    inbound_for,
    packets,
    press_ptt,
    release_ptt,
    row,
    sign_in,
    tones_played,
    until,
)


async def test_the_browser_microphone_reaches_an_aiortc_listener(site, launch, speech_wav):
    alpha = site.channels["alpha"]
    listener = await PttClient.connect(site.url, "u2", slots=2)
    try:
        await listener.join(alpha)
        recorder = TrackRecorder(listener.track(alpha)).start()
        browser = await launch(Microphone.FAKE, fake_audio=speech_wav)
        page = await new_page(browser)
        await sign_in(page, site.url, "u1")
        await row(page, "alpha").locator(".channel-select").click()
        # A headset user's clean waveform: the browser's voice processing off.
        await page.uncheck("#voice-processing")
        await page.wait_for_function(
            "() => { const m = window.vpdeskDebug.app.microphone;"
            " return m && m.readyState === 'live' && m.getSettings().noiseSuppression === false; }"
        )
        recorder.clear()

        await press_ptt(page)
        await page.wait_for_selector('#ptt-button[data-state="transmitting"]')
        await recorder.wait_voiced(timeout=10)
        await asyncio.sleep(4.0)  # four seconds of speech on the air
        await release_ptt(page)
        await page.wait_for_selector('#ptt-button[data-state="idle"]')
        await asyncio.sleep(0.3)
        recorded = await recorder.stop()
    finally:
        await close_all(listener)

    assert await tones_played(page) == ["talk_permit", "end_of_tx"]
    start, end = voiced_extent(recorded)
    assert (end - start) / RATE >= 3.0, "less than 3 s of the browser's speech arrived"
    # The fake device loops its file from an unknown point: look for what arrived in two
    # copies of the file, anywhere.
    reference = read_wav(speech_wav)
    looped = np.concatenate([reference, reference])
    score, _ = aligned_correlation(recorded[start:end], looped, max_lag_s=len(looped) / RATE)
    assert score >= 0.8, f"received audio correlates {score:.3f} with the browser's microphone file"


async def test_a_scripted_talker_is_heard_in_the_browser(site, chromium, speech_wav):
    alpha, bravo = site.channels["alpha"], site.channels["bravo"]
    talker = await PttClient.connect(site.url, "u2", slots=1, microphone=WavTrack(speech_wav, loop=True))
    try:
        page = await new_page(chromium)
        await sign_in(page, site.url, "u1")
        assert await packets(page, alpha) == 0, "audio before anyone talked"

        assert (await talker.talk(alpha))["granted"]
        await row(page, "alpha").locator(".channel-speaking", has_text="u2 is speaking").wait_for()
        levels: list[float] = []

        async def loud_and_flowing() -> bool:
            stats = await inbound_for(page, alpha)
            levels.append(float(stats.get("audioLevel") or 0.0))
            return (stats.get("packetsReceived") or 0) >= 100 and max(levels) > 0.02

        await until(loud_and_flowing, timeout=15, what="the talker's audio in the browser")
        energy_before = (await inbound_for(page, alpha))["totalAudioEnergy"]
        await asyncio.sleep(1.0)
        assert (await inbound_for(page, alpha))["totalAudioEnergy"] > energy_before
        assert await packets(page, bravo) == 0, "audio on a channel nobody talks on"

        await talker.release(alpha)
        await row(page, "alpha").locator(".channel-speaking").filter(has_text="is speaking").wait_for(state="detached")
    finally:
        await close_all(talker)


async def test_mute_in_the_page_stops_the_packets(site, chromium, speech_wav):
    alpha = site.channels["alpha"]
    talker = await PttClient.connect(site.url, "u2", slots=1, microphone=WavTrack(speech_wav, loop=True))
    try:
        page = await new_page(chromium)
        await sign_in(page, site.url, "u1")
        assert (await talker.talk(alpha))["granted"]
        await until(lambda: _more_than(page, alpha, 50), what="audio before muting")

        mute = row(page, "alpha").locator(".channel-mute")
        await mute.click()
        assert await mute.get_attribute("aria-pressed") == "true"
        sessions = [s for s in site.hub.sessions.values() if s.user.name == "u1"]
        assert len(sessions) == 1
        session = sessions[0]
        await until(lambda: _true(alpha in session.muted), what="the server to take the mute")
        await asyncio.sleep(0.5)  # packets already on the wire
        muted_at = await packets(page, alpha)
        await asyncio.sleep(1.5)
        assert await packets(page, alpha) == muted_at, "packets kept coming to a muted channel"

        await mute.click()
        assert await mute.get_attribute("aria-pressed") == "false"
        await until(lambda: _more_than(page, alpha, muted_at + 25), what="audio after unmuting")
    finally:
        await close_all(talker)


async def _more_than(page, channel: int, count: int) -> bool:
    return await packets(page, channel) > count


async def _true(value: bool) -> bool:
    return value
