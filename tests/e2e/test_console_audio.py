"""Real audio end to end: a console's microphone and speaker are PulseAudio null sinks.

A private PulseAudio daemon (tests/pulse.py) has two null sinks: `vp_mic`, whose monitor
is the console's microphone (a speech WAV played into it is what the dispatcher "says"),
and `vp_speaker`, the console's speaker, recorded from its monitor. The console is the
real session with the real audio layer (sounddevice → PortAudio → ALSA → PulseAudio);
the other party is a scripted aiortc client on the same embedded server.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tests.audio_tools import TrackRecorder, WavTrack, aligned_correlation, read_wav, speech_wav
from tests.pulse import MIC_SINK, SPEAKER_SINK, pulse  # noqa: F401 - the fixture
from tests.server.harness import PASSWORD, PttClient, close_all, start_site
from tests.vpdesk.session_helpers import RecordingListener, until
from vpdesk.audio.capture import Microphone
from vpdesk.audio.playback import Speaker
from vpdesk.core.ptt import TxState
from vpdesk.session.console import ConsoleSession, Credentials


@pytest.fixture(scope="module")
def wav(tmp_path_factory):
    return speech_wav(tmp_path_factory.mktemp("wav"), "Unit seven, proceed to the east entrance", 2.0)


@pytest.fixture
async def site(tmp_path):
    site = await start_site(tmp_path / "site", users=3)
    yield site
    await site.server.stop()


@pytest.fixture
async def console(site, pulse):  # noqa: F811
    """u1's console with the real microphone (vp_mic's monitor) and speaker (vp_speaker)."""
    loop = asyncio.get_running_loop()
    microphone = Microphone(None, loop)  # the daemon's default source: vp_mic.monitor
    microphone.open()
    speaker = Speaker(SPEAKER_SINK)
    speaker.open()
    session = ConsoleSession(
        Credentials(site.url, "u1", PASSWORD),
        listener=RecordingListener(),
        speaker=speaker,
        microphone=microphone,
    )
    session.start()
    await session.wait_connected()
    await until(lambda: len(session.board.joined_ids()) == 2)
    await session._peer.wait_connected()
    yield session
    await session.stop()
    microphone.close()
    speaker.close()


async def test_a_talker_is_heard_from_the_consoles_speaker_and_a_muted_channel_is_silent(
    site, console, pulse, wav  # noqa: F811
):
    alpha, bravo = site.channels["alpha"], site.channels["bravo"]
    track = WavTrack(wav, autostart=False)
    talker = await PttClient.connect(site.url, "u0", slots=0, microphone=track)
    try:
        # Heard: alpha, unmuted.
        recording = pulse.start_recording()
        assert (await talker.talk(alpha))["granted"]
        track.start()
        await asyncio.wait_for(track.on_done.wait(), 15)
        await asyncio.sleep(0.5)  # the tail still in the buffers
        await talker.release(alpha)
        heard = recording.stop()
        score, lag = aligned_correlation(read_wav(wav).astype(np.float64), heard * 32768.0)
        assert score >= 0.8, f"correlation {score:.3f}"
        assert console.board.get(alpha).activity is not None

        # Muted: bravo. The server sends nothing, the speaker plays nothing.
        console.set_muted(bravo, True)
        await until(lambda: bravo in site.hub.sessions[console.session_id].muted)
        track.pause()
        recording = pulse.start_recording()
        assert (await talker.talk(bravo))["granted"]
        track.start()
        await asyncio.wait_for(track.on_done.wait(), 15)
        await asyncio.sleep(0.5)
        await talker.release(bravo)
        silent = recording.stop()
        assert len(silent) > 48_000 * 2
        assert float(np.sqrt(np.mean(silent**2))) < 1e-3
        assert console.receiver_of(bravo).packets == 0
    finally:
        await close_all(talker)


async def test_the_consoles_microphone_reaches_a_listener(site, console, pulse, wav):  # noqa: F811
    alpha = site.channels["alpha"]
    listener = await PttClient.connect(site.url, "u2", slots=2)
    try:
        await listener.join(alpha)
        recorder = TrackRecorder(listener.track(alpha)).start()
        console.set_target(alpha)
        console.press("keyboard")
        await until(lambda: console.ptt.state is TxState.TRANSMITTING)
        await asyncio.sleep(0.2)  # the dispatcher waits for the talk-permit tone
        player = pulse.play_into_mic(wav)
        await asyncio.to_thread(player.wait, 15)
        await asyncio.sleep(0.5)
        console.release("keyboard")
        await until(lambda: not console.board.get(alpha).floor.taken)
        heard = await recorder.stop()
        score, _ = aligned_correlation(read_wav(wav).astype(np.float64), heard.astype(np.float64))
        assert score >= 0.8, f"correlation {score:.3f}"
    finally:
        await close_all(listener)


async def test_changing_the_output_device_moves_every_channel_to_it(site, pulse, wav):  # noqa: F811
    """Preferences → another speaker: monitored channels play on the new device at once.

    The console starts with no working speaker (as when the saved device is unplugged),
    then the dispatcher picks one."""
    alpha = site.channels["alpha"]
    first = Speaker(SPEAKER_SINK)  # never opened: takes writes, plays nothing
    session = ConsoleSession(Credentials(site.url, "u1", PASSWORD), listener=RecordingListener(), speaker=first)
    session.start()
    track = WavTrack(wav, autostart=False)
    talker = await PttClient.connect(site.url, "u0", slots=0, microphone=track)
    second = Speaker(SPEAKER_SINK)
    try:
        await session.wait_connected()
        await until(lambda: alpha in session.board.joined_ids())
        await session._peer.wait_connected()
        session.set_volume(alpha, 0.5)
        second.open()
        session.set_audio(second, None)
        first.close()
        assert session.receiver_of(alpha).sink is second.sink(alpha)
        assert second.sink(alpha).gain == 0.5  # the channel's volume came along

        recording = pulse.start_recording()
        assert (await talker.talk(alpha))["granted"]
        track.start()
        await asyncio.wait_for(track.on_done.wait(), 15)
        await asyncio.sleep(0.5)
        await talker.release(alpha)
        heard = recording.stop()
        score, _ = aligned_correlation(read_wav(wav).astype(np.float64), heard * 32768.0)
        assert score >= 0.8, f"correlation {score:.3f}"
    finally:
        await close_all(talker)
        await session.stop()
        first.close()
        second.close()
