"""Tests in this folder run on qasync's event loop: Qt and asyncio share one loop, as in
the console itself, so widgets, sessions and an embedded server all live together."""

from __future__ import annotations

import asyncio
import gc
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest
import pytest_asyncio
import pytestqt.plugin
import qasync
from PySide6.QtWidgets import QApplication


def _qt_loop():
    # As in vpdesk.app (see vpdesk.ui.gui_gc): no garbage collection on other threads;
    # _finish_leftover_tasks collects on this one after every test.
    gc.disable()
    app = QApplication.instance() or QApplication([])
    # As in vpdesk.app: closing a dialog must not stop the loop the tests run on.
    app.setQuitOnLastWindowClosed(False)
    return qasync.QEventLoop(app)


def pytest_asyncio_loop_factories(config, item):
    return {"qasync": _qt_loop}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """pytest-qt pumps Qt events between test phases. Under qasync that runs asyncio
    callbacks while no asyncio loop is running (tasks then fail with "no running event
    loop" or "bound to a different event loop"), so here only the loop pumps them."""
    saved = pytestqt.plugin._process_events
    pytestqt.plugin._process_events = lambda: None
    try:
        return (yield)
    finally:
        pytestqt.plugin._process_events = saved


def pytest_collection_modifyitems(items):
    # aioice/aiortc coroutines of peers closed at the end of a test are now and then
    # collected unstarted under qasync's loop ("Connection.query_consent was never
    # awaited"; seen in about 1 run in 8). It is teardown noise, reported at whichever
    # test runs next; every other warning stays an error here too. The embedded server's
    # connections start ConsentChecker.watch (server/media/consent.py) in aioice's place,
    # the same way: a task aioice creates once ICE completes, cancelled by close().
    unstarted = r"(Connection|ConsentChecker)\.\w+"
    for item in items:
        item.add_marker(pytest.mark.filterwarnings(rf"ignore:coroutine '{unstarted}' was never awaited:RuntimeWarning"))
        item.add_marker(
            pytest.mark.filterwarnings(
                rf"ignore:Exception ignored in. <coroutine object {unstarted}:pytest.PytestUnraisableExceptionWarning"
            )
        )


@pytest_asyncio.fixture(autouse=True, loop_scope="session")
async def _finish_leftover_tasks():
    """qasync's loop closes without pytest-asyncio's final sweep of leftover tasks:
    finish aiortc's (ICE consent checks and the like) here, so none is collected half-run."""
    yield
    for _ in range(5):  # cancelling one may start another (aioice's close does)
        await asyncio.sleep(0.01)
        leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if not leftovers:
            break
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)
    gc.collect()
