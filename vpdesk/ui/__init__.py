"""The console's widgets (PySide6 QtWidgets only).

Widgets read the `ConsoleViewModel` (vpdesk.viewmodels.console) and call its actions;
they hold no dispatch logic of their own. GUI thread only.
"""

from vpdesk.ui.channel_list import ChannelList, ChannelRow
from vpdesk.ui.dialogs import LoginDialog, SetupDialog
from vpdesk.ui.level_meter import LevelMeter
from vpdesk.ui.main_window import MainWindow
from vpdesk.ui.preferences import PreferencesDialog, parse_ptt_key
from vpdesk.ui.ptt_panel import PttButton, PttPanel
from vpdesk.ui.theme import apply_theme

__all__ = [
    "ChannelList",
    "ChannelRow",
    "LevelMeter",
    "LoginDialog",
    "MainWindow",
    "PreferencesDialog",
    "PttButton",
    "PttPanel",
    "SetupDialog",
    "apply_theme",
    "parse_ptt_key",
]
