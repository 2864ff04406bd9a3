"""The Qt binding must not leak or steal references on the console's hot calls.

PySide6-Essentials 6.12.0 on Python 3.11 dropped one reference to None on every Qt call
returning nothing (setText, update, QPainter calls) and one to True on every Signal.emit:
the console aborted with "none_dealloc" within a minute. The calls run in a child process
because the failure is an abort, not an exception.
"""

from __future__ import annotations

import os
import subprocess
import sys

CHILD = r"""
import sys
from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QApplication, QLabel

app = QApplication([])
label = QLabel()

class Emitter(QObject):
    level = Signal(float)

emitter = Emitter()
none_before, true_before = sys.getrefcount(None), sys.getrefcount(True)
for _ in range(50_000):
    label.setText("Dispatch")
    label.update()
    emitter.level.emit(0.5)
print(sys.getrefcount(None) - none_before, sys.getrefcount(True) - true_before)
"""


def test_void_calls_and_emits_keep_reference_counts():
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-1000:]
    none_drift, true_drift = (int(x) for x in done.stdout.split())
    # A few references come and go with interpreter state; 50,000 calls would show.
    assert abs(none_drift) < 100, none_drift
    assert abs(true_drift) < 100, true_drift
