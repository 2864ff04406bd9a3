"""Python's garbage collector, run on the GUI thread only.

The cyclic collector runs in whichever thread happens to allocate when a threshold is
crossed: an aiortc decoder thread, an executor thread hashing a password, a PortAudio
callback. A Qt object caught in a collected cycle would then be destroyed on that
thread, with its timers still registered on the GUI thread's event dispatcher, and the
next timer event crashes the process. So automatic collection is switched off while the
console runs, and this timer collects on the GUI thread instead, one generation at a
time, as CPython's own thresholds would have asked for.
"""

from __future__ import annotations

import gc

from PySide6.QtCore import QObject, QTimer

INTERVAL_MS = 500


class GuiThreadGarbageCollector(QObject):
    """Call start() on the GUI thread; stop() restores automatic collection."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._timer = QTimer(self)
        self._timer.setInterval(INTERVAL_MS)
        self._timer.timeout.connect(self.check)
        self._was_enabled = gc.isenabled()
        self.collections = [0, 0, 0]

    def start(self) -> None:
        self._was_enabled = gc.isenabled()
        gc.disable()
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()
        if self._was_enabled:
            gc.enable()

    def check(self) -> None:
        """Collect the oldest generation whose count passed its threshold, if any."""
        counts, thresholds = gc.get_count(), gc.get_threshold()
        for generation in (2, 1, 0):
            if counts[generation] > thresholds[generation]:
                gc.collect(generation)
                self.collections[generation] += 1
                return
