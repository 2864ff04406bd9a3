"""The console's main window: connection bar, channel list, PTT panel, status bar, menus.

Keyboard PTT lives here, once for the whole window: an application-level event filter
turns the configured key (`vm.settings.ptt_key`) into `vm.press("keyboard")` /
`vm.release("keyboard")` whichever child has focus, ignores auto-repeat, and stays out of
the way of dialogs and text fields. When the window loses activation every PTT source is
released: a transmitter stuck on because the key-up went to another program is worse than
a dropped press.

GUI thread only.
"""

from __future__ import annotations

import logging

from PySide6.QtCore import QByteArray, QEvent, QObject, Qt, Signal
from PySide6.QtGui import QAction, QColor, QKeySequence
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QApplication,
    QComboBox,
    QDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTextEdit,
    QVBoxLayout,
    QWidget,
)

from vpdesk.core.connection import ConnectionState
from vpdesk.ui.channel_list import ActivityLamp, ChannelList
from vpdesk.ui.management import ManagementWindow
from vpdesk.ui.preferences import PreferencesDialog, PttKey, parse_ptt_key
from vpdesk.ui.ptt_panel import PttPanel
from vpdesk.ui.theme import COLORS
from vpdesk.viewmodels.management import MANAGING_ROLES, ManagementViewModel

logger = logging.getLogger(__name__)

MESSAGE_TIMEOUT_MS = 6000
# The PTT panel's share of the window: the channels get the rest.
PTT_PANEL_SHARE = 0.27
PTT_PANEL_WIDTH = (320, 420)  # clamped to this range
_STATE_SEPARATOR = ";"  # between the two base64 parts of the saved state (not in base64)

CONNECTION_LABELS = {
    ConnectionState.CONNECTED: "Connected",
    ConnectionState.CONNECTING: "Connecting…",
    ConnectionState.RECONNECTING: "Reconnecting…",
    ConnectionState.DISCONNECTED: "Disconnected",
    ConnectionState.FAILED: "Sign-in failed",
}
CONNECTION_COLOURS = {
    ConnectionState.CONNECTED: COLORS.green,
    ConnectionState.CONNECTING: COLORS.amber,
    ConnectionState.RECONNECTING: COLORS.amber,
    ConnectionState.DISCONNECTED: COLORS.text_faint,
    ConnectionState.FAILED: COLORS.red,
}
_TEXT_INPUTS = (QLineEdit, QTextEdit, QPlainTextEdit, QAbstractSpinBox)


def _to_base64(data: QByteArray) -> str:
    return bytes(data.toBase64()).decode("ascii")


def _from_base64(text: str) -> QByteArray:
    return QByteArray.fromBase64(text.encode("ascii"))


class PttKeyFilter(QObject):
    """Application-level key filter: the PTT key on `window` → vm.press/release("keyboard")."""

    def __init__(self, window: MainWindow, vm) -> None:
        super().__init__(window)
        self._window = window
        self._vm = vm
        self._held = False
        self._key_text: str | None = None
        self._key: PttKey | None = None

    @property
    def held(self) -> bool:
        return self._held

    def forget_press(self) -> None:
        """The press was released some other way (release_all)."""
        self._held = False

    def _ptt_key(self) -> PttKey | None:
        text = self._vm.settings.ptt_key
        if text != self._key_text:  # parse once per setting, not per key event
            self._key_text, self._key = text, parse_ptt_key(text)
            if self._key is None:
                logger.warning("MainWindow: PTT key %r is not a key; keyboard PTT is off", text)
        return self._key

    def _for_our_window(self, receiver: QObject) -> bool:
        if isinstance(receiver, QWidget):
            if receiver.window() is not self._window:
                return False
        elif receiver is not self._window.windowHandle():
            return False
        focus = QApplication.focusWidget()
        if focus is None or focus.window() is not self._window:
            return True
        # Typing a space is typing, not talking (the window has no text field today).
        typing = isinstance(focus, _TEXT_INPUTS) or (isinstance(focus, QComboBox) and focus.isEditable())
        return not typing

    def eventFilter(self, receiver: QObject, event: QEvent) -> bool:
        kind = event.type()
        if kind not in (QEvent.Type.KeyPress, QEvent.Type.KeyRelease):
            return False
        key = self._ptt_key()
        if key is None or not self._for_our_window(receiver):
            return False
        if kind == QEvent.Type.KeyPress:
            if not key.matches_press(event):
                return False
            if not event.isAutoRepeat() and not self._held:
                self._held = True
                self._vm.press("keyboard")
            return True  # consumed: a focused button must not see the PTT key too
        if not key.matches_release(event):
            return False
        if not event.isAutoRepeat() and self._held:
            self._held = False
            self._vm.release("keyboard")
        return True


class ConnectionIndicator(QWidget):
    """A coloured dot and the connection's words."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.dot = ActivityLamp(12, self)
        self.label = QLabel(self)
        self.label.setObjectName("ConnectionText")
        self.state = ConnectionState.DISCONNECTED
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(6)
        layout.addWidget(self.dot)
        layout.addWidget(self.label)

    def set_connection(self, state: ConnectionState, detail: str) -> None:
        self.state = state
        self.dot.set_state(1.0, QColor(CONNECTION_COLOURS.get(state, COLORS.text_faint)))
        label = CONNECTION_LABELS.get(state, state.value)
        self.label.setText(detail or label)
        self.setToolTip(label)

    def text(self) -> str:
        return self.label.text()


class MainWindow(QMainWindow):
    """The dispatcher's window over the viewmodel `vm`. GUI thread only.

    `closing` is emitted from closeEvent, before the window goes away, so the owner can
    save `saved_geometry()` and shut the session down.
    """

    closing = Signal()

    def __init__(self, vm, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._vm = vm
        self._sized = False
        self.setWindowTitle("vpdesk — Dispatch console")
        self.setMinimumSize(900, 600)
        self.resize(1400, 900)

        self.connection = ConnectionIndicator()
        self.user_label = QLabel()
        self.user_label.setObjectName("UserName")
        self.role_label = QLabel()
        self.role_label.setObjectName("UserRole")
        title = QLabel("vpdesk")
        title.setObjectName("AppTitle")
        top = QFrame()
        top.setObjectName("TopBar")
        top_layout = QHBoxLayout(top)
        top_layout.setContentsMargins(16, 8, 16, 8)
        top_layout.setSpacing(12)
        top_layout.addWidget(title)
        divider = QFrame()
        divider.setFrameShape(QFrame.Shape.VLine)
        divider.setStyleSheet(f"color: {COLORS.border_strong};")
        top_layout.addWidget(divider)
        top_layout.addWidget(self.connection)
        top_layout.addStretch(1)
        # Admin and dispatch users manage the site from here (the panel; hidden for others).
        self.manage_button = QPushButton("Manage…")
        self.manage_button.setToolTip("Events, teams, channels and who is on them")
        self.manage_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # Space stays the PTT key
        self.manage_button.clicked.connect(self.open_management)
        top_layout.addWidget(self.manage_button)
        top_layout.addWidget(self.user_label)
        top_layout.addWidget(self.role_label)

        self.channel_list = ChannelList(vm)
        self.ptt_panel = PttPanel(vm)
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(self.channel_list)
        self.splitter.addWidget(self.ptt_panel)
        self.splitter.setStretchFactor(0, 1)
        self.splitter.setStretchFactor(1, 0)
        self.splitter.setChildrenCollapsible(False)

        central = QWidget()
        central_layout = QVBoxLayout(central)
        central_layout.setContentsMargins(0, 0, 0, 0)
        central_layout.setSpacing(0)
        central_layout.addWidget(top)
        central_layout.addWidget(self.splitter, 1)
        self.setCentralWidget(central)

        self.audio_label = QLabel()
        self.audio_label.setObjectName("AudioProblem")
        self.statusBar().addPermanentWidget(self.audio_label)
        self.statusBar().setSizeGripEnabled(False)

        self.management: ManagementWindow | None = None
        self._build_menus()

        self.key_filter = PttKeyFilter(self, vm)
        QApplication.instance().installEventFilter(self.key_filter)

        vm.connectionChanged.connect(self._on_connection_changed)
        vm.message.connect(self.show_message)
        vm.audioStatus.connect(self._on_audio_status)
        self._on_connection_changed(vm.connection_state.value, vm.connection_detail)
        self._on_audio_status(vm.audio_problem)

    # --- menus -------------------------------------------------------------------------

    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        self.preferences_action = QAction("&Preferences…", self)
        self.preferences_action.setShortcuts([QKeySequence("Ctrl+,"), QKeySequence(QKeySequence.StandardKey.Preferences)])
        self.preferences_action.triggered.connect(self.open_preferences)
        file_menu.addAction(self.preferences_action)
        self.manage_action = QAction("&Manage site…", self)
        self.manage_action.setShortcut(QKeySequence("Ctrl+M"))
        self.manage_action.triggered.connect(self.open_management)
        file_menu.addAction(self.manage_action)
        file_menu.addSeparator()
        self.quit_action = QAction("&Quit", self)
        self.quit_action.setShortcut(QKeySequence("Ctrl+Q"))
        self.quit_action.triggered.connect(self.close)
        file_menu.addAction(self.quit_action)
        help_menu = self.menuBar().addMenu("&Help")
        self.about_action = QAction("&About vpdesk", self)
        self.about_action.triggered.connect(self.show_about)
        help_menu.addAction(self.about_action)

    def make_preferences_dialog(self) -> PreferencesDialog:
        vm = self._vm
        return PreferencesDialog(vm.settings, vm.input_devices(), vm.output_devices(), vm.test_tone, self)

    def open_preferences(self) -> QDialog:
        """Show the preferences window-modal, without a nested event loop (exec() would
        stall the asyncio tasks sharing this loop, the embedded server among them)."""
        dialog = self.make_preferences_dialog()

        def finished(result: int) -> None:
            if result == QDialog.DialogCode.Accepted:
                self.apply_preferences(dialog)
            dialog.deleteLater()

        dialog.finished.connect(finished)
        dialog.open()
        return dialog

    def apply_preferences(self, dialog: PreferencesDialog) -> None:
        self._vm.apply_settings(dialog.result_settings())
        self.ptt_panel.refresh_mode()

    def can_manage(self) -> bool:
        return self._vm.user_role in MANAGING_ROLES

    def open_management(self) -> ManagementWindow | None:
        """Show the management panel (one at a time), for admin and dispatch users."""
        if not self.can_manage():
            return None
        if self.management is None:
            vm = ManagementViewModel.for_session(self._vm.session, self._vm.user_role)
            self.management = ManagementWindow(vm, self._vm.user_name)
            self.management.closed.connect(self._management_closed)
        self.management.show()
        self.management.raise_()
        self.management.activateWindow()
        return self.management

    def _management_closed(self) -> None:
        self.management = None

    def show_about(self) -> None:
        QMessageBox.about(
            self,
            "About vpdesk",
            "<h3>vpdesk</h3><p>Push-to-talk dispatch console.</p>"
            f"<p>Talk: hold the PTT button or the <b>{self._vm.settings.ptt_key}</b> key.<br>"
            "On a channel row: <b>Enter</b> makes it the transmit target, <b>M</b> mutes, "
            "<b>←/→</b> change the volume, <b>↑/↓</b> move between channels.</p>",
        )

    # --- viewmodel in ------------------------------------------------------------------

    def _on_connection_changed(self, state_value: str, detail: str) -> None:
        try:
            state = ConnectionState(state_value)
        except ValueError:
            state = self._vm.connection_state
        self.connection.set_connection(state, detail)
        self.user_label.setText(self._vm.user_name or "")
        role = self._vm.user_role or ""
        self.role_label.setText(role.upper())
        self.role_label.setVisible(bool(role))
        manage = self.can_manage()
        self.manage_button.setVisible(manage)
        self.manage_action.setVisible(manage)
        self.manage_action.setEnabled(manage)

    def show_message(self, text: str) -> None:
        self.statusBar().showMessage(text, MESSAGE_TIMEOUT_MS)

    def _on_audio_status(self, text: str) -> None:
        self.audio_label.setText(f"⚠ {text}" if text else "")
        self.audio_label.setVisible(bool(text))

    # --- window events -----------------------------------------------------------------

    def showEvent(self, event) -> None:
        if not self._sized:
            # First show: split for the real window size, unless a saved split was restored.
            self._sized = True
            low, high = PTT_PANEL_WIDTH
            panel = min(high, max(low, round(self.width() * PTT_PANEL_SHARE)))
            self.splitter.setSizes([max(1, self.width() - panel), panel])
        super().showEvent(event)

    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.WindowDeactivate:
            self._release_everything("window deactivated")
        return super().event(event)

    def hideEvent(self, event) -> None:
        self._release_everything("window hidden")
        super().hideEvent(event)

    def closeEvent(self, event) -> None:
        self._release_everything("window closing")
        if self.management is not None:
            self.management.close()
        self.closing.emit()
        super().closeEvent(event)

    def _release_everything(self, why: str) -> None:
        logger.debug("MainWindow: releasing all PTT sources: %s", why)
        self.key_filter.forget_press()
        self._vm.release_all()

    # --- geometry ----------------------------------------------------------------------

    def saved_geometry(self) -> tuple[str, str]:
        """(geometry, state) as base64 text for Settings.window_geometry / window_state.

        The state holds the main window's state and the splitter's, joined by ";".
        """
        state = _to_base64(self.saveState()) + _STATE_SEPARATOR + _to_base64(self.splitter.saveState())
        return _to_base64(self.saveGeometry()), state

    def restore_geometry(self, geometry: str | None, state: str | None) -> bool:
        """Restore what saved_geometry() gave; bad or missing parts are skipped. Returns
        True when the geometry itself was restored."""
        restored = False
        try:
            if geometry:
                restored = self.restoreGeometry(_from_base64(geometry))
            if state:
                main, _, splitter = state.partition(_STATE_SEPARATOR)
                if main:
                    self.restoreState(_from_base64(main))
                if splitter and self.splitter.restoreState(_from_base64(splitter)):
                    self._sized = True  # the dispatcher's own split beats the default
        except (UnicodeEncodeError, ValueError) as exc:
            logger.warning("MainWindow: ignoring unreadable saved geometry: %s", exc)
        return restored
