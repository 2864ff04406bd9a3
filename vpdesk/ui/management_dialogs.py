"""The management panel's small dialogs: a name, a channel, a user, a role, a password, a
confirmation. Each checks only that its fields are filled in (and that two passwords
match); the server checks the rest and the panel shows its answer.

`DialogOpener.ask` shows one with `open()`, never `exec()` (a nested Qt loop would stall
the asyncio tasks sharing this loop, the embedded server among them), and calls back
with the dialog once it was accepted.

GUI thread only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from PySide6.QtWidgets import QComboBox, QDialog, QLabel, QLineEdit, QWidget

from vpdesk.ui.dialogs import _FormDialog

logger = logging.getLogger(__name__)

ROLE_LABELS = {
    "admin": "Admin — everything, on every event",
    "dispatch": "Dispatch — the teams, channels and members of assigned events",
    "general": "General — talks on the channels they are on",
}


class NameDialog(_FormDialog):
    """One name: a new or renamed event, team, channel or user."""

    def __init__(self, title: str, intro: str, name: str = "", ok_text: str = "Save",
                 parent: QWidget | None = None) -> None:
        super().__init__(title, intro, ok_text, parent)
        self.name_edit = QLineEdit(name, self)
        self.name_edit.setMaxLength(64)
        self.name_edit.selectAll()
        self.form.addRow("Name", self.name_edit)
        self.name_edit.setFocus()

    def missing_field(self) -> str | None:
        return None if self.name() else "a name"

    def name(self) -> str:
        return self.name_edit.text().strip()


class ChannelDialog(NameDialog):
    """A channel's name and, inside an event with teams, its team."""

    def __init__(self, title: str, intro: str, teams: list[dict], *, name: str = "",
                 team_id: int | None = None, ok_text: str = "Save", parent: QWidget | None = None) -> None:
        super().__init__(title, intro, name, ok_text, parent)
        self.team_combo = QComboBox(self)
        self.team_combo.addItem("No team", None)
        for team in teams:
            self.team_combo.addItem(team["name"], team["id"])
        self.team_combo.setCurrentIndex(max(0, self.team_combo.findData(team_id)))
        if teams:
            self.form.addRow("Team", self.team_combo)
        else:
            self.team_combo.hide()

    def team_id(self) -> int | None:
        return self.team_combo.currentData()


def _password_pair(dialog: _FormDialog, label: str) -> tuple[QLineEdit, QLineEdit]:
    first, second = QLineEdit(dialog), QLineEdit(dialog)
    for edit in (first, second):
        edit.setEchoMode(QLineEdit.EchoMode.Password)
    dialog.form.addRow(label, first)
    dialog.form.addRow("Confirm", second)
    return first, second


def _role_combo(parent: QWidget, role: str) -> QComboBox:
    combo = QComboBox(parent)
    for value, label in ROLE_LABELS.items():
        combo.addItem(label, value)
    combo.setCurrentIndex(max(0, combo.findData(role)))
    return combo


class _PasswordChecked(_FormDialog):
    """A dialog with a password and its confirmation, which must match."""

    password_edit: QLineEdit
    confirm_edit: QLineEdit

    def accept(self) -> None:
        if self.password_edit.text() != self.confirm_edit.text():
            self.set_error("The two passwords differ.")
            return
        super().accept()

    def password(self) -> str:
        return self.password_edit.text()


class UserDialog(_PasswordChecked):
    """A new user: name, role and first password."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("New user", "The user signs in with this name and password.", "Create user", parent)
        self.name_edit = QLineEdit(self)
        self.name_edit.setMaxLength(64)
        self.role_combo = _role_combo(self, "general")
        self.form.addRow("Name", self.name_edit)
        self.form.addRow("Role", self.role_combo)
        self.password_edit, self.confirm_edit = _password_pair(self, "Password")
        self.name_edit.setFocus()

    def missing_field(self) -> str | None:
        if not self.name():
            return "a name"
        return None if self.password_edit.text() else "a password"

    def name(self) -> str:
        return self.name_edit.text().strip()

    def role(self) -> str:
        return self.role_combo.currentData()


class RoleDialog(_FormDialog):
    def __init__(self, user: dict, parent: QWidget | None = None) -> None:
        super().__init__(f"Role of {user['name']}", "What this user may do on the site.", "Change role", parent)
        self.role_combo = _role_combo(self, user.get("role", "general"))
        self.form.addRow("Role", self.role_combo)

    def role(self) -> str:
        return self.role_combo.currentData()


class PasswordDialog(_PasswordChecked):
    def __init__(self, user: dict, parent: QWidget | None = None) -> None:
        super().__init__(
            f"New password for {user['name']}",
            "Their consoles and browsers are signed out and must sign in with the new password.",
            "Set password",
            parent,
        )
        self.password_edit, self.confirm_edit = _password_pair(self, "New password")
        self.password_edit.setFocus()

    def missing_field(self) -> str | None:
        return None if self.password_edit.text() else "a password"


class ConfirmDialog(_FormDialog):
    """A yes/no question about something that cannot be undone."""

    def __init__(self, title: str, text: str, ok_text: str = "Delete", parent: QWidget | None = None) -> None:
        super().__init__(title, text, ok_text, parent)
        self.form.addRow(QLabel("This cannot be undone.", self))


class DialogOpener:
    """Shows one dialog at a time for the panel; `dialog` is the open one (tests fill it)."""

    def __init__(self, parent: QWidget) -> None:
        self._parent = parent
        self.dialog: QDialog | None = None

    def ask(self, dialog: _FormDialog, on_ok: Callable[[_FormDialog], None]) -> _FormDialog:
        if self.dialog is not None:
            self.dialog.reject()  # one question at a time
        dialog.setParent(self._parent, dialog.windowFlags())

        def finished(result: int) -> None:
            if self.dialog is dialog:
                self.dialog = None
            if result == QDialog.DialogCode.Accepted:
                on_ok(dialog)
            dialog.deleteLater()  # on this thread, now (see ui.gui_gc)

        dialog.finished.connect(finished)
        self.dialog = dialog
        dialog.open()
        return dialog
