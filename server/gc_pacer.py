"""Python's cyclic garbage collector, run between packets on a standalone node.

CPython collects wherever an allocation crosses a threshold: in the middle of a fan-out as
often as anywhere, and every packet in flight then waits. On a node with 200 listeners under
bench/compare.py's load, collections of the young generation took 0.08 ms (median, up to
4 ms), of the middle one 1.2 ms (median, up to 7 ms) about once a second, and a full one
63 ms: that is the tail of the wire-in to wire-out latency. So a standalone node:

- freezes what exists once it serves (modules, classes, configuration: never garbage), so
  that no collection walks it again;
- switches automatic collection off and collects the young generations right after a
  talker packet's fan-out, when that talker's next packet is 20 ms away (on the next turn
  of the loop, after the packets already read), and on a timer when no packet flows;
- collects the oldest generation only once the node has been quiet for QUIET_S (no packet),
  at most every FULL_MIN_INTERVAL_S, and regardless after FULL_MAX_INTERVAL_S, so cyclic
  garbage cannot pile up on a node that never falls silent.

The console's embedded server leaves collection to the console (vpdesk/ui/gui_gc.py), which
runs it on the GUI thread for Qt's sake.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

TIMER_S = 0.5
QUIET_S = 2.0
FULL_MIN_INTERVAL_S = 60.0
FULL_MAX_INTERVAL_S = 600.0


class GarbagePacer:
    """Runs gc between packets. start() and stop() on the node's loop; `after_packet()` is
    called by the hub on that loop after each talker packet's fan-out (cheap: one count)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._pending = False
        self._was_enabled = True
        self._thresholds = gc.get_threshold()
        self._young_limit = self._thresholds[0]
        self._last_packet = float("-inf")
        self._last_full = 0.0
        self.collections = [0, 0, 0]
        self.longest_pause_ms = [0.0, 0.0, 0.0]

    @property
    def running(self) -> bool:
        return self._loop is not None

    def start(self) -> None:
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._thresholds = gc.get_threshold()
        self._young_limit = self._thresholds[0]
        self._was_enabled = gc.isenabled()
        gc.disable()
        # Collect first: what is garbage now must not be frozen for good.
        gc.collect()
        gc.freeze()
        self._last_full = self._clock()
        self._timer = self._loop.call_later(TIMER_S, self._tick)
        logger.info("garbage collection paced between packets (%d objects frozen)", gc.get_freeze_count())

    def stop(self) -> None:
        if self._loop is None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._loop = None
        self._pending = False
        gc.unfreeze()
        if self._was_enabled:
            gc.enable()

    def after_packet(self) -> None:
        """A talker packet has been forwarded: collect on the loop's next turn if due."""
        self._last_packet = self._clock()
        if not self._pending and gc.get_count()[0] >= self._young_limit and self._loop is not None:
            self._pending = True
            self._loop.call_soon(self._collect_young)

    def _collect_young(self) -> None:
        self._pending = False
        self.collect_due(full_allowed=False)

    def _tick(self) -> None:
        now = self._clock()
        quiet = now - self._last_packet >= QUIET_S
        self.collect_due(full_allowed=(quiet and now - self._last_full >= FULL_MIN_INTERVAL_S)
                         or now - self._last_full >= FULL_MAX_INTERVAL_S)
        if self._loop is not None:
            self._timer = self._loop.call_later(TIMER_S, self._tick)

    def collect_due(self, *, full_allowed: bool) -> int | None:
        """Collect the oldest generation that CPython's thresholds say is due (the oldest
        one only when `full_allowed`); the generation collected, or None."""
        counts, thresholds = gc.get_count(), self._thresholds
        if full_allowed and counts[2] >= thresholds[2]:
            generation = 2
        elif counts[1] >= thresholds[1]:
            generation = 1
        elif counts[0] >= thresholds[0]:
            generation = 0
        else:
            return None
        started = time.perf_counter()
        gc.collect(generation)
        pause_ms = 1e3 * (time.perf_counter() - started)
        if generation == 2:
            self._last_full = self._clock()
        self.collections[generation] += 1
        if pause_ms > self.longest_pause_ms[generation]:
            self.longest_pause_ms[generation] = pause_ms
        return generation
