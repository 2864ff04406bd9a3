#!/usr/bin/env python3
"""Time the console's start-up: process start → main window shown (docs/installing.md).

    .venv/bin/python installers/measure_startup.py dist/vpdesk/vpdesk [--runs 5]
    .venv/bin/python installers/measure_startup.py --source [--runs 5]   # python -m vpdesk

Each run starts the app offscreen on a fresh embedded site (loopback, no audio device)
in a temporary folder, waits for the log line the console writes when its window is
shown ("window shown (monotonic T)", on the system-wide monotonic clock), and quits it
with SIGTERM. The first run is with a cold disk cache only if nothing ran it before.
Prints each time and the median. A measurement, never a test.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WAIT_S = 60.0
_SHOWN = re.compile(r"window shown \(monotonic ([0-9.]+)\)")


def one_run(command: list[str], folder: Path) -> float:
    sys.path.insert(0, str(ROOT))
    from vpdesk.embedded import create_site

    create_site(folder / "data" / "server", "chief", "long-enough-pw", ["Dispatch"])
    log = folder / "log" / "vpdesk.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "QT_"))}
    env.update(
        QT_QPA_PLATFORM="offscreen",
        VPDESK_CONFIG_DIR=str(folder / "config"),
        VPDESK_DATA_DIR=str(folder / "data"),
        VPDESK_LOG_DIR=str(log.parent),
        PULSE_SERVER=f"unix:{folder}/no-pulse",
    )
    started = time.monotonic()
    proc = subprocess.Popen([*command, "--listen", "127.0.0.1:0"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = started + WAIT_S
        while time.monotonic() < deadline and proc.poll() is None:
            found = _SHOWN.search(log.read_text()) if log.exists() else None
            if found:
                return float(found.group(1)) - started
            time.sleep(0.02)
        raise SystemExit(f"no 'window shown' within {WAIT_S} s (exit {proc.poll()}); see {log}")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(WAIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise SystemExit(f"SIGTERM did not end the app within {WAIT_S} s; see {log}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("executable", nargs="?", type=Path, help="the frozen app's executable")
    parser.add_argument("--source", action="store_true", help="time `python -m vpdesk` from this checkout instead")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    if args.source == (args.executable is not None):
        parser.error("give the executable, or --source")
    command = [sys.executable, "-m", "vpdesk"] if args.source else [str(args.executable.resolve())]
    times = []
    for run in range(args.runs):
        folder = Path(tempfile.mkdtemp(prefix="vpdesk-startup-"))
        times.append(one_run(command, folder))
        shutil.rmtree(folder)  # kept when the run failed: its log is in there
        print(f"run {run + 1}: window shown after {times[-1]:.2f} s", flush=True)
    print(f"median {statistics.median(times):.2f} s over {len(times)} runs ({' '.join(f'{t:.2f}' for t in times)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
