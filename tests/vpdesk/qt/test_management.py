"""The management panel through its widgets, opened from a real console window signed in
to a real in-process server (qasync: Qt and asyncio on one loop, as in the app)."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest
import pytest_asyncio
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QDialogButtonBox

from tests.server.harness import PASSWORD, start_site
from tests.vpdesk.session_helpers import make_session, until
from vpdesk.core.settings import Settings
from vpdesk.ui.main_window import MainWindow
from vpdesk.viewmodels.console import ConsoleViewModel

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(loop_scope="session")
async def site(tmp_path):
    site = await start_site(tmp_path / "site", users=2)
    directory = site.directory
    # u0 (dispatch) runs "Exercise" (alpha, bravo in team Ops); "Other" is not theirs.
    directory.assign_dispatcher(directory.event_by_name("Exercise").id, directory.user_by_name("u0").id)
    directory.add_channel("charlie", team="Fire", event="Other")
    yield site
    await site.server.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def console(site):
    made = []

    async def make(user: str) -> MainWindow:
        session = make_session(site.url, user, PASSWORD)
        vm = ConsoleViewModel(session, Settings())
        window = MainWindow(vm)
        made.append((session, vm, window))
        window.show()
        session.start()
        await session.wait_connected()
        await until(lambda: window.role_label.text() != "")
        return window

    yield make
    for session, vm, window in made:
        if window.management is not None:
            panel = window.management
            panel.close()
            await panel.closing_task
        await session.stop()
        window.close()
        window.deleteLater()
        vm.deleteLater()


async def open_panel(window: MainWindow):
    QTest.mouseClick(window.manage_button, Qt.MouseButton.LeftButton)
    panel = window.management
    assert panel is not None and panel.isVisible()
    await panel.vm.settle()
    return panel


async def answer(panel, fill=None) -> None:
    """Fill the open dialog, press its OK button, wait for the server's answer."""
    dialog = panel.opener.dialog
    assert dialog is not None and dialog.isVisible()
    if fill is not None:
        fill(dialog)
    dialog.buttons.button(QDialogButtonBox.StandardButton.Ok).click()
    await panel.vm.settle()


def click(button) -> None:
    assert button.isVisible() and button.isEnabled(), button.text()
    QTest.mouseClick(button, Qt.MouseButton.LeftButton)


async def test_admin_creates_an_event_a_team_a_channel_and_a_member(site, console):
    window = await console("admin")
    assert window.manage_button.isVisible() and window.manage_action.isVisible()
    panel = await open_panel(window)
    tab = panel.channels_tab
    assert panel.visible_tabs() == ["Events & channels", "Users", "Settings", "Audit log"]
    assert tab.top_level_names() == ["Exercise", "Other", "Site-wide"]

    click(tab.new_event_button)
    await answer(panel, lambda d: d.name_edit.setText("Harbour Fest"))
    event = site.directory.event_by_name("Harbour Fest")
    assert event is not None
    assert panel.status_label.text() == "Created event “Harbour Fest”"

    tab.select_path("Harbour Fest")
    click(tab.new_team_button)
    await answer(panel, lambda d: d.name_edit.setText("Medics"))
    (team,) = site.directory.list_teams(event.id)
    assert team.name == "Medics"

    tab.select_path("Harbour Fest", "Medics")
    click(tab.new_channel_button)
    await answer(panel, lambda d: d.name_edit.setText("Medic 1"))  # the team is preselected
    channel = site.directory.channel_by_name("Medic 1")
    assert (channel.event_id, channel.team_id) == (event.id, team.id)
    tab.item_named("Harbour Fest", "Medics", "Medic 1")  # the tree shows it

    tab.select_path("Harbour Fest", "Medics", "Medic 1")
    await panel.vm.settle()
    assert tab.member_names() == []
    tab.choose_person("u1")
    click(tab.add_button)
    await panel.vm.settle()
    u1 = site.directory.user_by_name("u1")
    assert site.directory.is_member(u1.id, channel.id)
    assert tab.member_names() == ["u1"]

    tab.select_person("u1")
    click(tab.remove_button)
    await panel.vm.settle()
    assert not site.directory.is_member(u1.id, channel.id) and tab.member_names() == []

    # The event's dispatchers: assign u0 to the new event.
    tab.select_path("Harbour Fest")
    tab.choose_person("u0")
    click(tab.add_button)
    await panel.vm.settle()
    assert site.directory.is_dispatcher_of(site.directory.user_by_name("u0").id, event.id)
    assert tab.member_names() == ["u0"]


async def test_admin_users_settings_and_audit_tabs(site, console):
    panel = await open_panel(await console("admin"))
    users = panel.users_tab
    panel.tabs.setCurrentWidget(users)
    click(users.new_button)

    def new_user(dialog):
        dialog.name_edit.setText("medic9")
        dialog.role_combo.setCurrentIndex(dialog.role_combo.findData("dispatch"))
        dialog.password_edit.setText("medic-pass-9")
        dialog.confirm_edit.setText("medic-pass-9")

    await answer(panel, new_user)
    created = site.directory.user_by_name("medic9")
    assert created is not None and created.role.value == "dispatch"

    users.select_user("medic9")
    click(users.role_button)
    await answer(panel, lambda d: d.role_combo.setCurrentIndex(d.role_combo.findData("general")))
    assert site.directory.get_user(created.id).role.value == "general"
    users.select_user("medic9")
    click(users.delete_button)
    await answer(panel)
    assert site.directory.get_user(created.id) is None

    settings = panel.settings_tab
    panel.tabs.setCurrentWidget(settings)
    assert settings.site_name_edit.text() == "vpdesk"  # the server's default, loaded
    settings.site_name_edit.setText("County Ops")
    settings.max_talk_edit.setText("45")
    click(settings.save_button)
    await panel.vm.settle()
    assert site.directory.get_settings()["site_name"] == "County Ops"
    assert site.directory.get_settings()["max_talk_ms"] == 45_000

    panel.tabs.setCurrentWidget(panel.audit_tab)
    await panel.vm.settle()
    kinds = [panel.audit_tab.table.item(r, 1).text() for r in range(panel.audit_tab.table.rowCount())]
    assert "settings.update" in kinds and "user.create" in kinds


async def test_dispatcher_sees_only_their_event_and_no_admin_tabs(site, console):
    panel = await open_panel(await console("u0"))
    tab = panel.channels_tab
    assert panel.visible_tabs() == ["Events & channels"]
    assert tab.top_level_names() == ["Exercise"]
    assert not tab.new_event_button.isVisible()
    tab.select_path("Exercise")
    assert tab.new_team_button.isEnabled() and tab.new_channel_button.isEnabled()
    assert not tab.rename_button.isEnabled() and not tab.delete_button.isEnabled()  # events are the admin's
    assert not tab.people_box.isVisible()  # an event's dispatchers are the admin's too

    tab.select_path("Exercise", "Ops", "alpha")
    await panel.vm.settle()
    assert tab.rename_button.isEnabled() and tab.delete_button.isEnabled()
    assert set(tab.member_names()) == {"u0", "u1"}

    tab.select_path("Exercise", "Ops")
    click(tab.new_channel_button)
    await answer(panel, lambda d: d.name_edit.setText("Ops 3"))
    channel = site.directory.channel_by_name("Ops 3")
    assert channel is not None and channel.event_id == site.directory.event_by_name("Exercise").id


async def test_general_user_has_no_manage_entry(console):
    window = await console("u1")
    assert window.role_label.text() == "GENERAL"
    assert not window.manage_button.isVisible() and not window.manage_action.isVisible()
    assert window.open_management() is None and window.management is None


async def test_refusals_show_the_servers_message_in_the_status_line(site, console):
    panel = await open_panel(await console("u0"))
    tab = panel.channels_tab
    tab.select_path("Exercise", "Ops")
    click(tab.new_channel_button)
    await answer(panel, lambda d: d.name_edit.setText("charlie"))  # taken, in another event
    assert panel.status_label.property("kind") == "error"
    assert panel.status_label.text().startswith("Could not create channel “charlie”: ")
    assert "charlie" in panel.status_label.text().split(": ", 1)[1]
    assert panel.isVisible()

    admin_panel = await open_panel(await console("admin"))
    users = admin_panel.users_tab
    admin_panel.tabs.setCurrentWidget(users)
    users.select_user("admin")
    click(users.delete_button)
    await answer(admin_panel)  # the last admin: the server says no (409)
    assert site.directory.user_by_name("admin") is not None
    assert admin_panel.status_label.property("kind") == "error"
    assert admin_panel.status_label.text().startswith("Could not delete admin: ")
    assert "admin" in admin_panel.status_label.text().split(": ", 1)[1]
