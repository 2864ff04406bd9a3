"""The login dialog and the first-run setup dialog of an embedded site.

Both only check that fields are filled in; the caller validates the rest (a refused login,
a SetupError) and shows its message with `set_error`, keeping the dialog open.

GUI thread only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QVBoxLayout,
    QWidget,
)

from vpdesk.core.nodes import parse_url_list

logger = logging.getLogger(__name__)

DEFAULT_CHANNELS = "Dispatch\nOps 1\nOps 2"
EMBEDDED_HINT = "Leave empty to use the server built into this console"
SITE_HINT = (
    "A site of several nodes: their addresses separated by commas, in the order to try "
    "them (https://node1:8443, https://node2:8443)"
)


class _FormDialog(QDialog):
    """A titled form with an error line and OK/Cancel; subclasses fill the form."""

    def __init__(self, title: str, intro: str, ok_text: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.setMinimumWidth(480)
        heading = QLabel(title, self)
        heading.setObjectName("DialogTitle")
        intro_label = QLabel(intro, self)
        intro_label.setObjectName("Hint")
        intro_label.setWordWrap(True)
        self.form = QFormLayout()
        self.form.setSpacing(10)
        self.form.setLabelAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.error_label = QLabel(self)
        self.error_label.setObjectName("ErrorLabel")
        self.error_label.setWordWrap(True)
        self.error_label.hide()
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, self
        )
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText(ok_text)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(20, 16, 20, 16)
        layout.setSpacing(10)
        layout.addWidget(heading)
        layout.addWidget(intro_label)
        layout.addSpacing(4)
        layout.addLayout(self.form)
        layout.addWidget(self.error_label)
        layout.addWidget(self.buttons)

    def set_error(self, text: str) -> None:
        """Show `text` under the form ("" hides it)."""
        self.error_label.setText(text)
        self.error_label.setVisible(bool(text))

    def error(self) -> str:
        return self.error_label.text() if self.error_label.isVisibleTo(self) else ""

    def missing_field(self) -> str | None:
        """The first empty required field's name, or None. Subclasses say which."""
        return None

    def accept(self) -> None:
        missing = self.missing_field()
        if missing is not None:
            self.set_error(f"Please enter {missing}.")
            return
        self.set_error("")
        super().accept()


class LoginDialog(_FormDialog):
    """Server URL (empty: the embedded server), user name and password. The server field
    takes several comma-separated URLs for a site of several nodes."""

    def __init__(
        self,
        server_url: str | Sequence[str] | None,
        username: str | None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__("Sign in", "Sign in to the dispatch server.", "Sign in", parent)
        text = server_url if isinstance(server_url, str) or server_url is None else ", ".join(server_url)
        self.url_edit = QLineEdit(text or "", self)
        self.url_edit.setPlaceholderText(EMBEDDED_HINT)
        self.url_edit.setToolTip(SITE_HINT)
        self.url_edit.setCursorPosition(0)  # show the host, not the end of a long URL
        self.user_edit = QLineEdit(username or "", self)
        self.password_edit = QLineEdit(self)
        self.password_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.form.addRow("Server", self.url_edit)
        self.form.addRow("User name", self.user_edit)
        self.form.addRow("Password", self.password_edit)
        # Start where the typing is: a remembered user only needs the password.
        (self.password_edit if username else self.user_edit).setFocus()

    def missing_field(self) -> str | None:
        if not self.user_edit.text().strip():
            return "your user name"
        if not self.password_edit.text():
            return "your password"
        return None

    def values(self) -> tuple[str, str, str]:
        """(server URL or "" for the embedded server, user name, password)."""
        return self.url_edit.text().strip(), self.user_edit.text().strip(), self.password_edit.text()

    def server_urls(self) -> tuple[str, ...]:
        """The server field as a list of node URLs ("url1, url2"), normalised, in order.
        Raises ValueError with a sentence for set_error when an entry is no URL."""
        return parse_url_list(self.url_edit.text())


class SetupDialog(_FormDialog):
    """First run of an embedded site: the administrator account and the first channels."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(
            "Set up this site",
            "This console runs the site's server. Create the administrator account and the "
            "first channels; more can be added later.",
            "Create site",
            parent,
        )
        self.admin_edit = QLineEdit("admin", self)
        self.password_edit = QLineEdit(self)
        self.password_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.confirm_edit = QLineEdit(self)
        self.confirm_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.channels_edit = QPlainTextEdit(DEFAULT_CHANNELS, self)
        self.channels_edit.setTabChangesFocus(True)  # Tab leaves the box, as in the other fields
        self.channels_edit.setMinimumHeight(110)
        channels_hint = QLabel("One channel per line", self)
        channels_hint.setObjectName("Hint")
        self.form.addRow("Administrator", self.admin_edit)
        self.form.addRow("Password", self.password_edit)
        self.form.addRow("Confirm password", self.confirm_edit)
        self.form.addRow("Channels", self.channels_edit)
        self.form.addRow("", channels_hint)
        self.password_edit.setFocus()

    def channel_names(self) -> list[str]:
        return [line.strip() for line in self.channels_edit.toPlainText().splitlines() if line.strip()]

    def missing_field(self) -> str | None:
        if not self.admin_edit.text().strip():
            return "the administrator's name"
        if not self.password_edit.text():
            return "a password"
        if not self.confirm_edit.text():
            return "the password again"
        if not self.channel_names():
            return "at least one channel name"
        return None

    def values(self) -> tuple[str, str, str, list[str]]:
        """(admin name, password, confirmation, channel names without blank lines)."""
        return (
            self.admin_edit.text().strip(),
            self.password_edit.text(),
            self.confirm_edit.text(),
            self.channel_names(),
        )
