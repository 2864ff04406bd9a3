"""The console quits cleanly on SIGTERM (from source: the frozen app's test does the same
with the bundle, in test_linux_bundle.py). Fast: part of the main suite."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vpdesk.embedded import create_site

WAIT_S = 60.0


def wait_for_line(log: Path, text: str, proc: subprocess.Popen, timeout: float = WAIT_S) -> str:
    """The first line of `log` containing `text`; fails if the process ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists():
            for line in log.read_text(errors="replace").splitlines():
                if text in line:
                    return line
        if proc.poll() is not None:
            pytest.fail(f"vpdesk exited ({proc.returncode}) before logging {text!r}")
        time.sleep(0.05)
    pytest.fail(f"vpdesk did not log {text!r} within {timeout} s")


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM is POSIX")
@pytest.mark.parametrize("when", ["window shown", "media connected"])
def test_sigterm_quits_the_console_cleanly(tmp_path, when):
    """At once (the session still connecting) or once the console is on the air."""
    create_site(tmp_path / "data" / "server", "chief", "long-enough-pw", ["Dispatch"])
    log = tmp_path / "log" / "vpdesk.log"
    env = dict(
        os.environ,
        QT_QPA_PLATFORM="offscreen",
        VPDESK_CONFIG_DIR=str(tmp_path / "config"),
        VPDESK_DATA_DIR=str(tmp_path / "data"),
        VPDESK_LOG_DIR=str(log.parent),
        PULSE_SERVER=f"unix:{tmp_path}/no-pulse",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "vpdesk", "--listen", "127.0.0.1:0"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert "window shown (monotonic " in wait_for_line(log, "window shown", proc)
        wait_for_line(log, when, proc)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, stderr[-2000:]
    text = log.read_text()
    assert "quit requested" in text and "vpdesk stopped" in text
    assert (tmp_path / "config" / "settings.json").is_file()  # saved on the way out
