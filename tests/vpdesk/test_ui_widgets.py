"""The console's widgets against the fake viewmodel: what they show and what they call.

pytest-qt on the offscreen platform. Assertions are on widget text, properties and the
fake's recorded calls, never on pixels.
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import base64  # noqa: E402
from dataclasses import replace  # noqa: E402

import pytest  # noqa: E402
from PySide6.QtCore import QEvent, QPoint, Qt  # noqa: E402
from PySide6.QtGui import QKeyEvent, QPalette  # noqa: E402
from PySide6.QtWidgets import QApplication, QDialog, QLineEdit, QVBoxLayout  # noqa: E402

from tests.vpdesk.fake_viewmodel import FakeConsoleViewModel  # noqa: E402
from vpdesk.core.channels import ChannelState  # noqa: E402
from vpdesk.core.connection import ConnectionState  # noqa: E402
from vpdesk.core.ptt import PttMode, TxState  # noqa: E402
from vpdesk.core.settings import Settings  # noqa: E402
from vpdesk.core.tones import TONE_NAMES  # noqa: E402
from vpdesk.ui.channel_list import ChannelList  # noqa: E402
from vpdesk.ui.dialogs import LoginDialog, SetupDialog  # noqa: E402
from vpdesk.ui.level_meter import LevelMeter  # noqa: E402
from vpdesk.ui.main_window import MainWindow  # noqa: E402
from vpdesk.ui.preferences import SYSTEM_DEFAULT, PreferencesDialog, key_text, parse_ptt_key  # noqa: E402
from vpdesk.ui.ptt_panel import PttPanel, format_remaining  # noqa: E402
from vpdesk.ui.theme import apply_theme  # noqa: E402


def channels() -> list[ChannelState]:
    return [
        ChannelState(1, "Dispatch", "Control", joined=True),
        ChannelState(2, "Fire Ops", "Fire", joined=True, volume=0.5),
        ChannelState(3, "EMS 1", "Medical", joined=True, muted=True),
    ]


@pytest.fixture
def vm(qtbot) -> FakeConsoleViewModel:
    return FakeConsoleViewModel(channels())


@pytest.fixture
def channel_list(qtbot, vm) -> ChannelList:
    widget = ChannelList(vm)
    qtbot.addWidget(widget)
    widget.resize(900, 400)
    widget.show()
    return widget


@pytest.fixture
def panel(qtbot, vm) -> PttPanel:
    vm.set_target(2)
    vm.calls.clear()
    widget = PttPanel(vm)
    qtbot.addWidget(widget)
    widget.show()
    return widget


@pytest.fixture
def window(qtbot, vm) -> MainWindow:
    win = MainWindow(vm)
    qtbot.addWidget(win)
    win.resize(1200, 800)
    win.show()
    qtbot.waitExposed(win)
    vm.calls.clear()
    return win


def send_key(widget, kind: QEvent.Type, key: Qt.Key, modifiers=Qt.KeyboardModifier.NoModifier,
             *, auto_repeat: bool = False) -> bool:
    """Deliver one key event the way the application does; True when it was accepted."""
    event = QKeyEvent(kind, key, modifiers, "", auto_repeat)
    QApplication.sendEvent(widget, event)
    return event.isAccepted()


# --- channel list ------------------------------------------------------------------------


def test_rows_appear_for_the_channels_in_order(channel_list):
    assert channel_list.row_ids() == [1, 2, 3]
    assert channel_list.row(2).name_label.text() == "Fire Ops"
    assert channel_list.row(2).team_label.text() == "Fire"
    assert channel_list.row(2).volume_slider.value() == 50
    assert channel_list.row(3).mute_button.isChecked()
    assert not channel_list.row(1).mute_button.isChecked()
    assert channel_list.empty_label.isHidden()


def test_channel_changed_refreshes_just_that_row(channel_list, vm):
    rows_before = {cid: channel_list.row(cid) for cid in (1, 2, 3)}
    vm.put_speaker(2, "Bob")
    assert channel_list.row(2).speaking_label.text() == "Bob is speaking"
    assert channel_list.row(2).property("onair") is True
    assert channel_list.row(1).speaking_label.text() == ""
    assert channel_list.row(3).speaking_label.text() == ""
    assert {cid: channel_list.row(cid) for cid in (1, 2, 3)} == rows_before  # same objects
    assert "1" in channel_list.header.on_air_title.text()
    vm.put_speaker(2, None)
    assert channel_list.row(2).speaking_label.text() == ""
    assert channel_list.row(2).property("onair") is False


def test_channels_reset_keeps_rows_by_id(channel_list, vm):
    kept = channel_list.row(3)
    vm.put_channels([vm.channel(3), ChannelState(9, "Police North", "Police"), vm.channel(1)])
    assert channel_list.row_ids() == [3, 9, 1]
    assert channel_list.row(3) is kept
    assert channel_list.row(9).name_label.text() == "Police North"
    with pytest.raises(KeyError):
        channel_list.row(2)
    vm.put_channels([])
    assert channel_list.row_ids() == []
    assert not channel_list.empty_label.isHidden()


def test_mute_button_calls_set_muted(qtbot, channel_list, vm):
    qtbot.mouseClick(channel_list.row(1).mute_button, Qt.MouseButton.LeftButton)
    assert vm.calls_named("set_muted") == [("set_muted", 1, True)]
    assert channel_list.row(1).mute_button.isChecked()  # the fake applied it
    qtbot.mouseClick(channel_list.row(3).mute_button, Qt.MouseButton.LeftButton)
    assert vm.calls_named("set_muted")[-1] == ("set_muted", 3, False)
    assert not channel_list.row(3).mute_button.isChecked()


def test_volume_slider_calls_set_volume_but_a_refresh_does_not(channel_list, vm):
    row = channel_list.row(1)
    row.volume_slider.setValue(40)
    assert vm.calls_named("set_volume") == [("set_volume", 1, 0.4)]
    assert row.volume_value.text() == "40%"
    vm.put_channel(replace(vm.channel(1), volume=0.25))  # the viewmodel changed it
    assert row.volume_slider.value() == 25
    assert len(vm.calls_named("set_volume")) == 1


def test_clicking_a_row_sets_the_target(qtbot, channel_list, vm):
    row = channel_list.row(2)
    qtbot.mouseClick(row, Qt.MouseButton.LeftButton, pos=row.speaking_label.geometry().center())
    assert vm.calls_named("set_target") == [("set_target", 2)]
    assert row.is_target and row.property("target") is True and row.tx_button.isChecked()
    assert not channel_list.row(1).is_target and not channel_list.row(1).tx_button.isChecked()


def test_tx_button_sets_the_target_and_stays_checked_on_the_target(qtbot, channel_list, vm):
    button = channel_list.row(3).tx_button
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    assert vm.calls_named("set_target") == [("set_target", 3)]
    assert button.isChecked()
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)  # clicking the target again
    assert button.isChecked()


def test_row_keyboard_target_mute_volume(qtbot, channel_list, vm):
    row = channel_list.row(1)
    qtbot.keyClick(row, Qt.Key.Key_Return)
    qtbot.keyClick(row, Qt.Key.Key_M)
    qtbot.keyClick(row, Qt.Key.Key_Left)
    assert ("set_target", 1) in vm.calls
    assert ("set_muted", 1, True) in vm.calls
    assert vm.calls_named("set_volume") == [("set_volume", 1, 0.75)]  # 80 % - 5


def test_lamps_follow_activity_level_and_own_transmission(channel_list, vm):
    vm.put_speaker(1, "Bob")
    vm.put_activity(2, 0.5)
    channel_list.refresh_lamps()
    assert channel_list.row(1).lamp.level() == 1.0
    assert channel_list.row(2).lamp.level() == 0.5
    assert channel_list.row(3).lamp.level() == 0.0
    green = channel_list.row(1).lamp.colour()
    vm.set_target(2)
    vm.put_tx_state(TxState.TRANSMITTING)
    vm.put_speaker(2, "Alice", own=True)
    channel_list.refresh_lamps()
    assert channel_list.row(2).lamp.colour() != green  # amber: it is us


# --- PTT panel ---------------------------------------------------------------------------


def test_ptt_button_mouse_press_and_release(qtbot, panel, vm):
    qtbot.mousePress(panel.button, Qt.MouseButton.LeftButton)
    assert vm.calls == [("press", "mouse")]
    qtbot.mouseRelease(panel.button, Qt.MouseButton.LeftButton)
    assert vm.calls == [("press", "mouse"), ("release", "mouse")]


def test_ptt_button_release_outside_still_releases(qtbot, panel, vm):
    button = panel.button
    qtbot.mousePress(button, Qt.MouseButton.LeftButton)
    qtbot.mouseMove(button, QPoint(-40, -40))  # the hand drifts off the button
    assert vm.calls == [("press", "mouse")] and button.held
    qtbot.mouseRelease(button, Qt.MouseButton.LeftButton, pos=QPoint(-40, -40))
    assert vm.calls == [("press", "mouse"), ("release", "mouse")] and not button.held


def test_ptt_button_ignores_presses_outside_the_round_face(qtbot, panel, vm):
    qtbot.mousePress(panel.button, Qt.MouseButton.LeftButton, pos=QPoint(2, 2))  # a corner
    qtbot.mouseRelease(panel.button, Qt.MouseButton.LeftButton, pos=QPoint(2, 2))
    assert vm.calls == []


def test_tx_state_changes_the_button_and_banner(panel, vm):
    assert panel.button.text() == "PUSH TO TALK"
    assert panel.target_label.text() == "Fire Ops"
    vm.put_tx_state(TxState.REQUESTING)
    assert panel.button.text() == "REQUESTING…"
    vm.put_tx_state(TxState.TRANSMITTING, remaining=42.3)
    assert panel.button.text() == "TRANSMITTING"
    assert panel.countdown_label.text() == "0:43 left"
    assert panel.tx_label.text() == "ON AIR"
    assert panel.countdown_label.property("low") is False
    vm.put_tx_state(TxState.TRANSMITTING, remaining=4.5)
    assert panel.countdown_label.text() == "0:05 left"
    assert panel.countdown_label.property("low") is True
    vm.put_tx_state(TxState.DENIED, denied_holder="Bob")
    assert panel.button.text() == "BUSY"
    assert "Bob is speaking" in panel.banner.text()
    assert panel.banner.property("kind") == "denied"
    vm.put_tx_state(TxState.IDLE)
    assert panel.button.text() == "PUSH TO TALK"
    assert panel.countdown_label.text() == ""


def test_banner_shows_who_speaks_on_the_target(panel, vm):
    vm.put_speaker(1, "Carol")  # not the target
    assert "Carol" not in panel.banner.text()
    vm.put_speaker(2, "Bob")
    assert panel.banner.text() == "Bob is speaking"
    assert panel.banner.property("kind") == "speaking"


def test_mic_level_drives_the_meter_only_while_transmitting(panel, vm):
    vm.micLevel.emit(0.7)
    assert panel.meter.value() == 0.0
    vm.put_tx_state(TxState.TRANSMITTING)
    vm.micLevel.emit(0.7)
    assert panel.meter.value() == pytest.approx(0.7)
    vm.put_tx_state(TxState.IDLE)
    assert panel.meter.value() == 0.0


def test_panel_shows_mode_key_connection_and_missing_target(panel, vm):
    assert panel.mode_label.text() == "Hold to talk"
    assert panel.key_label.text() == "Space"
    vm.put_ptt_mode(PttMode.TOGGLE)
    assert panel.mode_label.text() == "Toggle"
    assert panel.button.text() == "PRESS TO TALK"
    vm.put_connection(ConnectionState.RECONNECTING, "Reconnecting in 4 s (attempt 3)")
    assert panel.button.text() == "OFFLINE"
    assert panel.banner.text() == "Not connected"
    vm.put_connection(ConnectionState.CONNECTED, "ok")
    vm.put_target(None)
    assert panel.button.text() == "NO CHANNEL"
    assert panel.target_label.text() == "No channel selected"


def test_format_remaining():
    assert format_remaining(None) == ""
    assert format_remaining(0.2) == "0:01 left"
    assert format_remaining(75) == "1:15 left"


def test_level_meter_clamps_and_holds_its_peak(qtbot):
    now = [0.0]
    meter = LevelMeter(clock=lambda: now[0])
    qtbot.addWidget(meter)
    meter.set_value(1.7)
    assert meter.value() == 1.0
    meter.set_value(0.8)
    now[0] = 0.5
    meter.set_value(0.2)
    assert meter.peak() == 1.0  # held
    now[0] = 2.0
    meter.set_value(0.2)
    assert 0.2 <= meter.peak() < 1.0  # falling
    meter.reset()
    assert meter.value() == 0.0 and meter.peak() == 0.0


# --- main window -------------------------------------------------------------------------


def test_keyboard_ptt_press_release_and_auto_repeat(window, vm):
    assert send_key(window, QEvent.Type.KeyPress, Qt.Key.Key_Space)
    assert send_key(window, QEvent.Type.KeyPress, Qt.Key.Key_Space, auto_repeat=True)
    assert send_key(window, QEvent.Type.KeyRelease, Qt.Key.Key_Space, auto_repeat=True)
    assert vm.calls == [("press", "keyboard")]
    send_key(window, QEvent.Type.KeyRelease, Qt.Key.Key_Space)
    assert vm.calls == [("press", "keyboard"), ("release", "keyboard")]


def test_keyboard_ptt_works_from_a_focused_child_and_does_not_click_it(window, vm):
    mute = window.channel_list.row(1).mute_button
    send_key(mute, QEvent.Type.KeyPress, Qt.Key.Key_Space)
    send_key(mute, QEvent.Type.KeyRelease, Qt.Key.Key_Space)
    assert vm.calls == [("press", "keyboard"), ("release", "keyboard")]


def test_other_keys_are_not_ptt(window, vm):
    send_key(window, QEvent.Type.KeyPress, Qt.Key.Key_A)
    send_key(window, QEvent.Type.KeyPress, Qt.Key.Key_Space, Qt.KeyboardModifier.ControlModifier)
    assert vm.calls == []


def test_keyboard_ptt_follows_the_configured_key(window, vm):
    vm.apply_settings(replace(vm.settings, ptt_key="F12"))
    window.ptt_panel.refresh_mode()
    vm.calls.clear()
    send_key(window, QEvent.Type.KeyPress, Qt.Key.Key_Space)
    send_key(window, QEvent.Type.KeyPress, Qt.Key.Key_F12)
    send_key(window, QEvent.Type.KeyRelease, Qt.Key.Key_F12)
    assert vm.calls == [("press", "keyboard"), ("release", "keyboard")]
    assert window.ptt_panel.key_label.text() == "F12"


def test_a_lone_modifier_can_be_the_ptt_key(window, vm):
    vm.apply_settings(replace(vm.settings, ptt_key="Ctrl"))
    vm.calls.clear()
    send_key(window, QEvent.Type.KeyPress, Qt.Key.Key_Control, Qt.KeyboardModifier.ControlModifier)
    send_key(window, QEvent.Type.KeyRelease, Qt.Key.Key_Control)
    assert vm.calls == [("press", "keyboard"), ("release", "keyboard")]


def test_keyboard_ptt_ignores_text_fields_in_dialogs(qtbot, window, vm):
    dialog = QDialog(window)
    qtbot.addWidget(dialog)
    field = QLineEdit(dialog)
    QVBoxLayout(dialog).addWidget(field)
    dialog.show()
    send_key(field, QEvent.Type.KeyPress, Qt.Key.Key_Space)
    send_key(field, QEvent.Type.KeyRelease, Qt.Key.Key_Space)
    assert vm.calls_named("press") == [] and vm.calls_named("release") == []


def test_deactivation_releases_everything(window, vm):
    send_key(window, QEvent.Type.KeyPress, Qt.Key.Key_Space)
    QApplication.sendEvent(window, QEvent(QEvent.Type.WindowDeactivate))
    assert vm.calls == [("press", "keyboard"), ("release_all",)]
    # The key-up that comes later does not release again, and the next press works.
    send_key(window, QEvent.Type.KeyRelease, Qt.Key.Key_Space)
    send_key(window, QEvent.Type.KeyPress, Qt.Key.Key_Space)
    assert vm.calls == [("press", "keyboard"), ("release_all",), ("press", "keyboard")]


def test_connection_user_message_and_audio_problem(window, vm):
    assert window.connection.text() == "Connected to embedded server as alice"
    assert window.user_label.text() == "alice"
    assert window.role_label.text() == "DISPATCH"
    vm.put_connection(ConnectionState.RECONNECTING, "Reconnecting in 4 s (attempt 3)")
    assert window.connection.text() == "Reconnecting in 4 s (attempt 3)"
    assert window.connection.state is ConnectionState.RECONNECTING
    vm.put_connection(ConnectionState.DISCONNECTED, "")
    assert window.connection.text() == "Disconnected"
    vm.message.emit("Channel busy: Bob is speaking")
    assert window.statusBar().currentMessage() == "Channel busy: Bob is speaking"
    assert window.audio_label.isHidden()
    vm.put_audio_problem("No microphone found — listening only")
    assert "No microphone found" in window.audio_label.text()
    assert not window.audio_label.isHidden()


def test_preferences_from_the_window_apply_to_the_viewmodel(window, vm):
    dialog = window.make_preferences_dialog()
    dialog.toggle_radio.setChecked(True)
    window.apply_preferences(dialog)
    applied = vm.calls_named("apply_settings")
    assert len(applied) == 1 and applied[0][1].ptt_mode is PttMode.TOGGLE
    assert window.ptt_panel.mode_label.text() == "Toggle"


def test_geometry_round_trip(qtbot, window, vm):
    geometry, state = window.saved_geometry()
    base64.b64decode(geometry, validate=True)
    for part in state.split(";"):
        base64.b64decode(part, validate=True)
    other = MainWindow(vm)
    qtbot.addWidget(other)
    assert other.restore_geometry(geometry, state)
    assert not other.restore_geometry("bm90IGEgZ2VvbWV0cnk=", "x;y")  # junk is ignored


def test_apply_theme_is_dark_with_a_readable_font(qapp):
    apply_theme(qapp)
    window = qapp.palette().color(QPalette.ColorRole.Window)
    text = qapp.palette().color(QPalette.ColorRole.WindowText)
    assert 0 < window.lightness() < 60 < 200 < text.lightness()  # dark, not black; light text
    assert qapp.font().pointSizeF() >= 11
    assert "ChannelRow" in qapp.styleSheet()


# --- preferences -------------------------------------------------------------------------


def test_preferences_round_trip_returns_a_new_settings(qtbot):
    settings = Settings(input_device="USB Mic")
    played: list[str] = []
    dialog = PreferencesDialog(settings, ["Built-in Mic", "USB Mic"], ["Speakers"], played.append)
    qtbot.addWidget(dialog)
    assert dialog.hold_radio.isChecked()
    assert dialog.input_combo.currentText() == "USB Mic"
    assert dialog.output_combo.currentText() == SYSTEM_DEFAULT

    # Unchanged, it gives back an equal but separate object.
    same = dialog.result_settings()
    assert same == settings and same is not settings and same.tones is not settings.tones

    qtbot.mouseClick(dialog.toggle_radio, Qt.MouseButton.LeftButton)
    qtbot.mouseClick(dialog.key_button, Qt.MouseButton.LeftButton)
    assert dialog.key_button.text() == "Press a key…"
    qtbot.keyClick(dialog.key_button, Qt.Key.Key_F9)
    assert dialog.key_button.text() == "F9"
    dialog.output_combo.setCurrentIndex(dialog.output_combo.findText("Speakers"))
    dialog.input_combo.setCurrentIndex(0)
    dialog.tone_dir_edit.setText("/home/alice/tones")
    dialog.tone_rows["busy"].volume.setValue(30)
    dialog.tone_rows["emergency"].enabled.setChecked(False)
    qtbot.mouseClick(dialog.tone_rows["busy"].play, Qt.MouseButton.LeftButton)
    assert played == ["busy"]

    result = dialog.result_settings()
    assert result.ptt_mode is PttMode.TOGGLE
    assert result.ptt_key == "F9"
    assert result.input_device is None and result.output_device == "Speakers"
    assert result.tone_dir == "/home/alice/tones"
    assert result.tones.get("busy").volume == pytest.approx(0.3)
    assert not result.tones.get("emergency").enabled
    # The input is untouched.
    assert settings == Settings(input_device="USB Mic")

    # And the result shown again comes back the same.
    again = PreferencesDialog(result, ["Built-in Mic", "USB Mic"], ["Speakers"], played.append)
    qtbot.addWidget(again)
    assert again.result_settings() == result
    assert set(again.tone_rows) == set(TONE_NAMES)


def test_preferences_keep_an_unplugged_device_and_escape_cancels_key_capture(qtbot):
    settings = Settings(output_device="Old Headset")
    dialog = PreferencesDialog(settings, [], [], lambda name: None)
    qtbot.addWidget(dialog)
    assert "Old Headset" in dialog.output_combo.currentText()
    assert dialog.result_settings().output_device == "Old Headset"
    qtbot.mouseClick(dialog.key_button, Qt.MouseButton.LeftButton)
    qtbot.keyClick(dialog.key_button, Qt.Key.Key_Escape)
    assert not dialog.key_button.capturing
    assert dialog.result_settings().ptt_key == "Space"


def test_ptt_key_names():
    assert parse_ptt_key("Space").key == Qt.Key.Key_Space
    assert parse_ptt_key("Ctrl+F1").modifiers == Qt.KeyboardModifier.ControlModifier
    assert parse_ptt_key("Ctrl").key == Qt.Key.Key_Control
    assert parse_ptt_key("") is None and parse_ptt_key("no such key") is None
    assert key_text(Qt.Key.Key_F12) == "F12"
    assert key_text(Qt.Key.Key_Control, Qt.KeyboardModifier.ControlModifier) == "Ctrl"
    assert key_text(Qt.Key.Key_Space, Qt.KeyboardModifier.ShiftModifier) == "Shift+Space"
    assert parse_ptt_key(key_text(Qt.Key.Key_Space, Qt.KeyboardModifier.ShiftModifier)).modifiers == (
        Qt.KeyboardModifier.ShiftModifier
    )


# --- login and setup ---------------------------------------------------------------------


def test_login_dialog_requires_fields_and_returns_values(qtbot):
    dialog = LoginDialog("http://dispatch.local:8080", "alice")
    qtbot.addWidget(dialog)
    dialog.accept()  # no password yet
    assert dialog.result() != QDialog.DialogCode.Accepted
    assert "password" in dialog.error()
    dialog.password_edit.setText("s3cret")
    dialog.accept()
    assert dialog.result() == QDialog.DialogCode.Accepted
    assert dialog.values() == ("http://dispatch.local:8080", "alice", "s3cret")
    dialog.set_error("Wrong user name or password")
    assert dialog.error() == "Wrong user name or password"


def test_login_dialog_empty_url_means_embedded(qtbot):
    dialog = LoginDialog(None, None)
    qtbot.addWidget(dialog)
    dialog.user_edit.setText(" bob ")
    dialog.password_edit.setText("pw")
    assert dialog.values() == ("", "bob", "pw")


def test_setup_dialog_defaults_values_and_errors(qtbot):
    dialog = SetupDialog()
    qtbot.addWidget(dialog)
    dialog.accept()
    assert dialog.result() != QDialog.DialogCode.Accepted and "password" in dialog.error()
    dialog.password_edit.setText("longpassword")
    dialog.confirm_edit.setText("longpassword")
    dialog.channels_edit.setPlainText("Dispatch\n\n  Ops 1 \nOps 2\n")
    assert dialog.values() == ("admin", "longpassword", "longpassword", ["Dispatch", "Ops 1", "Ops 2"])
    dialog.accept()
    assert dialog.result() == QDialog.DialogCode.Accepted
    dialog.set_error("Passwords do not match")
    assert dialog.error() == "Passwords do not match"
    dialog.set_error("")
    assert dialog.error() == ""


def test_setup_dialog_default_channels(qtbot):
    dialog = SetupDialog()
    qtbot.addWidget(dialog)
    assert dialog.channel_names() == ["Dispatch", "Ops 1", "Ops 2"]
