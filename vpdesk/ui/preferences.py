"""The Preferences dialog (PTT mode and key, audio devices, tones) and PTT key names.

The key is stored as text (`Settings.ptt_key`): a `QKeySequence` string such as "Space",
"F12" or "Ctrl+F1", or a lone modifier ("Ctrl", "Shift", "Alt", "Meta", "AltGr"), which
`QKeySequence` cannot parse, so `parse_ptt_key` knows those by name. The main window
matches key events against the parsed key.

GUI thread only.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from PySide6.QtCore import QKeyCombination, Qt
from PySide6.QtGui import QKeyEvent, QKeySequence
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from vpdesk.core.ptt import PttMode
from vpdesk.core.settings import Settings
from vpdesk.core.tones import TONE_NAMES, ToneSetting, ToneSettings

logger = logging.getLogger(__name__)

SYSTEM_DEFAULT = "System default"
TONE_LABELS = {
    "talk_permit": "Talk permit",
    "end_of_tx": "End of transmission",
    "busy": "Channel busy",
    "incoming": "Incoming call",
    "emergency": "Emergency",
}

_MODIFIER_KEYS = {
    "Ctrl": Qt.Key.Key_Control,
    "Control": Qt.Key.Key_Control,
    "Shift": Qt.Key.Key_Shift,
    "Alt": Qt.Key.Key_Alt,
    "AltGr": Qt.Key.Key_AltGr,
    "Meta": Qt.Key.Key_Meta,
}
_MODIFIER_NAMES = {
    Qt.Key.Key_Control: "Ctrl",
    Qt.Key.Key_Shift: "Shift",
    Qt.Key.Key_Alt: "Alt",
    Qt.Key.Key_AltGr: "AltGr",
    Qt.Key.Key_Meta: "Meta",
}
# Keypad keys carry KeypadModifier; it says where the key is, not what was held with it.
_IGNORED_MODIFIERS = Qt.KeyboardModifier.KeypadModifier | Qt.KeyboardModifier.GroupSwitchModifier


# --- PTT key names ----------------------------------------------------------------------


@dataclass(frozen=True)
class PttKey:
    """A parsed PTT key: the key, and the modifiers that must be held with it."""

    key: Qt.Key
    modifiers: Qt.KeyboardModifier = Qt.KeyboardModifier.NoModifier

    @property
    def is_modifier(self) -> bool:
        return self.key in _MODIFIER_NAMES

    def matches_press(self, event: QKeyEvent) -> bool:
        if event.key() != self.key:
            return False
        if self.is_modifier:  # a lone Ctrl reports itself as held on some platforms
            return True
        return (event.modifiers() & ~_IGNORED_MODIFIERS) == self.modifiers

    def matches_release(self, event: QKeyEvent) -> bool:
        # Modifiers may change while the key is held: the key alone ends the press.
        return event.key() == self.key


def parse_ptt_key(text: str | None) -> PttKey | None:
    """The key named by `text`, or None when it names no single key."""
    text = (text or "").strip()
    if not text:
        return None
    if text in _MODIFIER_KEYS:
        return PttKey(_MODIFIER_KEYS[text])
    sequence = QKeySequence(text)
    if sequence.count() != 1:
        return None
    combination = sequence[0]
    key = combination.key()
    if key == Qt.Key.Key_unknown:
        return None
    return PttKey(key, combination.keyboardModifiers())


def key_text(key: int | Qt.Key, modifiers: Qt.KeyboardModifier = Qt.KeyboardModifier.NoModifier) -> str:
    """The stored name of a key pressed with `modifiers` ("" for keys that have no name)."""
    key = Qt.Key(key)
    if key in _MODIFIER_NAMES:
        return _MODIFIER_NAMES[key]
    if key in (Qt.Key.Key_unknown, 0):
        return ""
    modifiers = Qt.KeyboardModifier(modifiers) & ~_IGNORED_MODIFIERS
    return QKeySequence(QKeyCombination(modifiers, key)).toString(QKeySequence.SequenceFormat.PortableText)


class KeyCaptureButton(QPushButton):
    """Shows the PTT key; click, then press a key to record it (Escape cancels)."""

    def __init__(self, key: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._key = key
        self._capturing = False
        self.setMinimumWidth(160)
        self.clicked.connect(self.start_capture)
        self._show()

    @property
    def key(self) -> str:
        return self._key

    @property
    def capturing(self) -> bool:
        return self._capturing

    def start_capture(self) -> None:
        self._capturing = True
        self.setText("Press a key…")
        self.setFocus(Qt.FocusReason.OtherFocusReason)
        self.grabKeyboard()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if not self._capturing:
            super().keyPressEvent(event)
            return
        if event.key() == Qt.Key.Key_Escape:
            self._stop()
            return
        name = key_text(event.key(), event.modifiers())
        if name and not event.isAutoRepeat():
            self._key = name
            self._stop()

    def focusOutEvent(self, event) -> None:
        if self._capturing:
            self._stop()
        super().focusOutEvent(event)

    def _stop(self) -> None:
        self._capturing = False
        self.releaseKeyboard()
        self._show()

    def _show(self) -> None:
        self.setText(self._key or "(none)")
        self.setToolTip("Click, then press the key to use for push-to-talk")


# --- the dialog ------------------------------------------------------------------------


class _ToneRow:
    """One tone's enabled checkbox, volume slider and play button."""

    def __init__(self, name: str, setting: ToneSetting, play: Callable[[str], None], parent: QWidget):
        self.name = name
        self.enabled = QCheckBox(TONE_LABELS.get(name, name), parent)
        self.enabled.setChecked(setting.enabled)
        self.volume = QSlider(Qt.Orientation.Horizontal, parent)
        self.volume.setRange(0, 100)
        self.volume.setValue(round(setting.volume * 100))
        self.volume.setMinimumWidth(160)
        self.volume.setAccessibleName(f"{TONE_LABELS.get(name, name)} volume")
        self.value = QLabel(f"{self.volume.value()}%", parent)
        self.value.setObjectName("Hint")
        self.value.setMinimumWidth(44)
        self.volume.valueChanged.connect(lambda v: self.value.setText(f"{v}%"))
        self.enabled.toggled.connect(self.volume.setEnabled)
        self.volume.setEnabled(setting.enabled)
        self.play = QPushButton("▶ Play", parent)
        self.play.setToolTip(f"Play the {TONE_LABELS.get(name, name).lower()} tone")
        self.play.clicked.connect(lambda: play(name))

    def setting(self) -> ToneSetting:
        return ToneSetting(self.enabled.isChecked(), self.volume.value() / 100.0)


class PreferencesDialog(QDialog):
    """Edit a copy of `settings`; `result_settings()` returns the new Settings.

    `on_test_tone(name)` plays a tone (the viewmodel's test_tone). Note: the tone plays
    with the settings in effect, not the unsaved slider position.
    """

    def __init__(
        self,
        settings: Settings,
        input_devices: Sequence[str],
        output_devices: Sequence[str],
        on_test_tone: Callable[[str], None],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self._original = settings
        self.setWindowTitle("Preferences")
        self.setMinimumWidth(560)

        # Push-to-talk
        ptt_box = QGroupBox("Push-to-talk", self)
        self.hold_radio = QRadioButton("Hold to talk", ptt_box)
        self.toggle_radio = QRadioButton("Toggle (press to start, press again to stop)", ptt_box)
        self._mode_group = QButtonGroup(self)
        self._mode_group.addButton(self.hold_radio)
        self._mode_group.addButton(self.toggle_radio)
        (self.toggle_radio if settings.ptt_mode is PttMode.TOGGLE else self.hold_radio).setChecked(True)
        self.key_button = KeyCaptureButton(settings.ptt_key, ptt_box)
        ptt_form = QFormLayout(ptt_box)
        modes = QVBoxLayout()
        modes.addWidget(self.hold_radio)
        modes.addWidget(self.toggle_radio)
        ptt_form.addRow("Mode", modes)
        key_row = QHBoxLayout()
        key_row.addWidget(self.key_button)
        key_hint = QLabel("Click, then press the key to use", ptt_box)
        key_hint.setObjectName("Hint")
        key_row.addWidget(key_hint, 1)
        ptt_form.addRow("Key", key_row)

        # Audio devices
        audio_box = QGroupBox("Audio devices", self)
        self.input_combo = self._device_combo(input_devices, settings.input_device, audio_box)
        self.output_combo = self._device_combo(output_devices, settings.output_device, audio_box)
        audio_form = QFormLayout(audio_box)
        audio_form.addRow("Microphone", self.input_combo)
        audio_form.addRow("Speaker", self.output_combo)

        # Tones
        tones_box = QGroupBox("Tones", self)
        self.tone_dir_edit = QLineEdit(settings.tone_dir or "", tones_box)
        self.tone_dir_edit.setPlaceholderText("Shipped tones (no folder)")
        browse = QPushButton("Browse…", tones_box)
        browse.clicked.connect(self._browse_tone_dir)
        folder_row = QHBoxLayout()
        folder_row.addWidget(QLabel("Tone folder", tones_box))
        folder_row.addWidget(self.tone_dir_edit, 1)
        folder_row.addWidget(browse)
        hint = QLabel("A file named like a tone (busy.wav…) in this folder replaces the shipped one.", tones_box)
        hint.setObjectName("Hint")
        hint.setWordWrap(True)
        grid = QGridLayout()
        grid.setHorizontalSpacing(12)
        self.tone_rows: dict[str, _ToneRow] = {}
        for row, name in enumerate(TONE_NAMES):
            tone = _ToneRow(name, settings.tones.get(name), on_test_tone, tones_box)
            self.tone_rows[name] = tone
            grid.addWidget(tone.enabled, row, 0)
            grid.addWidget(tone.volume, row, 1)
            grid.addWidget(tone.value, row, 2)
            grid.addWidget(tone.play, row, 3)
        grid.setColumnStretch(1, 1)
        tones_layout = QVBoxLayout(tones_box)
        tones_layout.addLayout(folder_row)
        tones_layout.addWidget(hint)
        tones_layout.addSpacing(6)
        tones_layout.addLayout(grid)

        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, self
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(16, 12, 16, 12)
        layout.setSpacing(10)
        layout.addWidget(ptt_box)
        layout.addWidget(audio_box)
        layout.addWidget(tones_box)
        layout.addWidget(buttons)

    @staticmethod
    def _device_combo(devices: Sequence[str], current: str | None, parent: QWidget) -> QComboBox:
        combo = QComboBox(parent)
        combo.addItem(SYSTEM_DEFAULT, None)
        for name in devices:
            combo.addItem(name, name)
        if current is not None:
            index = combo.findData(current)
            if index < 0:  # a saved device that is unplugged now: keep it selectable
                combo.addItem(f"{current} (not found)", current)
                index = combo.count() - 1
            combo.setCurrentIndex(index)
        combo.setMinimumWidth(300)
        return combo

    def _browse_tone_dir(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Tone folder", self.tone_dir_edit.text())
        if folder:
            self.tone_dir_edit.setText(folder)

    def result_settings(self) -> Settings:
        """A new Settings: the input's fields with this dialog's choices; the input is untouched."""
        result = copy.deepcopy(self._original)
        result.ptt_mode = PttMode.TOGGLE if self.toggle_radio.isChecked() else PttMode.HOLD
        result.ptt_key = self.key_button.key
        result.input_device = self.input_combo.currentData()
        result.output_device = self.output_combo.currentData()
        result.tone_dir = self.tone_dir_edit.text().strip() or None
        result.tones = ToneSettings({name: row.setting() for name, row in self.tone_rows.items()})
        return result
