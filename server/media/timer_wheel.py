"""One task that visits many connections at spread-out intervals: a timer wheel.

Per-connection timers (a coroutine or a call_later each) cost a wake-up and a heap entry
per connection per interval; with hundreds of idle connections that is most of a server's
idle CPU. A wheel of `tick`-second slots wakes once per tick for every connection due in
it, and moves each visited connection to a random later slot, so that connections which
came up together do not stay in step. RTCP reports (server/media/rtcp.py) and ICE consent
checks (server/media/consent.py) each run on one.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

logger = logging.getLogger(__name__)


class WheelItem(Protocol):
    label: str
    _due_tick: int | None  # the wheel's own bookkeeping: None when not scheduled


Item = TypeVar("Item", bound=WheelItem)


class TimerWheel(Generic[Item]):
    """Calls `visit(item, now)` for every registered item every `spread` x `interval` s.

    `spread` is the (low, high) factor of the interval between two visits, drawn anew
    after each visit; a new item's first visit comes within `spread[1] x interval`. The
    task runs only while items are registered. Subclasses implement `visit`.
    """

    def __init__(
        self,
        *,
        interval: float,
        spread: tuple[float, float],
        tick: float,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        name: str = "timer wheel",
    ) -> None:
        self.interval = interval
        self.tick = tick
        self._clock = clock
        self._rng = rng or random.Random()
        self._name = name
        self._spread = (max(1, round(spread[0] * interval / tick)), max(1, round(spread[1] * interval / tick)))
        self._wheel: dict[int, list[Item]] = {}
        self._registered: set[Item] = set()
        self._origin = clock()
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._registered)

    def visit(self, item: Item, now: float) -> int:
        """Do what is due for `item` at monotonic `now`; a count the caller sums (packets)."""
        raise NotImplementedError

    def add(self, item: Item) -> None:
        """Start visiting `item` (idempotent). Call on the wheel's loop."""
        if item in self._registered:
            return
        self._registered.add(item)
        self._place(item, self._current_tick() + self._rng.randint(1, self._spread[1]))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self._name)

    def remove(self, item: Item) -> None:
        """Stop visiting `item` (idempotent); its slot entry is dropped lazily."""
        self._registered.discard(item)
        item._due_tick = None
        if not self._registered and self._task is not None:
            # Nothing left to visit: end the task now rather than at its next slot, so a
            # stopping server or console leaves nothing behind.
            self._task.cancel()
            self._task = None
            self._wheel.clear()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    def _current_tick(self) -> int:
        # The small bias keeps a wake-up a hair early (the loop's clock resolution) from
        # finding its slot not yet due.
        return int((self._clock() - self._origin) / self.tick + 1e-3)

    def _place(self, item: Item, tick: int) -> None:
        item._due_tick = tick
        self._wheel.setdefault(tick, []).append(item)

    def run_due(self) -> int:
        """Visit every item whose slot is due; the sum of the visits' counts."""
        now_tick = self._current_tick()
        due = [t for t in self._wheel if t <= now_tick]
        if not due:
            return 0
        now = self._clock()
        low, high = self._spread
        rng = self._rng
        total = 0
        for tick in sorted(due):
            for item in self._wheel.pop(tick, ()):  # a visit's remove() may clear the wheel
                if item._due_tick != tick:
                    continue  # removed, or placed again since
                try:
                    total += self.visit(item, now)
                except Exception:  # one broken connection must not stop everyone's visits
                    logger.exception("%s: visiting %s failed", self._name, item.label)
                if item._due_tick == tick:  # still registered after its visit
                    self._place(item, now_tick + rng.randint(low, high))
        return total

    async def _run(self) -> None:
        while self._registered:
            self.run_due()
            if not self._wheel:
                break
            # An item added meanwhile waits at most until this wake-up.
            await asyncio.sleep(max(0.0, self._origin + min(self._wheel) * self.tick - self._clock()))
        self._wheel.clear()


__all__ = ["TimerWheel", "WheelItem"]
