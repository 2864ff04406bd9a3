"""ICE consent freshness (RFC 7675) for every connection on the media port, from one wheel.

A server may send media to a listener only while the listener consents: it answers a
binding request on the nominated pair at least every 30 s. aioice checks consent with a
coroutine per connection that wakes every 4-6 s, builds its request attribute by
attribute and waits for the answer in a STUN transaction of its own (a future, a timer,
a dict entry); with hundreds of idle listeners that was the larger half of the server's
idle CPU, beside answering the listeners' own checks (server/media/media_port.py).

Here one timer wheel (server/media/timer_wheel.py) visits each connection every 4-6 s
(RFC 7675's 5 s, randomised 0.8-1.2x) and sends one check per nominated pair, built from
bytes prepared once per connection (server/media/stun_checks.py). The media port hands
each success response with one of our transaction IDs to `response_received`, which
takes it if it comes from where the check went and its MESSAGE-INTEGRITY is the peer's.
Checks are never retransmitted: each interval sends a new one with a new transaction,
and an answer to any check still open counts (RFC 7675 5.1).

A connection whose peer has not answered for CONSENT_TIMEOUT_S (30 s) has lost consent:
its aioice connection is closed, as aioice does after 6 unanswered checks, and the
session's media ends the same way (aiortc sees its ICE transport close). A visit finds
that out, so it happens 30-36 s after the last answer (aioice: about 27-33 s).

This stands in for aioice's `Connection.query_consent` (pinned with aiortc): aioice
starts it as a task once ICE completes and cancels it on close(), as before.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections import deque
from collections.abc import Callable

import aioice.ice
from aioice.candidate import candidate_priority

from .stun_checks import binding_request, parse_binding_success, request_attributes
from .timer_wheel import TimerWheel

logger = logging.getLogger(__name__)

CONSENT_INTERVAL_S = 5.0
CONSENT_TIMEOUT_S = 30.0
TICK_S = 0.25
# A check's answer counts while the check is among its connection's last few: more than
# the 30 s timeout holds at one check every 4 s.
OPEN_CHECKS = 8


class ConsentWatch:
    """One connection's consent: when its peer last answered, and the checks still open."""

    __slots__ = ("connection", "label", "_due_tick", "last_answer", "open_checks", "lost", "key", "_attributes")

    def __init__(self, connection: aioice.ice.Connection, now: float, lost: asyncio.Future) -> None:
        self.connection = connection
        self.label = f"ice {connection.local_username}"
        self._due_tick: int | None = None
        self.last_answer = now  # ICE has just completed: the peer answered a check
        self.open_checks: deque[bytes] = deque()
        self.lost = lost
        self.key = connection.remote_password.encode("utf8")
        self._attributes: dict[tuple[int, bool], bytes] = {}

    def request_attributes(self, component: int) -> bytes:
        """USERNAME, PRIORITY and the ICE role as they stand now (the role may switch)."""
        connection = self.connection
        cache_key = (component, connection.ice_controlling)
        attributes = self._attributes.get(cache_key)
        if attributes is None:
            attributes = self._attributes[cache_key] = request_attributes(
                f"{connection.remote_username}:{connection.local_username}",
                candidate_priority(component, "prflx"),  # what aioice puts in its checks
                connection.ice_controlling,
                connection._tie_breaker,
            )
        return attributes


class ConsentChecker(TimerWheel[ConsentWatch]):
    """Consent checks for every connection that `watch`es, from one task."""

    def __init__(
        self,
        *,
        interval: float = CONSENT_INTERVAL_S,
        timeout: float = CONSENT_TIMEOUT_S,
        tick: float = TICK_S,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(interval=interval, spread=(0.8, 1.2), tick=tick, clock=clock, rng=rng, name="ice consent")
        self.timeout = timeout
        self._open: dict[bytes, tuple[ConsentWatch, tuple[str, int]]] = {}  # transaction -> (watch, sent to)
        self.checks_sent = 0
        self.answers = 0
        self.answers_refused = 0  # from elsewhere, or not signed with the peer's password
        self.expired = 0

    def stats(self) -> dict[str, int]:
        return {"connections": len(self), "checks_sent": self.checks_sent, "answers": self.answers,
                "answers_refused": self.answers_refused, "expired": self.expired}

    async def watch(self, connection: aioice.ice.Connection) -> None:
        """Check `connection`'s consent until it is lost, then close the connection.

        Stands in for aioice's `Connection.query_consent`: aioice runs it as a task once
        ICE completes and cancels it when the connection closes.
        """
        watch = ConsentWatch(connection, self._clock(), asyncio.get_running_loop().create_future())
        self.add(watch)
        try:
            await watch.lost
        finally:
            self.remove(watch)
            for transaction_id in watch.open_checks:
                self._open.pop(transaction_id, None)
        logger.info("%s: consent to send expired (no answer for %.0f s)", watch.label, self.timeout)
        connection._query_consent_task = None  # as aioice does: close() must not cancel this task
        await connection.close()

    def visit(self, watch: ConsentWatch, now: float) -> int:
        connection = watch.connection
        if now - watch.last_answer >= self.timeout:
            self.expired += 1
            self.remove(watch)
            if not watch.lost.done():
                watch.lost.set_result(None)
            return 0
        if connection._closing:
            return 0
        sent = 0
        for pair in list(connection._nominated.values()):
            transaction_id = os.urandom(12)
            request = binding_request(transaction_id, watch.request_attributes(pair.component), watch.key)
            pair.protocol.transport.sendto(request, pair.remote_addr)
            self._remember(watch, transaction_id, pair.remote_addr)
            sent += 1
        self.checks_sent += sent
        return sent

    def _remember(self, watch: ConsentWatch, transaction_id: bytes, sent_to: tuple) -> None:
        if len(watch.open_checks) >= OPEN_CHECKS:
            self._open.pop(watch.open_checks.popleft(), None)
        watch.open_checks.append(transaction_id)
        self._open[transaction_id] = (watch, (sent_to[0], sent_to[1]))

    def response_received(self, data: bytes, addr: tuple) -> bool:
        """Take `data` (a datagram that looks like a binding success) if it answers one of
        our checks: True when it was ours, counted or refused; False leaves it to aioice."""
        transaction_id = data[8:20]
        entry = self._open.get(transaction_id)
        if entry is None:
            return False
        watch, sent_to = entry
        message = parse_binding_success(data)
        if (addr[0], addr[1]) != sent_to or message is None or not message.check(watch.key):
            # RFC 7675 5.1: only an answer from where the check went, signed by the peer.
            self.answers_refused += 1
            return True
        del self._open[transaction_id]
        watch.open_checks.remove(transaction_id)
        watch.last_answer = self._clock()
        self.answers += 1
        return True


__all__ = ["ConsentChecker", "ConsentWatch", "CONSENT_INTERVAL_S", "CONSENT_TIMEOUT_S"]
