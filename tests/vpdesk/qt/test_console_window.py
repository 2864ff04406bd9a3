"""The console through its real widgets, against a real embedded server.

Qt and asyncio share one loop here, as in the app: the tests run on qasync's loop, so
the server, the sessions and the widgets all live on the GUI thread. The sound card is
the only stand-in (tests/e2e has the real audio path).
"""

from __future__ import annotations

import asyncio
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest
import pytest_asyncio
from PySide6.QtCore import QEvent, QPoint, Qt
from PySide6.QtGui import QKeyEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from tests.server.harness import PASSWORD, start_site
from tests.vpdesk.session_helpers import make_session, until
from tests.audio_tools import speech_wav
from vpdesk.core.ptt import PttMode
from vpdesk.core.settings import Settings, SettingsStore
from vpdesk.ui.main_window import MainWindow
from vpdesk.viewmodels.console import ConsoleViewModel


# One qasync loop for the whole run: a new QEventLoop per test on the one QApplication
# leaves tasks of a closed loop behind.
pytestmark = pytest.mark.asyncio(loop_scope="session")

@pytest.fixture(scope="module")
def wav(tmp_path_factory):
    return speech_wav(tmp_path_factory.mktemp("wav"), "Medic two on scene", 1.5)


@pytest_asyncio.fixture(loop_scope="session")
async def site(tmp_path):
    site = await start_site(tmp_path / "site", users=3)
    yield site
    await site.server.stop()


class Console:
    """A window on a real session, as vpdesk.app builds it (audio aside)."""

    def __init__(self, site, user, wav, tmp_path, settings=None):
        self.settings = settings or Settings()
        self.store = SettingsStore(tmp_path / f"{user}-settings.json")
        self.session = make_session(site.url, user, PASSWORD, wav=wav, ptt_mode=self.settings.ptt_mode)
        self.vm = ConsoleViewModel(self.session, self.settings, store=self.store, server_key="test")
        self.window = MainWindow(self.vm)
        self.window.resize(1200, 760)
        self.tones: list[str] = []
        self.messages: list[str] = []
        self.vm.toneRequested.connect(self.tones.append)
        self.vm.message.connect(self.messages.append)

    async def start(self):
        self.window.show()
        self.session.start()
        await self.session.wait_connected()
        await until(lambda: len(self.session.board.joined_ids()) == len(self.session.board))

    async def stop(self):
        await self.session.stop()
        self.window.close()
        # Delete on the GUI thread (see vpdesk.app: never leave it to the GC's thread).
        self.window.deleteLater()
        self.vm.deleteLater()


@pytest_asyncio.fixture(loop_scope="session")
async def consoles(site, wav, tmp_path):
    made = []

    async def make(user, **kwargs):
        console = Console(site, user, wav, tmp_path, **kwargs)
        made.append(console)
        await console.start()
        return console

    yield make
    for console in made:
        await console.stop()


def click_row(console, channel_id):
    row = console.window.channel_list.row(channel_id)
    QTest.mouseClick(row.name_label, Qt.MouseButton.LeftButton)


async def test_window_lists_the_users_channels_and_connection(site, consoles):
    c = await consoles("u1")
    ids = c.window.channel_list.row_ids()
    assert set(ids) == set(site.channels.values())
    names = {c.window.channel_list.row(i).name_label.text() for i in ids}
    assert names == {"alpha", "bravo"}
    assert "Connected" in c.window.connection.text()
    assert c.window.ptt_panel.target_label.text() in {"alpha", "bravo"}


async def test_clicking_a_row_makes_it_the_target(site, consoles):
    c = await consoles("u1")
    bravo = site.channels["bravo"]
    click_row(c, bravo)
    await until(lambda: c.vm.target == bravo)
    assert c.window.channel_list.row(bravo).is_target
    assert c.window.ptt_panel.target_label.text() == "bravo"
    await until(lambda: c.store.path.exists(), timeout=3)  # the target is saved
    assert SettingsStore(c.store.path).load().targets["test"] == bravo


async def test_mute_button_mutes_on_the_server(site, consoles):
    c = await consoles("u1")
    alpha = site.channels["alpha"]
    row = c.window.channel_list.row(alpha)
    QTest.mouseClick(row.mute_button, Qt.MouseButton.LeftButton)
    await until(lambda: alpha in site.hub.sessions[c.session.session_id].muted)
    assert c.session.board.get(alpha).muted
    QTest.mouseClick(row.mute_button, Qt.MouseButton.LeftButton)
    await until(lambda: alpha not in site.hub.sessions[c.session.session_id].muted)


async def test_volume_slider_sets_the_channel_gain(site, consoles):
    c = await consoles("u1")
    alpha = site.channels["alpha"]
    c.window.channel_list.row(alpha).volume_slider.setValue(35)
    await until(lambda: abs(c.session.board.get(alpha).volume - 0.35) < 1e-6)
    assert c.session.speaker.sinks[alpha].gain == pytest.approx(0.35)


async def test_hold_the_button_to_talk_and_the_other_console_shows_the_banner(site, consoles):
    alpha = site.channels["alpha"]
    talker, listener = await consoles("u0"), await consoles("u1")
    click_row(talker, alpha)
    click_row(listener, alpha)
    await until(lambda: talker.vm.target == alpha and listener.vm.target == alpha)
    button = talker.window.ptt_panel.button
    QTest.mousePress(button, Qt.MouseButton.LeftButton, pos=button.rect().center())
    await until(lambda: "talk_permit" in talker.tones)
    assert talker.window.ptt_panel.button.tx_state.value == "transmitting"
    row = listener.window.channel_list.row(alpha)
    await until(lambda: row.speaking_label.text() == "u0 is speaking")
    assert "u0 is speaking" in listener.window.ptt_panel.banner.text()

    # The listener presses meanwhile: busy tone, banner, nothing sent.
    lb = listener.window.ptt_panel.button
    QTest.mousePress(lb, Qt.MouseButton.LeftButton, pos=lb.rect().center())
    await until(lambda: "busy" in listener.tones)
    assert listener.messages[-1] == "Channel busy: u0 is speaking"
    assert listener.window.ptt_panel.button.tx_state.value == "denied"
    QTest.mouseRelease(lb, Qt.MouseButton.LeftButton, pos=lb.rect().center())
    assert listener.session.microphone.gate is False

    QTest.mouseRelease(button, Qt.MouseButton.LeftButton, pos=button.rect().center())
    await until(lambda: "end_of_tx" in talker.tones)
    await until(lambda: row.speaking_label.text() == "")


async def test_keyboard_key_talks_while_held(site, consoles):
    bravo = site.channels["bravo"]
    c = await consoles("u1")
    click_row(c, bravo)
    window = c.window
    window.activateWindow()
    QApplication.sendEvent(window, QKeyEvent(QEvent.Type.KeyPress, Qt.Key.Key_Space, Qt.KeyboardModifier.NoModifier))
    await until(lambda: c.session.microphone.gate)
    # Auto-repeat presses change nothing.
    QApplication.sendEvent(window, QKeyEvent(QEvent.Type.KeyPress, Qt.Key.Key_Space, Qt.KeyboardModifier.NoModifier, "", True))
    assert c.session.ptt.held_sources == frozenset({"keyboard"})
    QApplication.sendEvent(window, QKeyEvent(QEvent.Type.KeyRelease, Qt.Key.Key_Space, Qt.KeyboardModifier.NoModifier))
    await until(lambda: "end_of_tx" in c.tones)
    assert not c.session.microphone.gate
    await until(lambda: not site.hub.floor.held_by(c.session.session_id) if hasattr(site.hub.floor, "held_by") else True)


async def test_toggle_mode_from_the_preferences(site, consoles):
    c = await consoles("u1")
    settings = Settings(ptt_mode=PttMode.TOGGLE)
    c.vm.apply_settings(settings)
    assert c.session.ptt.mode is PttMode.TOGGLE
    assert "Toggle" in c.window.ptt_panel.mode_label.text()
    button = c.window.ptt_panel.button
    QTest.mouseClick(button, Qt.MouseButton.LeftButton, pos=button.rect().center())
    await until(lambda: "talk_permit" in c.tones)
    assert c.session.microphone.gate  # still talking after the click ended
    QTest.mouseClick(button, Qt.MouseButton.LeftButton, pos=button.rect().center())
    await until(lambda: "end_of_tx" in c.tones)
    assert SettingsStore(c.store.path).load().ptt_mode is PttMode.TOGGLE


async def test_connection_loss_shows_and_recovers(site, consoles):
    c = await consoles("u1")
    c.session.reconnector.base = 0.2
    await c.session.drop_connection()
    await until(lambda: "retrying" in c.window.connection.text() or "Connecting" in c.window.connection.text())
    await until(lambda: "Connected" in c.window.connection.text(), timeout=15)


async def test_preferences_window_switches_to_toggle_and_the_loop_keeps_running(site, consoles):
    c = await consoles("u1")
    dialog = c.window.open_preferences()
    await asyncio.sleep(0.2)  # asyncio still runs while the dialog is up: no nested loop
    assert dialog.isVisible()
    dialog.toggle_radio.setChecked(True)
    dialog.accept()
    await until(lambda: c.session.ptt.mode is PttMode.TOGGLE)
    assert "Toggle" in c.window.ptt_panel.mode_label.text()
    assert c.session.connected
