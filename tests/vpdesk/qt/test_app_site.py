"""The console application given a site of several nodes: `--server` with a comma list,
the login dialog's server field with "url1, url2", the list saved in the settings file.

In-process on qasync's loop with the real dialogs, real servers on loopback and the real
settings file (in a temporary config folder), as tests/vpdesk/qt/test_app.py does.
"""

from __future__ import annotations

import asyncio

import pytest
from PySide6.QtWidgets import QApplication

from tests.redis_server import free_port
from tests.server.harness import PASSWORD, start_site
from tests.vpdesk.session_helpers import until
from vpdesk.app import Console, Options
from vpdesk.core.settings import SettingsStore
from vpdesk.ui.dialogs import LoginDialog

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
def folders(tmp_path, monkeypatch):
    for name in ("CONFIG", "DATA", "LOG"):
        monkeypatch.setenv(f"VPDESK_{name}_DIR", str(tmp_path / name.lower()))
    monkeypatch.setenv("PULSE_SERVER", f"unix:{tmp_path}/no-pulse")
    return tmp_path


def open_dialog():
    for widget in QApplication.topLevelWidgets():
        if isinstance(widget, LoginDialog) and widget.isVisible():
            return widget
    return None


async def finish(console: Console, run: asyncio.Task) -> int:
    console.window.close()
    console._closed.set()
    return await asyncio.wait_for(run, 20)


async def test_a_comma_list_signs_in_on_a_live_node_and_is_saved(folders, tmp_path):
    site = await start_site(tmp_path / "b", users=2)
    dead = f"http://127.0.0.1:{free_port()}"  # the first node is down
    try:
        console = Console(QApplication.instance(), Options(server=f"{dead},{site.url}", user="u1"))
        run = asyncio.get_running_loop().create_task(console.run())
        await until(lambda: open_dialog() is not None)
        dialog = open_dialog()
        # The dispatcher edits the field: a bad entry is refused with a sentence.
        dialog.url_edit.setText(f"{dead}, radio-two:8443")
        dialog.password_edit.setText(PASSWORD)
        dialog.accept()
        await until(lambda: dialog.isVisible() and "not a server address" in dialog.error())
        dialog.url_edit.setText(f"{dead}/, {site.url}")
        dialog.accept()
        await until(lambda: console.session is not None and console.session.connected, timeout=20)
        session = console.session
        assert session.credentials.url == site.url
        assert "node 2 of 2" in session.detail
        assert await finish(console, run) == 0
        saved = SettingsStore(folders / "config" / "settings.json").load()
        assert saved.last_servers == [dead, site.url]
        assert saved.last_server == dead and saved.last_username == "u1"
    finally:
        await site.server.stop()
