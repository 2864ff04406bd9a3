"""The management panel: a window beside the console for admin and dispatch users.

Tabs: "Events & channels" (the events → teams → channels tree, with the selected
channel's members or the selected event's dispatchers beside it) for both roles; Users,
Settings and Audit for admins only. Controls a role cannot use are hidden or disabled;
the server still checks every call, and whatever it refuses is shown, in its own words,
in the status line at the bottom.

Widgets only: state and server calls live in `ManagementViewModel`. GUI thread only.
"""

from __future__ import annotations

import logging

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import (
    QComboBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QHeaderView,
    QPushButton,
    QSplitter,
    QTabWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from vpdesk.ui.management_dialogs import ChannelDialog, ConfirmDialog, DialogOpener, NameDialog
from vpdesk.ui.management_tabs import ROW_HEIGHT, AuditTab, SettingsTab, UsersTab, button_row, make_table, table_item
from vpdesk.ui.theme import COLORS
from vpdesk.viewmodels.management import ManagementViewModel, Node

logger = logging.getLogger(__name__)

KEY_ROLE = Qt.ItemDataRole.UserRole
DELETE_WARNINGS = {
    "event": "Its teams and channels go too, and everyone on those channels stops hearing them.",
    "team": "Its channels stay, with no team.",
    "channel": "Everyone on it stops hearing it at once.",
}


def panel_stylesheet() -> str:
    """What the console's theme has no need for elsewhere: tabs, trees, lists, tables."""
    c = COLORS
    return f"""
QTabWidget::pane {{ border: 1px solid {c.border}; border-radius: 6px; background: {c.window}; top: -1px; }}
QTabBar::tab {{ background: {c.window}; color: {c.text_dim}; padding: 8px 20px; margin-right: 2px;
    border: 1px solid {c.border}; border-bottom: none; border-top-left-radius: 6px; border-top-right-radius: 6px; }}
QTabBar::tab:selected {{ background: {c.surface}; color: {c.text}; border-color: {c.border_strong}; font-weight: bold; }}
QTabBar::tab:hover:!selected {{ color: {c.text}; }}
QTreeWidget, QTableWidget {{ background: {c.surface_sunken}; alternate-background-color: {c.surface};
    border: 1px solid {c.border}; border-radius: 4px; outline: 0; }}
QTreeWidget:focus, QTableWidget:focus {{ border: 1px solid {c.accent}; }}
QTreeWidget::item {{ padding: 4px 6px; }}
QTableWidget::item {{ padding: 0 8px; }}
QTreeWidget::item:selected, QTableWidget::item:selected {{
    background: {c.target_row}; color: {c.text}; }}
QTreeWidget::item:hover:!selected {{ background: {c.surface_alt}; }}
QHeaderView::section {{ background: {c.window}; color: {c.text_faint}; border: none;
    border-bottom: 1px solid {c.border}; padding: 6px 8px; font-size: 9pt; font-weight: bold; }}
QPushButton#DangerButton:disabled {{ color: {c.text_faint}; }}
QSplitter#ChannelsSplit::handle {{ background: transparent; }}
QPushButton#DangerButton {{ color: #f0a3a1; }}
QPushButton#DangerButton:hover {{ background: #4a2b2d; border: 1px solid {c.red}; }}
QLabel#PanelTitle {{ font-size: 15pt; font-weight: bold; }}
QLabel#SectionTitle {{ font-size: 13pt; font-weight: bold; }}
QLabel#ManageStatus {{ padding: 8px 12px; border-radius: 5px; font-size: 11pt; color: {c.text_dim};
    background: {c.surface}; border: 1px solid {c.border}; }}
QLabel#ManageStatus[kind="ok"] {{ color: #9fe0b2; border: 1px solid #2f6b45; }}
QLabel#ManageStatus[kind="error"] {{ background: #45291b; color: #ffc49c; border: 1px solid {c.orange};
    font-weight: bold; }}
"""


class ChannelsTab(QWidget):
    """The tree, its buttons, and the selection's members or dispatchers."""

    def __init__(self, vm: ManagementViewModel, opener: DialogOpener, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._vm = vm
        self._ask = opener.ask
        self._expanded: set = set()  # keys of the rows the dispatcher left open
        self._seen: set = set()  # keys shown before: a new row opens, a known one stays as left

        self.tree = QTreeWidget()
        self.tree.setHeaderHidden(True)
        self.tree.setIndentation(22)
        self.tree.setUniformRowHeights(True)
        self.tree.setMinimumWidth(320)
        self.new_event_button = QPushButton("New event…")
        self.new_team_button = QPushButton("New team…")
        self.new_channel_button = QPushButton("New channel…")
        self.rename_button = QPushButton("Rename…")
        self.delete_button = QPushButton("Delete")
        self.delete_button.setObjectName("DangerButton")
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 8, 0)
        left_layout.setSpacing(10)
        left_layout.addWidget(self.tree, 1)
        left_layout.addLayout(button_row(self.new_event_button, self.new_team_button, self.new_channel_button))
        left_layout.addLayout(button_row(self.rename_button, self.delete_button))

        self.detail_title = QLabel()
        self.detail_title.setObjectName("SectionTitle")
        self.detail_hint = QLabel()
        self.detail_hint.setObjectName("Hint")
        self.detail_hint.setWordWrap(True)
        self.people = make_table("Name", "Role")
        self.people.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.people.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Fixed)
        self.people.setColumnWidth(1, 110)
        self.people_combo = QComboBox()
        self.people_combo.setMinimumWidth(200)
        self.add_button = QPushButton()
        self.remove_button = QPushButton()
        self.people_box = QWidget()
        box_layout = QVBoxLayout(self.people_box)
        box_layout.setContentsMargins(0, 0, 0, 0)
        box_layout.setSpacing(10)
        box_layout.addWidget(self.people, 1)
        box_layout.addLayout(button_row(self.remove_button))  # acts on the list's selection
        add_row = QHBoxLayout()
        add_row.setSpacing(8)
        add_row.addWidget(self.people_combo, 1)
        add_row.addWidget(self.add_button)
        box_layout.addSpacing(6)
        box_layout.addLayout(add_row)
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(12, 0, 0, 0)
        right_layout.setSpacing(8)
        right_layout.addWidget(self.detail_title)
        right_layout.addWidget(self.detail_hint)
        right_layout.addWidget(self.people_box, 1)
        right_layout.addStretch(0)

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.setObjectName("ChannelsSplit")
        splitter.setHandleWidth(12)
        splitter.addWidget(left)
        splitter.addWidget(right)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        splitter.setChildrenCollapsible(False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(16, 16, 16, 16)
        layout.addWidget(splitter)

        self.new_event_button.clicked.connect(self.new_event)
        self.new_team_button.clicked.connect(self.new_team)
        self.new_channel_button.clicked.connect(self.new_channel)
        self.rename_button.clicked.connect(self.rename)
        self.delete_button.clicked.connect(self.delete)
        self.add_button.clicked.connect(self._add_person)
        self.remove_button.clicked.connect(self._remove_person)
        self.people.itemSelectionChanged.connect(self._update_people_buttons)
        self.tree.currentItemChanged.connect(self._on_current_changed)
        self.tree.itemExpanded.connect(lambda item: self._expanded.add(item.data(0, KEY_ROLE)))
        self.tree.itemCollapsed.connect(lambda item: self._expanded.discard(item.data(0, KEY_ROLE)))
        vm.dataChanged.connect(self.reload)
        vm.membersChanged.connect(self._show_detail)
        self.reload()

    # --- the tree ----------------------------------------------------------------------

    def reload(self) -> None:
        self.tree.blockSignals(True)  # rebuilding is not the dispatcher choosing rows
        try:
            self.tree.clear()
            for node in self._vm.tree:
                self.tree.addTopLevelItem(self._item(node))
            items = self._items()
            for item in items:
                key = item.data(0, KEY_ROLE)
                if key not in self._seen:
                    self._expanded.add(key)
                item.setExpanded(key in self._expanded)
            self._seen = {item.data(0, KEY_ROLE) for item in items}
            current = self._find(self._vm.selected)
            if current is not None:
                self.tree.setCurrentItem(current)
        finally:
            self.tree.blockSignals(False)
        self.new_event_button.setVisible(self._vm.is_admin)
        self._show_detail()

    def _item(self, node: Node) -> QTreeWidgetItem:
        item = QTreeWidgetItem([node.name])
        item.setData(0, KEY_ROLE, node.key)
        item.setSizeHint(0, QSize(0, ROW_HEIGHT))
        if node.kind in ("event", "site"):
            font = QFont(self.tree.font())
            font.setBold(True)
            font.setItalic(node.kind == "site")
            item.setFont(0, font)
        elif node.kind == "team":
            item.setForeground(0, QColor(COLORS.text_dim))  # a grouping, quieter than its channels
        for child in node.children:
            item.addChild(self._item(child))
        return item

    def _items(self) -> list[QTreeWidgetItem]:
        found, stack = [], [self.tree.topLevelItem(i) for i in range(self.tree.topLevelItemCount())]
        while stack:
            item = stack.pop()
            found.append(item)
            stack.extend(item.child(i) for i in range(item.childCount()))
        return found

    def _find(self, key) -> QTreeWidgetItem | None:
        return next((item for item in self._items() if item.data(0, KEY_ROLE) == key), None)

    def item_named(self, *path: str) -> QTreeWidgetItem:
        """The item at `path` of names from the top (tests, screenshots)."""
        items = [self.tree.topLevelItem(i) for i in range(self.tree.topLevelItemCount())]
        item = None
        for name in path:
            item = next((i for i in items if i.text(0) == name), None)
            if item is None:
                raise KeyError(path)
            items = [item.child(i) for i in range(item.childCount())]
        return item

    def select_path(self, *path: str) -> None:
        self.tree.setCurrentItem(self.item_named(*path))

    def top_level_names(self) -> list[str]:
        return [self.tree.topLevelItem(i).text(0) for i in range(self.tree.topLevelItemCount())]

    def _on_current_changed(self, current: QTreeWidgetItem | None, _previous) -> None:
        self._vm.select(current.data(0, KEY_ROLE) if current is not None else None)
        self._show_detail()

    # --- the buttons ---------------------------------------------------------------------

    def _update_tree_buttons(self, node: Node | None) -> None:
        vm = self._vm
        self.new_team_button.setEnabled(node is not None and node.event_id is not None and vm.can_add_inside(node))
        self.new_channel_button.setEnabled(vm.can_add_inside(node))
        self.rename_button.setEnabled(vm.can_edit(node))
        self.delete_button.setEnabled(vm.can_edit(node))

    def new_event(self) -> None:
        dialog = NameDialog("New event", "An event holds the teams and channels of one operation; "
                            "dispatchers are assigned to events.", ok_text="Create event")
        self._ask(dialog, lambda d: self._vm.create_event(d.name()))

    def new_team(self) -> None:
        node = self._vm.selected_node()
        if node is None or node.event_id is None:
            return
        event = self._vm.node(("event", node.event_id))
        dialog = NameDialog("New team", f"A team in {event.name if event else 'this event'}.", ok_text="Create team")
        self._ask(dialog, lambda d: self._vm.create_team(node.event_id, d.name()))

    def new_channel(self) -> None:
        node = self._vm.selected_node()
        if node is None:
            return
        teams = self._vm.teams_of(node.event_id)
        where = self._vm.node(("event", node.event_id)).name if node.event_id is not None else "no event (site-wide)"
        dialog = ChannelDialog("New channel", f"A channel in {where}.", teams, team_id=node.team_id,
                               ok_text="Create channel")

        def create(d: ChannelDialog) -> None:
            team_id = d.team_id()
            # A team names its event; the event alone places a channel in no team.
            self._vm.create_channel(d.name(), None if team_id is not None else node.event_id, team_id)

        self._ask(dialog, create)

    def rename(self) -> None:
        node = self._vm.selected_node()
        if node is None or not self._vm.can_edit(node):
            return
        if node.kind == "channel":
            teams = self._vm.teams_of(node.event_id)
            dialog = ChannelDialog(f"Channel {node.name}", "Its name, and its team within the event.", teams,
                                   name=node.name, team_id=node.team_id)
            # Without teams to choose from (site-wide), the channel keeps the one it has.
            self._ask(dialog, lambda d: self._vm.update_channel(node.id, d.name(), d.team_id() if teams else node.team_id))
            return
        dialog = NameDialog(f"Rename {node.kind} {node.name}", f"A new name for the {node.kind}.", node.name, "Rename")
        rename = self._vm.rename_event if node.kind == "event" else self._vm.rename_team
        self._ask(dialog, lambda d: rename(node.id, d.name()))

    def delete(self) -> None:
        node = self._vm.selected_node()
        if node is None or not self._vm.can_edit(node):
            return
        remove = {"event": self._vm.delete_event, "team": self._vm.delete_team, "channel": self._vm.delete_channel}
        dialog = ConfirmDialog(f"Delete {node.kind} {node.name}?", DELETE_WARNINGS[node.kind])
        self._ask(dialog, lambda d: remove[node.kind](node.id))

    # --- members or dispatchers -------------------------------------------------------------

    def _mode(self, node: Node | None) -> str:
        if node is not None and node.kind == "channel":
            return "members"
        if node is not None and node.kind == "event" and self._vm.is_admin:
            return "dispatchers"
        return ""

    def _show_detail(self) -> None:
        vm = self._vm
        node = vm.selected_node()
        self._update_tree_buttons(node)
        mode = self._mode(node)
        self.people_box.setVisible(bool(mode))
        self.people.setRowCount(0)
        self.people_combo.clear()
        if mode == "members":
            self.detail_title.setText(f"Members of {node.name}")
            self.detail_hint.setText("They hear and talk on this channel. Changes act at once on their sessions.")
            people, candidates = vm.members, vm.addable_members()
            self.add_button.setText("Add member")
            self.remove_button.setText("Remove member")
        elif mode == "dispatchers":
            self.detail_title.setText(f"Dispatchers of {node.name}")
            self.detail_hint.setText("They see this event and manage its teams, channels and members.")
            people, candidates = vm.dispatchers_of(node.id), vm.assignable_dispatchers(node.id)
            self.add_button.setText("Assign")
            self.remove_button.setText("Unassign")
        else:
            self.detail_title.setText(node.name if node is not None else "Nothing selected")
            self.detail_hint.setText("Select a channel to see and change who is on it."
                                     + (" Select an event to assign its dispatchers." if vm.is_admin else ""))
            people, candidates = [], []
        for row, person in enumerate(people):
            self.people.insertRow(row)
            self.people.setItem(row, 0, table_item(person["name"], person))
            self.people.setItem(row, 1, table_item(person.get("role", "")))
        for person in candidates:
            self.people_combo.addItem(f"{person['name']}  ({person['role']})", person)
        self.people_combo.setEnabled(bool(candidates))
        self._update_people_buttons()

    def _update_people_buttons(self) -> None:
        self.add_button.setEnabled(self.people_combo.count() > 0)
        self.remove_button.setEnabled(self._chosen_person() is not None)

    def member_names(self) -> list[str]:
        return [self.people.item(row, 0).text() for row in range(self.people.rowCount())]

    def _chosen_person(self) -> dict | None:
        rows = self.people.selectionModel().selectedRows()
        return self.people.item(rows[0].row(), 0).data(KEY_ROLE) if rows else None

    def choose_person(self, name: str) -> None:
        index = next(i for i in range(self.people_combo.count()) if self.people_combo.itemData(i)["name"] == name)
        self.people_combo.setCurrentIndex(index)

    def select_person(self, name: str) -> None:
        self.people.selectRow(self.member_names().index(name))

    def _add_person(self) -> None:
        node, person = self._vm.selected_node(), self.people_combo.currentData()
        if node is None or person is None:
            return
        if node.kind == "channel":
            self._vm.add_member(node.id, person)
        else:
            self._vm.assign_dispatcher(node.id, person)

    def _remove_person(self) -> None:
        node, person = self._vm.selected_node(), self._chosen_person()
        if node is None or person is None:
            return
        if node.kind == "channel":
            self._vm.remove_member(node.id, person)
        else:
            self._vm.unassign_dispatcher(node.id, person)


class ManagementWindow(QWidget):
    """The panel's window over `vm`. Closing it closes the view model's connections and
    deletes both (`closing_task`). GUI thread only."""

    closed = Signal()

    def __init__(self, vm: ManagementViewModel, user_name: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent, Qt.WindowType.Window)
        self.vm = vm
        vm.setParent(self)
        self.closing_task = None
        self._loaded = False
        self.setWindowTitle("vpdesk — Management")
        self.setMinimumSize(960, 620)
        self.resize(1120, 740)
        self.setStyleSheet(panel_stylesheet())
        self.opener = DialogOpener(self)

        title = QLabel("Management")
        title.setObjectName("PanelTitle")
        self.who_label = QLabel()
        self.who_label.setObjectName("Hint")
        self.refresh_button = QPushButton("Refresh")
        header = QFrame()
        header.setObjectName("TopBar")
        header_layout = QHBoxLayout(header)
        header_layout.setContentsMargins(20, 12, 20, 12)
        header_layout.setSpacing(14)
        header_layout.addWidget(title)
        header_layout.addWidget(self.who_label)
        header_layout.addStretch(1)
        header_layout.addWidget(self.refresh_button)

        self.channels_tab = ChannelsTab(vm, self.opener)
        self.users_tab = UsersTab(vm, self.opener.ask)
        self.settings_tab = SettingsTab(vm)
        self.audit_tab = AuditTab(vm)
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(False)
        self.tabs.addTab(self.channels_tab, "Events && channels")
        self.tabs.addTab(self.users_tab, "Users")
        self.tabs.addTab(self.settings_tab, "Settings")
        self.tabs.addTab(self.audit_tab, "Audit log")

        self.status_label = QLabel("")
        self.status_label.setObjectName("ManageStatus")
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        body = QVBoxLayout()
        body.setContentsMargins(16, 14, 16, 16)
        body.setSpacing(12)
        body.addWidget(self.tabs, 1)
        body.addWidget(self.status_label)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(header)
        layout.addLayout(body, 1)

        self._user_name = user_name
        self.refresh_button.clicked.connect(self.refresh)
        self.tabs.currentChanged.connect(self._on_tab_changed)
        vm.statusChanged.connect(self._on_status)
        vm.roleChanged.connect(lambda _role: self.apply_role())
        self.apply_role()
        self._on_status(vm.status_text, vm.status_kind)

    def apply_role(self) -> None:
        """Show only what the role can use: the admin tabs are the admin's."""
        admin = self.vm.is_admin
        for tab in (self.users_tab, self.settings_tab, self.audit_tab):
            self.tabs.setTabVisible(self.tabs.indexOf(tab), admin)
        self.who_label.setText(f"{self._user_name}  ·  {self.vm.role.upper()}" if self._user_name else self.vm.role.upper())

    def visible_tabs(self) -> list[str]:
        return [self.tabs.tabText(i).replace("&&", "&") for i in range(self.tabs.count()) if self.tabs.isTabVisible(i)]

    def refresh(self) -> None:
        self.vm.refresh()
        if self.tabs.currentWidget() is self.audit_tab:
            self.vm.load_audit()

    def _on_tab_changed(self, _index: int) -> None:
        if self.tabs.currentWidget() is self.audit_tab:
            self.vm.load_audit()  # the log moves on its own: always the latest

    def _on_status(self, text: str, kind: str) -> None:
        self.status_label.setText(text or "Ready")
        self.status_label.setProperty("kind", kind)
        self.status_label.style().unpolish(self.status_label)
        self.status_label.style().polish(self.status_label)

    def showEvent(self, event) -> None:
        if not self._loaded:
            self._loaded = True
            self.vm.refresh()
        super().showEvent(event)

    def closeEvent(self, event) -> None:
        if self.opener.dialog is not None:
            self.opener.dialog.reject()
        if self.closing_task is None:
            self.closing_task = self.vm.shutdown(then=self.deleteLater)
            self.closed.emit()
        super().closeEvent(event)
