"""The management panel's admin tabs: Users, Settings and Audit.

Widgets only: they read `ManagementViewModel` and call its actions; what the server
answers appears in the panel's status line. GUI thread only.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable

from PySide6.QtCore import Qt
from PySide6.QtGui import QIntValidator
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from vpdesk.ui.management_dialogs import ConfirmDialog, NameDialog, PasswordDialog, RoleDialog, UserDialog
from vpdesk.viewmodels.management import ManagementViewModel

logger = logging.getLogger(__name__)

ROW_HEIGHT = 34
MAX_TALK_S = (5, 600)
# Audit detail keys shown in their own columns, not again among the details.
_AUDIT_OWN_KEYS = {"id", "at", "time", "ts", "kind", "actor", "actor_id", "actor_name", "address", "detail"}

Ask = Callable  # DialogOpener.ask


def button_row(*buttons: QPushButton, stretch_first: bool = False) -> QHBoxLayout:
    row = QHBoxLayout()
    row.setSpacing(8)
    if stretch_first:
        row.addStretch(1)
    for button in buttons:
        row.addWidget(button)
    if not stretch_first:
        row.addStretch(1)
    return row


def make_table(*headers: str) -> QTableWidget:
    """A read-only, row-selecting table with roomy rows; the last column stretches."""
    table = QTableWidget(0, len(headers))
    table.setHorizontalHeaderLabels(list(headers))
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    table.verticalHeader().hide()
    table.verticalHeader().setDefaultSectionSize(ROW_HEIGHT)
    table.setShowGrid(False)
    table.setAlternatingRowColors(True)
    table.horizontalHeader().setStretchLastSection(True)
    table.horizontalHeader().setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
    return table


def table_item(text: str, data=None) -> QTableWidgetItem:
    item = QTableWidgetItem(text)
    if data is not None:
        item.setData(Qt.ItemDataRole.UserRole, data)
    return item


class UsersTab(QWidget):
    """Every user with their role: create, rename, change role, new password, delete."""

    def __init__(self, vm: ManagementViewModel, ask: Ask, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._vm = vm
        self._ask = ask
        self.table = make_table("Name", "Role")
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Interactive)
        self.table.setColumnWidth(0, 360)
        self.new_button = QPushButton("New user…")
        self.rename_button = QPushButton("Rename…")
        self.role_button = QPushButton("Change role…")
        self.password_button = QPushButton("New password…")
        self.delete_button = QPushButton("Delete")
        self.delete_button.setObjectName("DangerButton")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(16, 16, 16, 16)
        layout.setSpacing(10)
        layout.addWidget(self.table, 1)
        layout.addLayout(button_row(self.new_button, self.rename_button, self.role_button,
                                    self.password_button, self.delete_button))
        self.new_button.clicked.connect(self.new_user)
        self.rename_button.clicked.connect(self.rename_user)
        self.role_button.clicked.connect(self.change_role)
        self.password_button.clicked.connect(self.new_password)
        self.delete_button.clicked.connect(self.delete_user)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        vm.dataChanged.connect(self.reload)
        self.reload()

    def reload(self) -> None:
        chosen = self.selected_user()
        self.table.setRowCount(0)
        for user in sorted(self._vm.users, key=lambda u: u["name"].casefold()):
            row = self.table.rowCount()
            self.table.insertRow(row)
            self.table.setItem(row, 0, table_item(user["name"], user))
            self.table.setItem(row, 1, table_item(user["role"]))
            if chosen is not None and user["id"] == chosen["id"]:
                self.table.selectRow(row)
        self._update_buttons()

    def select_user(self, name: str) -> None:
        for row in range(self.table.rowCount()):
            if self.table.item(row, 0).text() == name:
                self.table.selectRow(row)
                return
        raise KeyError(name)

    def selected_user(self) -> dict | None:
        rows = self.table.selectionModel().selectedRows()
        return self.table.item(rows[0].row(), 0).data(Qt.ItemDataRole.UserRole) if rows else None

    def _update_buttons(self) -> None:
        chosen = self.selected_user() is not None
        for button in (self.rename_button, self.role_button, self.password_button, self.delete_button):
            button.setEnabled(chosen)

    def new_user(self) -> None:
        self._ask(UserDialog(), lambda d: self._vm.create_user(d.name(), d.role(), d.password()))

    def rename_user(self) -> None:
        user = self.selected_user()
        if user is not None:
            dialog = NameDialog(f"Rename {user['name']}", "The user signs in with the new name.", user["name"], "Rename")
            self._ask(dialog, lambda d: self._vm.rename_user(user, d.name()))

    def change_role(self) -> None:
        user = self.selected_user()
        if user is not None:
            self._ask(RoleDialog(user), lambda d: self._vm.set_role(user, d.role()))

    def new_password(self) -> None:
        user = self.selected_user()
        if user is not None:
            self._ask(PasswordDialog(user), lambda d: self._vm.reset_password(user, d.password()))

    def delete_user(self) -> None:
        user = self.selected_user()
        if user is not None:
            dialog = ConfirmDialog(f"Delete {user['name']}?", f"{user['name']} is signed out everywhere and "
                                   "taken off every channel.")
            self._ask(dialog, lambda d: self._vm.delete_user(user))


class SettingsTab(QWidget):
    """The site's name and the longest a transmission may last."""

    def __init__(self, vm: ManagementViewModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._vm = vm
        self.site_name_edit = QLineEdit()
        self.site_name_edit.setMaxLength(64)
        # A line edit, not a spin box: the theme styles line edits; empty = the server's limit.
        self.max_talk_edit = QLineEdit()
        self.max_talk_edit.setValidator(QIntValidator(0, MAX_TALK_S[1], self.max_talk_edit))
        self.max_talk_edit.setPlaceholderText("server default")
        self.max_talk_edit.setFixedWidth(160)
        talk_row = QHBoxLayout()
        talk_row.setSpacing(8)
        talk_row.addWidget(self.max_talk_edit)
        talk_row.addWidget(QLabel(f"seconds ({MAX_TALK_S[0]} to {MAX_TALK_S[1]})"))
        talk_row.addStretch(1)
        talk_hint = QLabel("After this long the server ends a transmission, so a stuck key "
                           "cannot block a channel.")
        talk_hint.setObjectName("Hint")
        talk_hint.setWordWrap(True)
        name_hint = QLabel("Shown to everyone who signs in.")
        name_hint.setObjectName("Hint")
        self.save_button = QPushButton("Save settings")
        self.save_button.setDefault(True)
        self.revert_button = QPushButton("Revert")
        form = QFormLayout()
        form.setSpacing(10)
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        form.addRow("Site name", self.site_name_edit)
        form.addRow("", name_hint)
        form.addRow("Longest transmission", talk_row)
        form.addRow("", talk_hint)
        box = QWidget()
        box.setMaximumWidth(640)
        box_layout = QVBoxLayout(box)
        box_layout.setContentsMargins(0, 0, 0, 0)
        box_layout.addLayout(form)
        box_layout.addSpacing(8)
        box_layout.addLayout(button_row(self.save_button, self.revert_button))
        layout = QVBoxLayout(self)
        layout.setContentsMargins(24, 24, 24, 24)
        layout.addWidget(box)
        layout.addStretch(1)
        self.save_button.clicked.connect(self.save)
        self.revert_button.clicked.connect(self.reload)
        vm.dataChanged.connect(self.reload)
        self.reload()

    def reload(self) -> None:
        settings = self._vm.settings
        self.site_name_edit.setText(str(settings.get("site_name") or ""))
        talk_ms = settings.get("max_talk_ms")
        self.max_talk_edit.setText(str(round(talk_ms / 1000)) if isinstance(talk_ms, int) else "")

    def save(self) -> None:
        seconds = self.max_talk_edit.text().strip()
        # Out of range is the server's to refuse: its message says what it accepts.
        talk_ms = int(seconds) * 1000 if seconds else None
        self._vm.save_settings(self.site_name_edit.text().strip(), talk_ms)


def _when(value) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M:%S")
    return str(value or "")


def audit_columns(entry: dict) -> tuple[str, str, str, str]:
    """(when, kind, who, details) of one audit entry, for the table."""
    when = _when(next((entry[k] for k in ("at", "time", "ts") if k in entry), ""))
    actor = entry.get("actor_name") or entry.get("actor") or ""
    if isinstance(actor, dict):
        actor = actor.get("name", "")
    detail = dict(entry.get("detail") or {}) if isinstance(entry.get("detail"), dict) else {}
    detail.update({k: v for k, v in entry.items() if k not in _AUDIT_OWN_KEYS})
    if entry.get("address"):
        detail["from"] = entry["address"]
    # Ids say nothing to a reader; the names beside them do (the tooltip keeps them all).
    text = "  ·  ".join(f"{k}: {v}" for k, v in detail.items() if v not in (None, "") and not k.endswith("_id"))
    return when, str(entry.get("kind", "")), str(actor), text


class AuditTab(QWidget):
    """The newest audit entries; Refresh, and Older for the page before."""

    def __init__(self, vm: ManagementViewModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._vm = vm
        self.table = make_table("When", "What", "Who", "Details")
        header = self.table.horizontalHeader()
        for column, width in ((0, 200), (1, 170), (2, 140)):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.Interactive)
            self.table.setColumnWidth(column, width)
        self.refresh_button = QPushButton("Refresh")
        self.older_button = QPushButton("Older entries")
        self.count_label = QLabel()
        self.count_label.setObjectName("Hint")
        row = button_row(self.refresh_button, self.older_button)
        row.addWidget(self.count_label)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(16, 16, 16, 16)
        layout.setSpacing(10)
        layout.addWidget(self.table, 1)
        layout.addLayout(row)
        self.refresh_button.clicked.connect(lambda: self._vm.load_audit())
        self.older_button.clicked.connect(lambda: self._vm.load_audit(older=True))
        vm.auditChanged.connect(self.reload)
        self.reload()

    def reload(self) -> None:
        entries = self._vm.audit_entries
        self.table.setRowCount(len(entries))
        for row, entry in enumerate(entries):
            for column, text in enumerate(audit_columns(entry)):
                item = table_item(text)
                if column == 3:
                    item.setToolTip(json.dumps(entry, indent=1, ensure_ascii=False))
                self.table.setItem(row, column, item)
        self.older_button.setEnabled(self._vm.audit_next_before is not None)
        self.count_label.setText(f"{len(entries)} entries, newest first" if entries else "")
