"""The transmit side of the console: target channel, the big PTT button, the TX indicator.

`PttButton` is a round walkie-talkie button; a mouse press and release become
`vm.press("mouse")` / `vm.release("mouse")`. Its colour and words follow the transmitter:
idle (blue-grey), requesting (amber), transmitting (red, "TRANSMITTING"), denied
(flashing orange, "BUSY"). Above it, the target channel's name and a banner with who is
speaking there; below, the microphone level, the talk-time countdown, and the PTT mode
and key.

The button takes no keyboard focus: the keyboard PTT key is handled once, by the main
window, so Space on a focused button cannot press twice.

GUI thread only.
"""

from __future__ import annotations

import logging

from PySide6.QtCore import QPointF, QRectF, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QFont, QPainter, QPainterPath, QPen, QRadialGradient
from PySide6.QtWidgets import (
    QAbstractButton,
    QFrame,
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from vpdesk.core.connection import ConnectionState
from vpdesk.core.ptt import PttMode, TxState
from vpdesk.ui.level_meter import LevelMeter
from vpdesk.ui.theme import COLORS, FONT_FAMILIES

logger = logging.getLogger(__name__)

BUTTON_SIZE = 220
DENIED_FLASH_MS = 280
COUNTDOWN_REFRESH_MS = 250
LOW_TALK_TIME_S = 10.0

MODE_TEXT = {PttMode.HOLD: "Hold to talk", PttMode.TOGGLE: "Toggle"}
MODE_HELP = {
    PttMode.HOLD: "Talk while the button or key is held down",
    PttMode.TOGGLE: "Press once to start talking, press again to stop",
}


def format_remaining(seconds: float | None) -> str:
    """ "0:42 left" for the talk-time countdown; "" when there is no limit."""
    if seconds is None:
        return ""
    whole = max(0, int(seconds + 0.999))  # 0.2 s left still reads "0:01"
    return f"{whole // 60}:{whole % 60:02d} left"


def _repolish(widget: QWidget) -> None:
    widget.style().unpolish(widget)
    widget.style().polish(widget)
    widget.update()


class PttButton(QAbstractButton):
    """The round push-to-talk button. Its face follows `set_face`; it holds no PTT logic.

    `pttPressed` on a left press inside the round face, `pttReleased` on the left release
    wherever it happens. Unlike a normal button, sliding off the face does not let go
    (a hand that drifts should not cut the transmission) and a release outside it still
    ends the press (QAbstractButton would only un-press silently: a stuck transmitter).
    """

    pttPressed = Signal()
    pttReleased = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._held = False
        self._tx_state = TxState.IDLE
        self._usable = True  # connected and with a target: pressing may work
        self._flash_on = False
        self._flash = QTimer(self)
        self._flash.setInterval(DENIED_FLASH_MS)
        self._flash.timeout.connect(self._toggle_flash)
        self.setFixedSize(BUTTON_SIZE, BUTTON_SIZE)
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setAccessibleName("Push to talk")
        self.setText("PUSH TO TALK")

    @property
    def tx_state(self) -> TxState:
        return self._tx_state

    @property
    def held(self) -> bool:
        return self._held

    def hitButton(self, pos) -> bool:
        centre = QPointF(self.width() / 2, self.height() / 2)
        radius = min(self.width(), self.height()) / 2
        offset = QPointF(pos) - centre
        return offset.x() ** 2 + offset.y() ** 2 <= radius**2

    def mousePressEvent(self, event) -> None:
        if event.button() != Qt.MouseButton.LeftButton or not self.hitButton(event.position()):
            event.ignore()
            return
        event.accept()
        if not self._held:
            self._held = True
            self.setDown(True)
            self.pttPressed.emit()

    def mouseMoveEvent(self, event) -> None:
        event.accept()  # stay pressed while the mouse button is down, on the face or not

    def mouseReleaseEvent(self, event) -> None:
        if event.button() != Qt.MouseButton.LeftButton:
            event.ignore()
            return
        event.accept()
        self._let_go()

    def hideEvent(self, event) -> None:
        self._let_go()
        super().hideEvent(event)

    def _let_go(self) -> None:
        if self._held:
            self._held = False
            self.setDown(False)
            self.pttReleased.emit()

    def sizeHint(self) -> QSize:
        return QSize(BUTTON_SIZE, BUTTON_SIZE)

    def set_face(self, tx_state: TxState, mode: PttMode, *, connected: bool, has_target: bool) -> None:
        self._tx_state = tx_state
        self._usable = connected and has_target
        if tx_state is TxState.TRANSMITTING:
            text = "TRANSMITTING"
        elif tx_state is TxState.REQUESTING:
            text = "REQUESTING…"
        elif tx_state is TxState.CANCELLING:
            text = "RELEASING…"
        elif tx_state is TxState.DENIED:
            text = "BUSY"
        elif not connected:
            text = "OFFLINE"
        elif not has_target:
            text = "NO CHANNEL"
        else:
            text = "PUSH TO TALK" if mode is PttMode.HOLD else "PRESS TO TALK"
        self.setText(text)
        if tx_state is TxState.DENIED:
            if not self._flash.isActive():
                self._flash_on = True
                self._flash.start()
        else:
            self._flash.stop()
            self._flash_on = False
        self.update()

    def _toggle_flash(self) -> None:
        self._flash_on = not self._flash_on
        self.update()

    def _face_colours(self) -> tuple[QColor, QColor]:
        """(disc colour, text colour) for the current state."""
        dark_text = QColor(COLORS.window)
        state = self._tx_state
        if state is TxState.TRANSMITTING:
            return QColor(COLORS.red), QColor("#ffffff")
        if state is TxState.REQUESTING:
            return QColor(COLORS.amber), dark_text
        if state is TxState.CANCELLING:
            return QColor(COLORS.amber).darker(140), dark_text
        if state is TxState.DENIED:
            orange = QColor(COLORS.orange)
            return (orange if self._flash_on else orange.darker(170)), QColor("#ffffff")
        if not self._usable:
            return QColor(COLORS.surface_alt), QColor(COLORS.text_dim)
        return QColor(COLORS.ptt_idle), QColor(COLORS.text)

    def paintEvent(self, event) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        side = min(self.width(), self.height())
        outer = QRectF((self.width() - side) / 2 + 2, (self.height() - side) / 2 + 2, side - 4, side - 4)
        disc, text_colour = self._face_colours()
        if self.underMouse() and not self.isDown():
            disc = disc.lighter(110)
        if self.isDown():
            disc = disc.darker(115)

        # Bezel: a dark ring, like the rubber around a radio's PTT key.
        bezel = QRadialGradient(outer.center(), outer.width() / 2)
        bezel.setColorAt(0.85, QColor("#14181d"))
        bezel.setColorAt(1.0, QColor("#2a313a"))
        p.setPen(QPen(QColor(COLORS.border_strong), 1.5))
        p.setBrush(bezel)
        p.drawEllipse(outer)

        inset = 11 if not self.isDown() else 13
        face = outer.adjusted(inset, inset, -inset, -inset)
        gradient = QRadialGradient(face.center() - QPointF(0, face.height() * 0.18), face.width() * 0.62)
        gradient.setColorAt(0.0, disc.lighter(125))
        gradient.setColorAt(1.0, disc)
        p.setPen(QPen(disc.darker(150), 2))
        p.setBrush(gradient)
        p.drawEllipse(face)

        # A microphone glyph above the words.
        cx, top = face.center().x(), face.top() + face.height() * 0.2
        s = face.width() / 200.0
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(text_colour)
        p.drawRoundedRect(QRectF(cx - 9 * s, top, 18 * s, 32 * s), 9 * s, 9 * s)
        stand = QPainterPath()
        stand.arcMoveTo(QRectF(cx - 15 * s, top + 8 * s, 30 * s, 32 * s), 180)
        stand.arcTo(QRectF(cx - 15 * s, top + 8 * s, 30 * s, 32 * s), 180, 180)
        p.setPen(QPen(text_colour, 3.2 * s, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap))
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.drawPath(stand)
        p.drawLine(QPointF(cx, top + 40 * s), QPointF(cx, top + 47 * s))

        font = QFont()
        font.setFamilies(FONT_FAMILIES)
        font.setBold(True)
        font.setPixelSize(max(12, round(face.width() * 0.1)))
        font.setLetterSpacing(QFont.SpacingType.PercentageSpacing, 104)
        p.setFont(font)
        p.setPen(text_colour)
        words = QRectF(face.left() + 8, face.center().y() + 2 * s, face.width() - 16, face.height() * 0.28)
        p.drawText(words, int(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop), self.text())
        p.end()


class PttPanel(QWidget):
    """Target, banner, PTT button and TX indicator for the viewmodel `vm`. GUI thread only."""

    def __init__(self, vm, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._vm = vm
        self.setObjectName("PttPanel")
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground)
        self.setMinimumWidth(300)

        caption = QLabel("TRANSMIT ON", self)
        caption.setObjectName("Caption")
        self.target_label = QLabel(self)
        self.target_label.setObjectName("TargetName")
        self.target_label.setWordWrap(True)
        self.team_label = QLabel(self)
        self.team_label.setObjectName("TargetTeam")
        self.banner = QLabel(self)
        self.banner.setObjectName("Banner")
        self.banner.setWordWrap(True)
        self.banner.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.banner.setMinimumHeight(44)

        self.button = PttButton(self)
        self.button.pttPressed.connect(lambda: self._vm.press("mouse"))
        self.button.pttReleased.connect(lambda: self._vm.release("mouse"))

        self.tx_box = QFrame(self)
        self.tx_box.setObjectName("TxBox")
        self.tx_label = QLabel("TX", self.tx_box)
        self.tx_label.setObjectName("TxLabel")
        self.meter = LevelMeter(self.tx_box)
        self.meter.setFixedHeight(18)
        self.countdown_label = QLabel(self.tx_box)
        self.countdown_label.setObjectName("Countdown")
        self.countdown_label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        tx_top = QHBoxLayout()
        tx_top.addWidget(self.tx_label)
        tx_top.addStretch(1)
        tx_top.addWidget(self.countdown_label)
        tx_layout = QVBoxLayout(self.tx_box)
        tx_layout.setContentsMargins(12, 8, 12, 10)
        tx_layout.setSpacing(6)
        tx_layout.addLayout(tx_top)
        tx_layout.addWidget(self.meter)

        self.mode_label = QLabel(self)
        self.mode_label.setObjectName("ModeText")
        key_caption = QLabel("Key", self)
        key_caption.setObjectName("ModeText")
        self.key_label = QLabel(self)
        self.key_label.setObjectName("KeyCap")
        mode_row = QHBoxLayout()
        mode_row.setSpacing(8)
        mode_row.addWidget(self.mode_label)
        mode_row.addStretch(1)
        mode_row.addWidget(key_caption)
        mode_row.addWidget(self.key_label)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(20, 16, 20, 16)
        layout.setSpacing(8)
        layout.addWidget(caption)
        layout.addWidget(self.target_label)
        layout.addWidget(self.team_label)
        layout.addSpacing(6)
        layout.addWidget(self.banner)
        layout.addStretch(1)
        layout.addWidget(self.button, 0, Qt.AlignmentFlag.AlignHCenter)
        layout.addStretch(1)
        layout.addWidget(self.tx_box)
        layout.addLayout(mode_row)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)

        self._countdown = QTimer(self)
        self._countdown.setInterval(COUNTDOWN_REFRESH_MS)
        self._countdown.timeout.connect(self._refresh_countdown)

        vm.targetChanged.connect(lambda _t: self.refresh())
        vm.channelsReset.connect(self.refresh)
        vm.channelChanged.connect(self._on_channel_changed)
        vm.txStateChanged.connect(lambda _s: self.refresh())
        vm.connectionChanged.connect(lambda _s, _d: self.refresh())
        vm.pttModeChanged.connect(lambda _m: self.refresh_mode())
        vm.micLevel.connect(self._on_mic_level)
        self.refresh()
        self.refresh_mode()

    # --- viewmodel in -------------------------------------------------------------------

    def refresh(self) -> None:
        """Re-read target, transmitter and connection from the viewmodel."""
        vm = self._vm
        state = self._target_state()
        tx = vm.tx_state
        connected = vm.connection_state is ConnectionState.CONNECTED
        if state is None:
            self.target_label.setText("No channel selected")
            self.team_label.setText("Click a channel's TX button to talk on it")
        else:
            self.target_label.setText(state.name)
            self.team_label.setText(" · ".join(x for x in (state.team, state.event) if x))
        if self.target_label.property("none") != (state is None):
            self.target_label.setProperty("none", state is None)
            _repolish(self.target_label)
        self._refresh_banner(state, tx, connected)
        self.button.set_face(tx, vm.ptt_mode, connected=connected, has_target=state is not None)

        live = tx is TxState.TRANSMITTING
        self.tx_label.setText("ON AIR" if live else "TX")
        for widget in (self.tx_box, self.tx_label):
            if widget.property("live") != live:
                widget.setProperty("live", live)
                _repolish(widget)
        if live:
            if not self._countdown.isActive():
                self._countdown.start()
            self._refresh_countdown()
        else:
            self._countdown.stop()
            self.countdown_label.setText("")
            self.meter.reset()

    def refresh_mode(self) -> None:
        """PTT mode and key (after pttModeChanged or new settings)."""
        mode = self._vm.ptt_mode
        self.mode_label.setText(MODE_TEXT.get(mode, str(mode)))
        self.mode_label.setToolTip(MODE_HELP.get(mode, ""))
        self.key_label.setText(self._vm.settings.ptt_key or "none")
        self.refresh()

    def _on_channel_changed(self, channel_id: int) -> None:
        if channel_id == self._vm.target:
            self.refresh()

    def _on_mic_level(self, level: float) -> None:
        if self._vm.tx_state is TxState.TRANSMITTING:
            self.meter.set_value(level)

    # --- pieces -------------------------------------------------------------------------

    def _target_state(self):
        target = self._vm.target
        if target is None:
            return None
        try:
            return self._vm.channel(target)
        except KeyError:  # the target left the channel list before the viewmodel noticed
            return None

    def _refresh_banner(self, state, tx: TxState, connected: bool) -> None:
        if tx is TxState.DENIED:
            holder = self._vm.denied_holder()
            text, kind = (f"Channel busy — {holder} is speaking" if holder else "Channel busy"), "denied"
        elif state is not None and state.speaking:
            own = state.speaking.startswith("You ") or tx is TxState.TRANSMITTING
            text, kind = state.speaking, ("own" if own else "speaking")
        elif tx is TxState.TRANSMITTING:
            text, kind = "You are speaking", "own"
        elif not connected:
            text, kind = "Not connected", ""  # "clear" would be a guess
        elif state is not None:
            text, kind = "Channel clear", ""
        else:
            text, kind = "", ""
        self.banner.setText(text)
        if self.banner.property("kind") != kind:
            self.banner.setProperty("kind", kind)
            _repolish(self.banner)

    def _refresh_countdown(self) -> None:
        remaining = self._vm.talk_remaining_s()
        self.countdown_label.setText(format_remaining(remaining))
        low = remaining is not None and remaining <= LOW_TALK_TIME_S
        if self.countdown_label.property("low") != low:
            self.countdown_label.setProperty("low", low)
            _repolish(self.countdown_label)
