"""Tests in this folder run on qasync's event loop: Qt and asyncio share one loop, as in
the console itself, so widgets, sessions and an embedded server all live together."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import qasync
from PySide6.QtWidgets import QApplication


def _qt_loop():
    app = QApplication.instance() or QApplication([])
    return qasync.QEventLoop(app)


def pytest_asyncio_loop_factories(config, item):
    return {"qasync": _qt_loop}
