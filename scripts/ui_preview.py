"""Render the console's main window with made-up channels to a PNG, for looking at the design.

    python scripts/ui_preview.py OUT.png [--channels N] [--state transmitting|busy|idle]
                                 [--size 1400x900] [--toggle] [--offline]
                                 [--dialog preferences|login|setup]

Uses the test suite's fake viewmodel (no server, no audio). Runs on any Qt platform;
without a display it falls back to "offscreen" (or run it under `xvfb-run -a`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtWidgets import QApplication  # noqa: E402

from tests.vpdesk.fake_viewmodel import FakeConsoleViewModel  # noqa: E402
from vpdesk.core.channels import ChannelState  # noqa: E402
from vpdesk.core.connection import ConnectionState  # noqa: E402
from vpdesk.core.ptt import PttMode, TxState  # noqa: E402
from vpdesk.ui.dialogs import LoginDialog, SetupDialog  # noqa: E402
from vpdesk.ui.main_window import MainWindow  # noqa: E402
from vpdesk.ui.theme import apply_theme  # noqa: E402

CHANNELS = [
    ("Dispatch", "Control"),
    ("Fire Ops", "Fire"),
    ("Fire Tactical 2", "Fire"),
    ("EMS 1", "Medical"),
    ("EMS 2", "Medical"),
    ("Police North", "Police"),
    ("Police South", "Police"),
    ("Police Central", "Police"),
    ("Traffic Control", "Police"),
    ("Public Works", "City services"),
    ("Water & Sewer", "City services"),
    ("Search and Rescue", "Fire"),
    ("Hospital Liaison", "Medical"),
    ("Event Security — Stadium Gate A", "Events"),
    ("Transit Operations", "Transit"),
    ("Airport Ground", "Transit"),
    ("Harbour Patrol", "Police"),
    ("Mutual Aid", "Regional"),
    ("Hazmat", "Fire"),
    ("Command Net", "Control"),
    ("Animal Control", "City services"),
    ("School Safety", "Events"),
    ("Utilities", "City services"),
    ("County Sheriff", "Regional"),
]


def make_channels(count: int) -> list[ChannelState]:
    states = []
    for i in range(count):
        name, team = CHANNELS[i] if i < len(CHANNELS) else (f"Ops {i - len(CHANNELS) + 1}", "Operations")
        volume = (0.8, 1.0, 0.65, 0.9, 0.5)[i % 5]
        states.append(ChannelState(i + 1, name, team, "City of Riverside", joined=True, volume=volume))
    return states


def build(count: int, state: str, toggle: bool, offline: bool) -> tuple[FakeConsoleViewModel, MainWindow]:
    vm = FakeConsoleViewModel(make_channels(count))
    vm.put_user("Alice Moreno", "dispatch")
    for cid in (7, 10, 11, 21):
        if cid <= count:
            vm.set_muted(cid, True)
    window = MainWindow(vm)
    target = 2 if count >= 2 else 1
    vm.set_target(target)
    if count >= 4:
        vm.put_speaker(4, "Medic 12")
    if count >= 6:
        vm.put_speaker(6, "Unit 4-Adam-12")
    if count >= 9:
        vm.put_activity(9, 0.45)  # a transmission that just ended, still fading
    if toggle:
        vm.put_ptt_mode(PttMode.TOGGLE)
    if offline:
        vm.put_connection(ConnectionState.RECONNECTING, "Reconnecting in 4 s (attempt 3)")
    else:
        vm.put_connection(ConnectionState.CONNECTED, "Connected to embedded server as alice")
    if state == "transmitting":
        vm.put_speaker(target, "Alice Moreno", own=True)
        vm.put_tx_state(TxState.TRANSMITTING, remaining=42.3)
        vm.micLevel.emit(0.62)
        vm.micLevel.emit(0.55)
    elif state == "busy":
        vm.put_speaker(target, "Captain Reyes")
        vm.put_tx_state(TxState.DENIED, denied_holder="Captain Reyes")
        vm.message.emit("Channel busy: Captain Reyes is speaking")
    else:
        vm.message.emit("Transmit target: Fire Ops")
    vm.put_audio_problem("" if state == "idle" else "Output device 'USB Headset' not found — using system default")
    return vm, window


def grab_dialog(which: str, window: MainWindow, app: QApplication):
    if which == "preferences":
        dialog = window.make_preferences_dialog()
    elif which == "login":
        dialog = LoginDialog("https://dispatch.riverside.example:8443", "alice")
        dialog.set_error("Wrong user name or password")
    else:
        dialog = SetupDialog()
    dialog.show()
    for _ in range(5):
        app.processEvents()
    image = dialog.grab()
    dialog.close()
    return image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--channels", type=int, default=24)
    parser.add_argument("--state", choices=("transmitting", "busy", "idle"), default="idle")
    parser.add_argument("--size", default="1400x900", help="WIDTHxHEIGHT")
    parser.add_argument("--toggle", action="store_true", help="show toggle mode")
    parser.add_argument("--offline", action="store_true", help="show a lost connection")
    parser.add_argument("--dialog", choices=("preferences", "login", "setup"), help="render a dialog instead")
    args = parser.parse_args(argv)
    width, height = (int(x) for x in args.size.lower().split("x"))

    app = QApplication.instance() or QApplication([sys.argv[0]])
    apply_theme(app)
    vm, window = build(max(0, args.channels), args.state, args.toggle, args.offline)
    window.resize(width, height)
    window.show()
    for _ in range(5):  # let layouts and the lamp timer settle
        app.processEvents()
    window.channel_list.refresh_lamps()
    app.processEvents()
    image = window.grab() if args.dialog is None else grab_dialog(args.dialog, window, app)
    if not image.save(str(args.out)):
        print(f"could not write {args.out}", file=sys.stderr)
        return 1
    print(f"{args.out}: {image.width()}x{image.height()}")
    window.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
