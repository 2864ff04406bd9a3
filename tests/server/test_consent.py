"""ICE consent from one wheel (server/media/consent.py): the checker alone against a stand-in
connection, then in a real server with real aiortc clients on loopback."""

from __future__ import annotations

import asyncio
import os
import random
from types import SimpleNamespace

import aioice.stun as stun
import pytest

from server.media import aiortc_hooks
from server.media.consent import OPEN_CHECKS, ConsentChecker
from server.media.stun_checks import binding_success
from tests.server.harness import PttClient, start_site
from tests.server.test_rtcp import Clock

CLIENT_PASSWORD = "the-clients-ice-password"
CLIENT_ADDR = ("10.203.0.1", 40000)


class StandInConnection:
    """What the checker reads of an aioice Connection, with one nominated pair whose
    transport records what is sent."""

    def __init__(self) -> None:
        self.local_username = "srvufrag1234"
        self.remote_username = "cli1"
        self.remote_password = CLIENT_PASSWORD
        self.ice_controlling = False
        self._tie_breaker = 0x0102030405060708
        self._closing = False
        self._query_consent_task = None
        self.sent: list[tuple[bytes, tuple]] = []
        self.closed = 0
        transport = SimpleNamespace(sendto=lambda data, addr: self.sent.append((data, addr)))
        self._nominated = {1: SimpleNamespace(component=1, remote_addr=CLIENT_ADDR,
                                              protocol=SimpleNamespace(transport=transport))}

    async def close(self) -> None:
        self.closed += 1

    def answer(self, index: int = -1, *, key: str = CLIENT_PASSWORD) -> bytes:
        """The client's success response to the check sent `index`-th."""
        request = stun.parse_message(self.sent[index][0])
        return binding_success(request.transaction_id, ("10.203.0.2", 3478), key.encode())


@pytest.fixture
async def checked():
    """A checker on a fake clock (5 s interval, 30 s timeout, 0.25 s ticks), watching one
    stand-in connection; advance(s) moves the clock and runs the visits due."""
    clock = Clock()
    checker = ConsentChecker(clock=clock, rng=random.Random(7))
    connection = StandInConnection()
    task = asyncio.get_running_loop().create_task(checker.watch(connection))
    await asyncio.sleep(0)  # the watch registers

    def advance(seconds: float) -> None:
        for _ in range(round(seconds / checker.tick)):
            clock.now += checker.tick
            checker.run_due()

    yield SimpleNamespace(checker=checker, connection=connection, task=task, advance=advance)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await checker.stop()


async def test_a_check_goes_out_every_four_to_six_seconds_as_aioice_builds_it(checked):
    times = []
    for _ in range(240):  # 60 s; every check answered
        before = len(checked.connection.sent)
        checked.advance(0.25)
        if len(checked.connection.sent) > before:
            times.append(checked.checker._clock())
            assert checked.checker.response_received(checked.connection.answer(), CLIENT_ADDR)
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert 10 <= len(times) <= 15
    assert min(gaps) >= 4.0 - 1e-9 and max(gaps) <= 6.0 + 1e-9
    request = stun.parse_message(checked.connection.sent[0][0])
    assert checked.connection.sent[0][1] == CLIENT_ADDR
    assert request.message_class is stun.Class.REQUEST
    assert request.attributes["USERNAME"] == "cli1:srvufrag1234"
    assert request.attributes["ICE-CONTROLLED"] == 0x0102030405060708
    assert request.check_message_integrity(CLIENT_PASSWORD.encode())
    ids = [stun.parse_message(data).transaction_id for data, _ in checked.connection.sent]
    assert len(set(ids)) == len(ids)  # a new transaction every time, never a retransmission
    assert checked.checker.stats()["answers"] == len(times)
    assert not checked.task.done() and checked.connection.closed == 0


async def test_thirty_seconds_without_an_answer_close_the_connection(checked):
    checked.advance(20)
    assert checked.checker.response_received(checked.connection.answer(), CLIENT_ADDR)
    checked.advance(29)  # 29 s after that answer: still consenting
    assert not checked.task.done()
    checked.advance(7.5)
    await asyncio.wait_for(checked.task, timeout=5)
    assert checked.connection.closed == 1
    assert checked.checker.stats()["expired"] == 1 and len(checked.checker) == 0
    sent = len(checked.connection.sent)
    checked.advance(10)
    assert len(checked.connection.sent) == sent  # no check after expiry


async def test_an_answer_to_any_open_check_counts_but_only_once(checked):
    checked.advance(13)
    assert len(checked.connection.sent) >= 2
    late = checked.connection.answer(0)  # the first check, answered after the second went out
    assert checked.checker.response_received(late, CLIENT_ADDR)
    assert checked.checker.stats()["answers"] == 1
    assert checked.checker.response_received(late, CLIENT_ADDR) is False  # closed: aioice's now
    assert checked.checker.stats()["answers"] == 1


@pytest.mark.parametrize("how", ["from elsewhere", "signed with another password", "truncated"])
async def test_a_forged_answer_is_refused_and_refreshes_nothing(checked, how):
    checked.advance(30)
    answer, addr = checked.connection.answer(), CLIENT_ADDR
    if how == "from elsewhere":
        addr = ("10.203.0.9", 40000)
    elif how == "signed with another password":
        answer = checked.connection.answer(key="not-the-password")
    else:
        answer = answer[:-8]
    assert checked.checker.response_received(answer, addr)  # taken: aioice never sees it
    assert checked.checker.stats()["answers_refused"] == 1 and checked.checker.stats()["answers"] == 0
    checked.advance(6.5)  # 30 s since ICE completed, with no good answer
    await asyncio.wait_for(checked.task, timeout=5)
    assert checked.connection.closed == 1


async def test_a_response_that_is_not_ours_is_left_to_aioice(checked):
    checked.advance(6.5)
    foreign = binding_success(os.urandom(12), ("10.203.0.2", 3478), CLIENT_PASSWORD.encode())
    assert checked.checker.response_received(foreign, CLIENT_ADDR) is False
    assert checked.checker.stats()["answers_refused"] == 0


async def test_open_checks_are_bounded_per_connection(checked):
    (watch,) = checked.checker._registered
    for _ in range(240):  # 60 s, about 12 checks, none answered; kept consenting by hand
        watch.last_answer = checked.checker._clock()
        checked.advance(0.25)
    assert len(checked.connection.sent) > OPEN_CHECKS
    assert len(watch.open_checks) == OPEN_CHECKS
    assert len(checked.checker._open) == OPEN_CHECKS


async def test_a_switched_role_is_in_the_next_check(checked):
    checked.connection.ice_controlling = True
    checked.advance(6.5)
    request = stun.parse_message(checked.connection.sent[-1][0])
    assert request.attributes["ICE-CONTROLLING"] == 0x0102030405060708
    assert "ICE-CONTROLLED" not in request.attributes


async def test_closing_the_connection_ends_its_watch(checked):
    checked.task.cancel()  # what aioice's close() does to its consent task
    await asyncio.gather(checked.task, return_exceptions=True)
    assert len(checked.checker) == 0 and not checked.checker._open
    assert checked.connection.closed == 0


# --- in a real server ------------------------------------------------------------------


@pytest.fixture
async def site(tmp_path):
    site = await start_site(tmp_path, users=3)
    # Checks every ~0.3 s and a 2 s timeout, so that a test sees many checks and an expiry.
    # The port's sockets open with the first session, so they take this checker.
    site.hub.media_port.consent = ConsentChecker(interval=0.3, timeout=2.0, tick=0.05)
    yield site
    await site.server.stop()


def server_connection_of(site, name: str):
    (session,) = [s for s in site.hub.sessions.values() if s.user.name == name]
    return session, aiortc_hooks.ice_connection_of(session.peer._pc)


async def wait_for(predicate, seconds: float) -> bool:
    for _ in range(int(seconds / 0.05)):  # bounded
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return predicate()


async def test_the_servers_checks_are_answered_by_a_real_client(site):
    listener = await PttClient.connect(site.url, "u1", slots=1)
    try:
        consent = site.hub.media_port.consent
        assert await wait_for(lambda: consent.stats()["answers"] >= 5, 10)
        stats = site.hub.stats()["ice_consent"]
        assert stats["connections"] == 1 and stats["expired"] == 0 and stats["answers_refused"] == 0
        assert stats["checks_sent"] >= stats["answers"] >= 5
        session, _ = server_connection_of(site, "u1")
        assert session.peer.connection_state == "connected"
    finally:
        await listener.close()
    assert await wait_for(lambda: len(site.hub.media_port.consent) == 0, 5)


async def test_a_client_that_vanishes_loses_consent_and_its_media(site):
    listener = await PttClient.connect(site.url, "u1", slots=1)
    other = await PttClient.connect(site.url, "u2", slots=1)
    try:
        session, _ = server_connection_of(site, "u1")
        consent = site.hub.media_port.consent
        assert await wait_for(lambda: consent.stats()["answers"] >= 2, 10)
        # The client's sockets go without a word, as when its machine drops off the network.
        for protocol in aiortc_hooks.ice_connection_of(listener.peer.pc)._protocols:
            protocol.transport.close()
        assert await wait_for(lambda: session.peer.connection_state in ("closed", "failed"), 10)
        assert consent.stats()["expired"] == 1
        # The other session keeps consent and its media.
        other_session, _ = server_connection_of(site, "u2")
        answers = consent.stats()["answers"]
        assert await wait_for(lambda: consent.stats()["answers"] >= answers + 3, 10)
        assert other_session.peer.connection_state == "connected"
    finally:
        await listener.close()
        await other.close()


@pytest.mark.parametrize("nominate", [False, True])
async def test_a_clients_consent_check_is_answered_by_the_port_itself(site, nominate):
    listener = await PttClient.connect(site.url, "u1", slots=1)
    try:
        _, server_side = server_connection_of(site, "u1")
        passed_to_aioice: list[bytes] = []
        original = server_side.request_received

        def request_received(message, addr, protocol):
            passed_to_aioice.append(message.transaction_id)
            original(message, addr, protocol)

        server_side.request_received = request_received
        answered_before = site.hub.stats()["ice_consent"]["answered"]
        client_side = aiortc_hooks.ice_connection_of(listener.peer.pc)
        pair = client_side._nominated[1]
        # What aioice's consent loop sends every ~5 s, now; aioice checks the response's
        # transaction and MESSAGE-INTEGRITY (with the server's password) before returning it.
        request = client_side.build_request(pair, nominate=nominate)
        response, _ = await asyncio.wait_for(pair.protocol.request(
            request, pair.remote_addr, integrity_key=client_side.remote_password.encode(), retransmissions=0,
        ), timeout=5)
        assert response.message_class is stun.Class.RESPONSE
        assert response.attributes["XOR-MAPPED-ADDRESS"] == pair.local_addr
        assert request.transaction_id not in passed_to_aioice
        assert site.hub.stats()["ice_consent"]["answered"] > answered_before
    finally:
        await listener.close()


async def test_a_check_with_a_wrong_password_is_not_answered(site):
    listener = await PttClient.connect(site.url, "u1", slots=1)
    try:
        client_side = aiortc_hooks.ice_connection_of(listener.peer.pc)
        pair = client_side._nominated[1]
        answered_before = site.hub.stats()["ice_consent"]["answered"]
        unrouted_before = site.hub.stats()["media_datagrams_unrouted"]
        request = client_side.build_request(pair, nominate=False)
        with pytest.raises(stun.TransactionTimeout):
            await asyncio.wait_for(pair.protocol.request(
                request, pair.remote_addr, integrity_key=b"not-the-servers-password", retransmissions=0,
            ), timeout=5)
        assert site.hub.stats()["ice_consent"]["answered"] == answered_before
        assert site.hub.stats()["media_datagrams_unrouted"] == unrouted_before + 1
        session, _ = server_connection_of(site, "u1")
        assert session.peer.connection_state == "connected"
    finally:
        await listener.close()
