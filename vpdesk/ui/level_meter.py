"""A horizontal microphone level meter: segmented bar in green/amber/red, with peak hold.

GUI thread only. Feed it with `set_value(0..1)` (the viewmodel's micLevel, ~20/s); the
peak marker holds for `PEAK_HOLD_S`, then falls, so a single loud syllable stays visible
long enough to read.
"""

from __future__ import annotations

import time

from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QColor, QPainter
from PySide6.QtWidgets import QSizePolicy, QWidget

from vpdesk.ui.theme import COLORS

AMBER_FROM = 0.70  # speech should mostly sit in the green
RED_FROM = 0.90  # near clipping
PEAK_HOLD_S = 1.2
PEAK_FALL_PER_S = 0.6
SEGMENTS = 32


def _clamp(value: float) -> float:
    if value != value:  # NaN
        return 0.0
    return min(1.0, max(0.0, float(value)))


class LevelMeter(QWidget):
    """Value 0..1 as lit segments; `peak()` is the held maximum."""

    def __init__(self, parent: QWidget | None = None, *, clock=time.monotonic) -> None:
        super().__init__(parent)
        self._clock = clock
        self._value = 0.0
        self._peak = 0.0
        self._peak_at = 0.0
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setAccessibleName("Microphone level")

    def sizeHint(self) -> QSize:
        return QSize(200, 16)

    def minimumSizeHint(self) -> QSize:
        return QSize(60, 12)

    def value(self) -> float:
        return self._value

    def peak(self) -> float:
        return self._peak

    def set_value(self, value: float) -> None:
        value = _clamp(value)
        now = self._clock()
        if value >= self._peak:
            self._peak, self._peak_at = value, now
        elif now - self._peak_at > PEAK_HOLD_S:
            fallen = self._peak - PEAK_FALL_PER_S * (now - self._peak_at - PEAK_HOLD_S)
            self._peak = max(value, fallen)
        self._value = value
        self.update()

    def reset(self) -> None:
        """Back to silence (the transmission ended)."""
        self._value = self._peak = 0.0
        self.update()

    @staticmethod
    def zone_color(position: float) -> QColor:
        if position >= RED_FROM:
            return QColor(COLORS.red)
        if position >= AMBER_FROM:
            return QColor(COLORS.amber)
        return QColor(COLORS.green)

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect = QRectF(self.rect()).adjusted(0.5, 0.5, -0.5, -0.5)
        painter.setPen(QColor(COLORS.border))
        painter.setBrush(QColor(COLORS.surface_sunken))
        painter.drawRoundedRect(rect, 3, 3)

        inner = rect.adjusted(3, 3, -3, -3)
        gap = 2.0
        width = (inner.width() - gap * (SEGMENTS - 1)) / SEGMENTS
        painter.setPen(Qt.PenStyle.NoPen)
        peak_index = min(SEGMENTS - 1, int(self._peak * SEGMENTS)) if self._peak > 0.01 else -1
        for i in range(SEGMENTS):
            start = i / SEGMENTS
            colour = self.zone_color(start + 0.5 / SEGMENTS)
            lit = start < self._value or i == peak_index
            if not lit:
                colour = colour.darker(330)
            x = inner.left() + i * (width + gap)
            painter.setBrush(colour)
            painter.drawRoundedRect(QRectF(x, inner.top(), width, inner.height()), 1.5, 1.5)
        painter.end()
