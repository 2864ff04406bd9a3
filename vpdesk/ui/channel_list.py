"""The channel list: one compact row per channel, 20+ visible on a 1080p screen, fine with 50.

Each row shows an activity lamp, the channel's name and team, who is speaking, a mute
toggle, a volume slider and the "TX" target selector. Rows are kept by channel id: a
`channelChanged` refreshes one row, a `channelsReset` adds, removes and reorders rows but
keeps the ones that stay (with their focus and slider position). Lamps are repainted from
a 10 Hz timer that reads `vm.activity_level`, so a lamp fades after the activity ends
without the viewmodel sending an event per frame.

Keyboard: Tab reaches each row; on a row, Up/Down move between rows, Enter makes it the
transmit target, M toggles mute, Left/Right (or -/+) change the volume.

GUI thread only.
"""

from __future__ import annotations

import functools
import logging

from PySide6.QtCore import QPointF, QRectF, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QIcon, QPainter, QPainterPath, QPalette, QPen, QPixmap, QRadialGradient
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QScrollArea,
    QSizePolicy,
    QSlider,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from vpdesk.core.channels import ChannelState
from vpdesk.core.ptt import TxState
from vpdesk.ui.theme import COLORS

logger = logging.getLogger(__name__)

LAMP_REFRESH_MS = 100
VOLUME_STEP = 5
# Column widths shared by the rows and the header, so they line up.
LAMP_SIZE = 16
NAME_WIDTH = 180
MUTE_WIDTH = 36
SLIDER_WIDTH = 100
VOLUME_VALUE_WIDTH = 40
TX_WIDTH = 46
ROW_SPACING = 10
ROW_MARGINS = (8, 2, 10, 2)  # left (after the 4 px target stripe), top, right, bottom
# Below this list width the volume percentages hide, leaving room for "X is speaking".
COMPACT_BELOW_PX = 760


# --- small painted pieces ------------------------------------------------------------


def _mix(a: QColor, b: QColor, t: float) -> QColor:
    t = min(1.0, max(0.0, t))
    return QColor(
        round(a.red() + (b.red() - a.red()) * t),
        round(a.green() + (b.green() - a.green()) * t),
        round(a.blue() + (b.blue() - a.blue()) * t),
    )


@functools.lru_cache(maxsize=8)  # two icons serve every row; build them once
def speaker_icon(muted: bool, size: int = 22) -> QIcon:
    """A loudspeaker: with sound waves when live, red and crossed out when muted."""
    pixmap = QPixmap(size, size)
    pixmap.fill(Qt.GlobalColor.transparent)
    p = QPainter(pixmap)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    s = size / 22.0
    body = QColor(COLORS.red) if muted else QColor(COLORS.text)
    p.setPen(Qt.PenStyle.NoPen)
    p.setBrush(body)
    cone = QPainterPath()
    cone.moveTo(2 * s, 8 * s)
    cone.lineTo(6 * s, 8 * s)
    cone.lineTo(11 * s, 3.5 * s)
    cone.lineTo(11 * s, 18.5 * s)
    cone.lineTo(6 * s, 14 * s)
    cone.lineTo(2 * s, 14 * s)
    cone.closeSubpath()
    p.drawPath(cone)
    pen = QPen(body, 1.9 * s, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap)
    p.setPen(pen)
    p.setBrush(Qt.BrushStyle.NoBrush)
    if muted:
        p.drawLine(QPointF(14 * s, 7.5 * s), QPointF(20 * s, 14.5 * s))
        p.drawLine(QPointF(20 * s, 7.5 * s), QPointF(14 * s, 14.5 * s))
    else:
        p.drawArc(QRectF(7 * s, 7 * s, 8 * s, 8 * s), -45 * 16, 90 * 16)
        p.drawArc(QRectF(5 * s, 4 * s, 14 * s, 14 * s), -45 * 16, 90 * 16)
    p.end()
    return QIcon(pixmap)


class ActivityLamp(QWidget):
    """A round lamp: dark when idle, lit in `colour` scaled by `level` (0..1)."""

    def __init__(self, size: int = LAMP_SIZE, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._level = 0.0
        self._colour = QColor(COLORS.green)
        self.setFixedSize(size + 4, size + 4)  # room for the halo
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)

    def level(self) -> float:
        return self._level

    def colour(self) -> QColor:
        return QColor(self._colour)

    def set_state(self, level: float, colour: QColor) -> None:
        level = min(1.0, max(0.0, level))
        # Repaint only on a visible change: 50 lamps at 10 Hz stay cheap.
        if abs(level - self._level) < 0.02 and colour == self._colour:
            return
        self._level, self._colour = level, QColor(colour)
        self.update()

    def paintEvent(self, event) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        r = QRectF(self.rect()).adjusted(2.5, 2.5, -2.5, -2.5)
        off = QColor(COLORS.lamp_off)
        if self._level > 0.0:
            halo = QRadialGradient(r.center(), r.width() * 0.75)
            glow = QColor(self._colour)
            glow.setAlphaF(0.35 * self._level)
            halo.setColorAt(0.55, glow)
            glow.setAlphaF(0.0)
            halo.setColorAt(1.0, glow)
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(halo)
            p.drawEllipse(QRectF(self.rect()))
        fill = _mix(off, self._colour, self._level)
        p.setPen(QPen(_mix(QColor(COLORS.border_strong), self._colour.lighter(120), self._level), 1.2))
        p.setBrush(fill)
        p.drawEllipse(r)
        p.end()


class ElidedLabel(QLabel):
    """A one-line label that ends in "…" instead of widening its column; text() stays whole."""

    def __init__(self, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(text, parent)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.setMinimumWidth(0)

    def minimumSizeHint(self) -> QSize:
        return QSize(0, super().minimumSizeHint().height())

    def paintEvent(self, event) -> None:
        p = QPainter(self)
        p.setFont(self.font())
        p.setPen(self.palette().color(QPalette.ColorRole.WindowText))
        rect = self.contentsRect()
        shown = self.fontMetrics().elidedText(self.text(), Qt.TextElideMode.ElideRight, rect.width())
        p.drawText(rect, int(self.alignment() | Qt.AlignmentFlag.AlignVCenter), shown)
        p.end()


def _repolish(widget: QWidget) -> None:
    """Re-apply the stylesheet after a dynamic property it selects on has changed."""
    style = widget.style()
    style.unpolish(widget)
    style.polish(widget)
    widget.update()


# --- one row ------------------------------------------------------------------------


class ChannelRow(QFrame):
    """One channel. Emits intentions; the ChannelList turns them into viewmodel calls."""

    targetRequested = Signal(int)
    muteToggled = Signal(int, bool)
    volumeChanged = Signal(int, float)
    navigate = Signal(int, int)  # channel id, -1 up / +1 down

    def __init__(self, state: ChannelState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.channel_id = state.id
        self._state = state
        self._is_target = False
        self._own_floor = False  # the last floor seen on this channel was ours (lamp colour)
        self.setObjectName("ChannelRow")
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)

        self.lamp = ActivityLamp(parent=self)
        self.name_label = ElidedLabel(parent=self)
        self.name_label.setObjectName("ChannelName")
        self.team_label = ElidedLabel(parent=self)
        self.team_label.setObjectName("ChannelTeam")
        self.speaking_label = ElidedLabel(parent=self)
        self.speaking_label.setObjectName("Speaking")

        self.mute_button = QToolButton(self)
        self.mute_button.setObjectName("MuteButton")
        self.mute_button.setCheckable(True)
        self.mute_button.setFixedSize(MUTE_WIDTH, 30)
        self.mute_button.setIconSize(QSize(22, 22))
        self.mute_button.clicked.connect(self._on_mute_clicked)

        self.volume_slider = QSlider(Qt.Orientation.Horizontal, self)
        self.volume_slider.setRange(0, 100)
        self.volume_slider.setPageStep(10)
        self.volume_slider.setSingleStep(VOLUME_STEP)
        self.volume_slider.setFixedWidth(SLIDER_WIDTH)
        self.volume_slider.valueChanged.connect(self._on_slider)
        self.volume_value = QLabel(self)
        self.volume_value.setObjectName("VolumeValue")
        self.volume_value.setFixedWidth(VOLUME_VALUE_WIDTH)
        self.volume_value.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)

        self.tx_button = QToolButton(self)
        self.tx_button.setObjectName("TxButton")
        self.tx_button.setText("TX")
        self.tx_button.setCheckable(True)
        self.tx_button.setFixedSize(TX_WIDTH, 28)
        self.tx_button.clicked.connect(self._on_tx_clicked)

        names = QVBoxLayout()
        names.setSpacing(0)
        names.setContentsMargins(0, 0, 0, 0)
        names.addWidget(self.name_label)
        names.addWidget(self.team_label)
        name_box = QWidget(self)
        name_box.setLayout(names)
        name_box.setFixedWidth(NAME_WIDTH)
        name_box.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)

        row = QHBoxLayout(self)
        row.setContentsMargins(*ROW_MARGINS)
        row.setSpacing(ROW_SPACING)
        row.addWidget(self.lamp)
        row.addWidget(name_box)
        row.addWidget(self.speaking_label, 1)
        row.addWidget(self.mute_button)
        row.addWidget(self.volume_slider)
        row.addWidget(self.volume_value)
        row.addWidget(self.tx_button)
        self.update_state(state)
        self.set_target(False)

    # --- state in ------------------------------------------------------------------

    @property
    def state(self) -> ChannelState:
        return self._state

    @property
    def is_target(self) -> bool:
        return self._is_target

    def update_state(self, state: ChannelState) -> None:
        self._state = state
        self.name_label.setText(state.name)
        self.name_label.setToolTip(state.name if state.event == "" else f"{state.name} — {state.event}")
        self.team_label.setText(state.team or state.event)
        own = state.floor.taken and state.speaking.startswith("You ")
        if state.floor.taken:
            self._own_floor = own
        self.speaking_label.setText(state.speaking)
        self.speaking_label.setToolTip(state.speaking)
        self._set_property(self.speaking_label, "own", own)
        self._set_property(self.name_label, "muted", state.muted)
        self._set_property(self.volume_slider, "muted", state.muted)
        self._set_property(self, "onair", state.floor.taken)
        self._set_property(self, "own", own)
        self.mute_button.setChecked(state.muted)
        self.mute_button.setIcon(speaker_icon(state.muted))
        self.mute_button.setToolTip("Muted — click to unmute (M)" if state.muted else "Mute this channel (M)")
        self.mute_button.setAccessibleName(f"{state.name}: {'muted' if state.muted else 'mute'}")
        percent = round(state.volume * 100)
        if self.volume_slider.value() != percent:
            self.volume_slider.blockSignals(True)  # a refresh is not a user change
            self.volume_slider.setValue(percent)
            self.volume_slider.blockSignals(False)
        self.volume_value.setText(f"{percent}%")
        self.volume_slider.setToolTip(f"Volume of {state.name}: {percent}%")
        self.volume_slider.setAccessibleName(f"{state.name} volume")

    def set_target(self, is_target: bool) -> None:
        self._is_target = is_target
        self.tx_button.setChecked(is_target)
        self.tx_button.setToolTip("Transmit target" if is_target else "Make this the transmit target (Enter)")
        self.tx_button.setAccessibleName(f"Transmit on {self._state.name}")
        if self.property("target") != is_target:
            self.setProperty("target", is_target)
            _repolish(self)

    def set_compact(self, compact: bool) -> None:
        """Hide the volume percentage (narrow windows); the slider's tooltip still says it."""
        self.volume_value.setVisible(not compact)

    def lamp_colour(self, transmitting_here: bool) -> QColor:
        """Amber for our own transmission on this channel, green for anyone else's."""
        own = transmitting_here or self._own_floor
        return QColor(COLORS.amber if own else COLORS.green)

    # --- user in -------------------------------------------------------------------

    def mousePressEvent(self, event) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            self.targetRequested.emit(self.channel_id)
            event.accept()
            return
        super().mousePressEvent(event)

    def keyPressEvent(self, event) -> None:
        key = event.key()
        if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            self.targetRequested.emit(self.channel_id)
        elif key == Qt.Key.Key_M:
            self.muteToggled.emit(self.channel_id, not self._state.muted)
        elif key in (Qt.Key.Key_Left, Qt.Key.Key_Minus):
            self.volume_slider.setValue(self.volume_slider.value() - VOLUME_STEP)
        elif key in (Qt.Key.Key_Right, Qt.Key.Key_Plus, Qt.Key.Key_Equal):
            self.volume_slider.setValue(self.volume_slider.value() + VOLUME_STEP)
        elif key == Qt.Key.Key_Up:
            self.navigate.emit(self.channel_id, -1)
        elif key == Qt.Key.Key_Down:
            self.navigate.emit(self.channel_id, +1)
        else:
            super().keyPressEvent(event)

    def _on_mute_clicked(self, checked: bool) -> None:
        # Show the channel's real state until the viewmodel confirms the change.
        self.mute_button.setChecked(self._state.muted)
        self.muteToggled.emit(self.channel_id, checked)

    def _on_slider(self, value: int) -> None:
        self.volume_value.setText(f"{value}%")
        self.volumeChanged.emit(self.channel_id, value / 100.0)

    def _on_tx_clicked(self) -> None:
        self.targetRequested.emit(self.channel_id)
        # A click toggles the button; it shows the viewmodel's target, not the click.
        self.tx_button.setChecked(self._is_target)

    def _set_property(self, widget: QWidget, name: str, value: bool) -> None:
        if widget.property(name) != value:
            widget.setProperty(name, value)
            _repolish(widget)


# --- the list -----------------------------------------------------------------------


class _ColumnHeader(QFrame):
    """Column titles aligned with the rows; the first two carry the counts."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("ChannelHeader")

        def title(text: str, width: int | None = None, align=Qt.AlignmentFlag.AlignLeft) -> QLabel:
            label = QLabel(text, self)
            label.setObjectName("ColumnTitle")
            label.setAlignment(align | Qt.AlignmentFlag.AlignVCenter)
            if width is not None:
                label.setFixedWidth(width)
            return label

        self._layout = QHBoxLayout(self)
        self._layout.setSpacing(ROW_SPACING)
        self.set_right_inset(0)
        spacer = QWidget(self)
        spacer.setFixedWidth(LAMP_SIZE + 4)
        self._layout.addWidget(spacer)
        self.channels_title = title("CHANNELS", NAME_WIDTH)
        self.on_air_title = title("ON AIR")
        self._layout.addWidget(self.channels_title)
        self._layout.addWidget(self.on_air_title, 1)
        self._layout.addWidget(title("MUTE", MUTE_WIDTH, Qt.AlignmentFlag.AlignHCenter))
        self.volume_title = title("VOLUME", None, Qt.AlignmentFlag.AlignHCenter)
        self._layout.addWidget(self.volume_title)
        self.set_compact(False)
        self._layout.addWidget(title("TX", TX_WIDTH, Qt.AlignmentFlag.AlignHCenter))

    def set_compact(self, compact: bool) -> None:
        self.volume_title.setFixedWidth(SLIDER_WIDTH + (0 if compact else ROW_SPACING + VOLUME_VALUE_WIDTH))

    def set_right_inset(self, scrollbar_width: int) -> None:
        left, _, right, _ = ROW_MARGINS
        # Rows sit inside the scroll area's 6 px gutter and have a 1 px border / 4 px stripe.
        self._layout.setContentsMargins(6 + 4 + left, 6, 6 + 1 + right + scrollbar_width, 6)


class ChannelList(QWidget):
    """All channels of the viewmodel `vm` as rows. GUI thread only."""

    def __init__(self, vm, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._vm = vm
        self._rows: dict[int, ChannelRow] = {}
        self._compact = False

        self.header = _ColumnHeader(self)
        self._rows_widget = QWidget()
        self._rows_widget.setObjectName("ChannelRows")
        self._rows_layout = QVBoxLayout(self._rows_widget)
        self._rows_layout.setContentsMargins(6, 6, 6, 6)
        self._rows_layout.setSpacing(2)
        self._rows_layout.addStretch(1)
        self.empty_label = QLabel("No channels yet — waiting for the server", self._rows_widget)
        self.empty_label.setObjectName("EmptyList")
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._rows_layout.insertWidget(0, self.empty_label)

        self.scroll = QScrollArea(self)
        self.scroll.setWidgetResizable(True)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.scroll.setWidget(self._rows_widget)
        bar = self.scroll.verticalScrollBar()
        bar.rangeChanged.connect(lambda lo, hi: self.header.set_right_inset(bar.sizeHint().width() if hi > lo else 0))

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.header)
        layout.addWidget(self.scroll, 1)

        self._lamp_timer = QTimer(self)
        self._lamp_timer.setInterval(LAMP_REFRESH_MS)
        self._lamp_timer.timeout.connect(self.refresh_lamps)
        self._lamp_timer.start()

        vm.channelsReset.connect(self.rebuild)
        vm.channelChanged.connect(self.refresh_channel)
        vm.targetChanged.connect(self._on_target_changed)
        vm.txStateChanged.connect(lambda _state: self.refresh_lamps())
        self.rebuild()

    # --- reading (tests, the main window) -------------------------------------------

    def row(self, channel_id: int) -> ChannelRow:
        return self._rows[channel_id]

    def row_ids(self) -> list[int]:
        """Channel ids in display order."""
        ids = []
        for i in range(self._rows_layout.count()):
            widget = self._rows_layout.itemAt(i).widget()
            if isinstance(widget, ChannelRow):
                ids.append(widget.channel_id)
        return ids

    # --- viewmodel in -------------------------------------------------------------------

    def rebuild(self) -> None:
        """The channel set or order changed: keep rows that stay, add and drop the rest."""
        states = self._vm.channels()
        wanted = [s.id for s in states]
        for cid in list(self._rows):
            if cid not in wanted:
                row = self._rows.pop(cid)
                self._rows_layout.removeWidget(row)
                row.deleteLater()
        for index, state in enumerate(states):
            row = self._rows.get(state.id)
            if row is None:
                row = ChannelRow(state, self._rows_widget)
                row.targetRequested.connect(self._vm.set_target)
                row.muteToggled.connect(self._vm.set_muted)
                row.volumeChanged.connect(self._vm.set_volume)
                row.navigate.connect(self._move_focus)
                row.set_compact(self._compact)
                self._rows[state.id] = row
            else:
                self._rows_layout.removeWidget(row)
                row.update_state(state)
            self._rows_layout.insertWidget(index, row)
        self.empty_label.setVisible(not states)
        self._show_target(self._vm.target)
        self._update_summary()
        self.refresh_lamps()
        logger.debug("ChannelList: %d rows", len(self._rows))

    def refresh_channel(self, channel_id: int) -> None:
        row = self._rows.get(channel_id)
        if row is None:
            logger.debug("ChannelList: change for channel %s without a row; rebuilding", channel_id)
            self.rebuild()
            return
        row.update_state(self._vm.channel(channel_id))
        self._update_summary()

    def refresh_lamps(self) -> None:
        transmitting = self._vm.tx_state is TxState.TRANSMITTING
        # The real viewmodel says which channel the transmission is on; else the target.
        tx_channel = getattr(self._vm, "tx_channel", self._vm.target)
        for cid, row in self._rows.items():
            here = transmitting and cid == tx_channel
            row.lamp.set_state(self._vm.activity_level(cid), row.lamp_colour(here))

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        compact = self.width() < COMPACT_BELOW_PX
        if compact != self._compact:
            self._compact = compact
            self.header.set_compact(compact)
            for row in self._rows.values():
                row.set_compact(compact)

    def _show_target(self, target) -> None:
        for cid, row in self._rows.items():
            row.set_target(cid == target)

    def _on_target_changed(self, target) -> None:
        self._show_target(target)
        # A new target scrolls into view; a rebuild does not move the dispatcher's scroll.
        if target in self._rows:
            self.scroll.ensureWidgetVisible(self._rows[target], 0, 0)

    def _update_summary(self) -> None:
        talking = sum(1 for row in self._rows.values() if row.state.floor.taken)
        self.header.channels_title.setText(f"CHANNELS  {len(self._rows)}")
        self.header.on_air_title.setText(f"ON AIR  {talking}" if talking else "ON AIR")

    def _move_focus(self, channel_id: int, step: int) -> None:
        ids = self.row_ids()
        if channel_id not in ids:
            return
        index = min(len(ids) - 1, max(0, ids.index(channel_id) + step))
        row = self._rows[ids[index]]
        row.setFocus(Qt.FocusReason.OtherFocusReason)
        self.scroll.ensureWidgetVisible(row, 0, 8)
