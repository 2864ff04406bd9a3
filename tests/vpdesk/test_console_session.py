"""ConsoleSession against a real embedded server, real aiortc peers and real Opus.

Only the sound card is a stand-in (tests/vpdesk/session_helpers.py); the real-audio path
through PulseAudio is tests/e2e.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from server.directory import Directory
from tests.audio_tools import aligned_correlation, read_wav, speech_wav
from tests.server.harness import PASSWORD, start_site
from tests.vpdesk.session_helpers import make_session, until
from vpdesk.core.connection import ConnectionState
from vpdesk.core.ptt import PttMode, TxState
from vpdesk.session.console import ChannelPreference


@pytest.fixture
async def site(tmp_path):
    site = await start_site(tmp_path / "site", users=3)
    yield site
    await site.server.stop()


@pytest.fixture(scope="module")
def wav(tmp_path_factory):
    return speech_wav(tmp_path_factory.mktemp("wav"), "Engine four respond to the north gate", 2.0)


@pytest.fixture
async def sessions(site, wav):
    made = []

    def make(user, **kwargs):
        s = make_session(site.url, user, PASSWORD, wav=wav, **kwargs)
        made.append(s)
        s.start()
        return s

    yield make
    await asyncio.gather(*(s.stop() for s in made))


async def test_connects_joins_every_channel_and_targets_the_first(site, sessions):
    s = sessions("u1")
    await s.wait_connected()
    await until(lambda: len(s.board.joined_ids()) == 2)
    assert s.state is ConnectionState.CONNECTED
    assert {c.name for c in s.board.snapshot()} == {"alpha", "bravo"}
    assert s.target == s.board.ids()[0]
    assert s.mid_of(site.channels["alpha"]) != s.mid_of(site.channels["bravo"])
    assert "Connected to" in s.detail and "u1" in s.detail


async def test_talk_is_heard_by_the_other_console(site, sessions, wav):
    alpha = site.channels["alpha"]
    talker, listener = sessions("u0", target=alpha), sessions("u1")
    await talker.wait_connected()
    await listener.wait_connected()
    await until(lambda: alpha in listener.board.joined_ids() and alpha in talker.board.joined_ids())
    await talker._peer.wait_connected()
    await listener._peer.wait_connected()

    talker.press("mouse")
    await until(lambda: talker.ptt.state is TxState.TRANSMITTING)
    assert talker.listener.tones[-1] == "talk_permit"
    await until(lambda: listener.board.get(alpha).speaking == "u0 is speaking")
    await asyncio.wait_for(talker.microphone.track.on_done.wait(), 10)
    await asyncio.sleep(0.3)
    talker.release("mouse")
    await until(lambda: not listener.board.get(alpha).floor.taken)
    assert talker.listener.tones[-1] == "end_of_tx"
    assert len(talker.access_times) == 1

    heard = listener.speaker.sinks[alpha].samples()
    score, _ = aligned_correlation(read_wav(wav).astype(np.float64), heard * 32768.0)
    assert score >= 0.8, score
    assert listener.receiver_of(alpha).packets > 50
    # The talker never hears itself.
    assert talker.speaker.sinks[alpha].samples().size == 0


async def test_press_on_a_busy_channel_is_denied_with_the_holders_name(site, sessions):
    alpha = site.channels["alpha"]
    a, b = sessions("u0", target=alpha), sessions("u1", target=alpha)
    await a.wait_connected()
    await b.wait_connected()
    a.press("keyboard")
    await until(lambda: a.ptt.state is TxState.TRANSMITTING)
    await until(lambda: b.board.get(alpha).speaking == "u0 is speaking")
    b.press("mouse")
    await until(lambda: "busy" in b.listener.tones)
    assert b.ptt.state is TxState.DENIED
    assert b.listener.messages[-1] == "Channel busy: u0 is speaking"
    b.release("mouse")
    assert b.microphone.gate is False  # nothing was sent
    a.release("keyboard")
    await until(lambda: not b.board.get(alpha).floor.taken)


async def test_toggle_mode_talks_until_the_second_press(site, sessions):
    bravo = site.channels["bravo"]
    s = sessions("u1", target=bravo, ptt_mode=PttMode.TOGGLE)
    await s.wait_connected()
    s.press("mouse")
    s.release("mouse")
    await until(lambda: s.ptt.state is TxState.TRANSMITTING)
    assert s.microphone.gate is True
    s.press("mouse")
    s.release("mouse")
    assert s.ptt.state is TxState.IDLE and s.microphone.gate is False
    await until(lambda: not s.board.get(bravo).floor.taken)


async def test_muted_channel_gets_no_audio_and_the_server_knows(site, sessions):
    alpha = site.channels["alpha"]
    talker, listener = sessions("u0", target=alpha), sessions("u1")
    await talker.wait_connected()
    await listener.wait_connected()
    await until(lambda: alpha in listener.board.joined_ids())
    listener.set_muted(alpha, True)
    await until(lambda: alpha in site.hub.sessions[listener.session_id].muted)
    await talker._peer.wait_connected()
    await listener._peer.wait_connected()
    talker.press("mouse")
    await until(lambda: talker.ptt.state is TxState.TRANSMITTING)
    await asyncio.sleep(1.0)
    talker.release("mouse")
    assert listener.receiver_of(alpha).packets == 0
    assert listener.speaker.sinks[alpha].gain == 0.0
    # Floor events still arrive for a muted channel.
    assert any(c == alpha for c in listener.listener.changed)


async def test_saved_preferences_apply_on_first_join(site, sessions):
    alpha, bravo = site.channels["alpha"], site.channels["bravo"]
    prefs = {alpha: ChannelPreference(muted=True, volume=0.4)}
    s = sessions("u1", preferences=lambda cid: prefs.get(cid, ChannelPreference()))
    await s.wait_connected()
    await until(lambda: s.board.get(alpha).muted)
    assert s.board.get(alpha).volume == pytest.approx(0.4)
    assert not s.board.get(bravo).muted
    assert site.hub.sessions[s.session_id].muted == {alpha}


async def test_reconnects_and_resumes_joins_mutes_and_target(site, sessions):
    alpha, bravo = site.channels["alpha"], site.channels["bravo"]
    s = sessions("u1", target=bravo)
    await s.wait_connected()
    await until(lambda: len(s.board.joined_ids()) == 2)
    s.set_muted(alpha, True)
    await until(lambda: alpha in site.hub.sessions[s.session_id].muted)
    first_session = s.session_id

    await s.drop_connection()
    await until(lambda: s.state is not ConnectionState.CONNECTED)
    s.press("mouse")  # during the outage: refused, clearly
    assert s.listener.messages[-1] == "Cannot talk: not connected"
    s.release("mouse")

    await until(lambda: s.state is ConnectionState.CONNECTED, timeout=15)
    assert s.session_id == first_session  # resumed, not a new session
    await until(lambda: len(s.board.joined_ids()) == 2)
    assert s.board.get(alpha).muted
    assert site.hub.sessions[s.session_id].muted == {alpha}
    assert s.target == bravo


async def test_reconnects_after_the_server_restarts(tmp_path, wav):
    site = await start_site(tmp_path / "site", users=2)
    port = site.server.port
    s = make_session(site.url, "u1", PASSWORD, wav=wav)
    s.reconnector.base = 0.2
    s.start()
    try:
        await s.wait_connected()
        await site.server.stop()
        await until(lambda: s.state is ConnectionState.RECONNECTING)
        assert "retrying" in s.detail
        site.server.config.listen_port = port
        site.server.directory = None
        site.server.store = None
        await site.server.start()
        await until(lambda: s.state is ConnectionState.CONNECTED, timeout=20)
        await until(lambda: len(s.board.joined_ids()) == 2)
    finally:
        await s.stop()
        await site.server.stop()


async def test_wrong_password_fails_without_retrying(site):
    s = make_session(site.url, "u1", "not-the-password")
    s.start()
    try:
        await until(lambda: s.state is ConnectionState.FAILED)
        assert "wrong user name or password" in s.listener.messages[-1]
    finally:
        await s.stop()


async def test_a_channel_added_while_connected_is_joined(site, sessions):
    s = sessions("u1")
    await s.wait_connected()
    with Directory.open(site.data_dir) as directory:
        directory.add_channel("charlie", team="Ops", event="Exercise")
        directory.add_member("u1", "charlie")
        charlie = directory.channel_by_name("charlie").id
    await until(lambda: charlie in s.board.joined_ids(), timeout=5)
    assert s.mid_of(charlie) is not None
    with Directory.open(site.data_dir) as directory:
        directory.remove_member("u1", "charlie")
    await until(lambda: charlie not in s.board, timeout=5)
    assert s.mid_of(charlie) is None


async def test_no_microphone_refuses_the_press_but_still_listens(site):
    s = make_session(site.url, "u1", PASSWORD)  # no microphone
    s.start()
    try:
        await s.wait_connected()
        s.press("mouse")
        assert s.listener.messages[-1] == "Cannot talk: no microphone"
        assert s.ptt.state is TxState.IDLE
        await until(lambda: len(s.board.joined_ids()) == 2)
    finally:
        await s.stop()


async def test_max_talk_time_revokes_with_a_tone_and_a_message(tmp_path, wav):
    site = await start_site(tmp_path / "site", users=2, max_talk_ms=800)
    s = make_session(site.url, "u1", PASSWORD, wav=wav)
    s.start()
    try:
        await s.wait_connected()
        s.press("mouse")
        await until(lambda: s.ptt.state is TxState.TRANSMITTING)
        assert s.microphone.gate
        await until(lambda: s.ptt.state is TxState.IDLE, timeout=5)
        assert not s.microphone.gate
        assert s.listener.messages[-1] == "Transmission ended: maximum talk time reached"
        assert s.listener.tones[-1] == "end_of_tx"
        s.release("mouse")  # letting go afterwards sends nothing more
        assert s.ptt.state is TxState.IDLE
    finally:
        await s.stop()
        await site.server.stop()
