"""Take the management panel's screenshot: the real panel, as admin, on a populated site.

Creates a throw-away site (two events with teams and channels, site-wide channels,
dispatchers and field users), serves it in-process, signs in as the admin, opens the
panel on a channel with its members and writes a PNG of the window.

    xvfb-run -a .venv/bin/python scripts/management_screenshot.py docs/management.png

`--others DIR` also writes the Users, Settings and Audit tabs and a dialog there (to look
at them; not in the docs).

Only loopback traffic (the panel's REST calls to the in-process server).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from PySide6.QtWidgets import QApplication  # noqa: E402

from server.config import ServerConfig  # noqa: E402
from server.directory import Directory, Role  # noqa: E402
from server.node import EmbeddedServer  # noqa: E402
from vpdesk.session.admin_api import AdminApi  # noqa: E402
from vpdesk.session.tokens import TokenKeeper  # noqa: E402
from vpdesk.ui.management import ManagementWindow  # noqa: E402
from vpdesk.ui.theme import apply_theme  # noqa: E402
from vpdesk.viewmodels.management import ManagementViewModel  # noqa: E402

PASSWORD = "screenshot-pass"
EVENTS = {
    "County Fair 2025": {
        "Fire": ["Fire Ops", "Fire Tactical 2"],
        "Medical": ["EMS 1", "EMS 2", "First Aid Tent"],
        "Police": ["Police North", "Traffic Control"],
    },
    "City Marathon": {
        "Course": ["Course North", "Course South"],
        "Finish Line": ["Finish Medical"],
    },
}
SITE_CHANNELS = ["Dispatch", "All Call"]
DISPATCHERS = {"dispatcher": "County Fair 2025", "m.rossi": "City Marathon"}
FIELD_USERS = ["medic12", "medic14", "engine4", "adam12", "tent.lead", "runner.aid"]
SHOWN = ("County Fair 2025", "Medical", "EMS 1")  # the channel selected in the picture


def provision(data: Path) -> None:
    with Directory.open(data) as directory:
        directory.add_user("chief", Role.ADMIN, PASSWORD)
        for name, event in DISPATCHERS.items():
            user = directory.add_user(name, Role.DISPATCH, PASSWORD)
            for team, channels in EVENTS[event].items():
                for channel in channels:
                    directory.add_channel(channel, team=team, event=event)
            directory.assign_dispatcher(directory.event_by_name(event).id, user.id)
        for channel in SITE_CHANNELS:
            directory.add_channel(channel)
        for name in FIELD_USERS:
            directory.add_user(name, Role.GENERAL, PASSWORD)
        for user, channel in (("medic12", "EMS 1"), ("medic14", "EMS 1"), ("tent.lead", "EMS 1"),
                              ("dispatcher", "EMS 1"), ("engine4", "Fire Ops"), ("adam12", "Police North")):
            directory.add_member(user, channel)


async def painted() -> None:
    # Under qasync, Qt lays out and paints while the loop waits (never processEvents()
    # from a task: it would run other tasks inside this one).
    await asyncio.sleep(0.5)


async def shoot_others(panel: ManagementWindow, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, tab in (("users", panel.users_tab), ("settings", panel.settings_tab), ("audit", panel.audit_tab)):
        panel.tabs.setCurrentWidget(tab)
        await panel.vm.settle()
        await painted()
        panel.grab().save(str(folder / f"management-{name}.png"))
    panel.tabs.setCurrentWidget(panel.users_tab)
    panel.users_tab.select_user("medic12")
    panel.users_tab.role_button.click()
    await painted()
    panel.opener.dialog.grab().save(str(folder / "management-dialog.png"))
    panel.opener.dialog.reject()


async def shoot(out: Path, others: Path | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "site"
        data.mkdir()
        provision(data)
        server = await EmbeddedServer(ServerConfig(data_dir=data, listen_port=0, ice_addresses=["127.0.0.1"])).start()
        keeper = TokenKeeper(server.url, "chief", PASSWORD)
        vm = ManagementViewModel(AdminApi(server.url, keeper.access_token), "admin")
        panel = ManagementWindow(vm, "chief")
        try:
            panel.resize(1180, 760)
            panel.show()
            await vm.settle()
            panel.channels_tab.select_path(*SHOWN)
            await vm.settle()
            medic = vm.user_named("engine4")
            await vm.add_member(vm.selected_node().id, medic)  # a change, and its status line
            await painted()
            panel.grab().save(str(out))
            if others is not None:
                await shoot_others(panel, others)
        finally:
            panel.close()
            await panel.closing_task
            await server.stop()


def main() -> int:
    import qasync

    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--others", type=Path, metavar="DIR")
    args = parser.parse_args()
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setQuitOnLastWindowClosed(False)
    apply_theme(app)
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    with loop:
        loop.run_until_complete(shoot(args.out.resolve(), args.others))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
