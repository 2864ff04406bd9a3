"""Take the README's screenshot: the real console, on a real embedded site, mid-shift.

Creates a throw-away site (a dispatcher and field users on a dozen channels), starts the
`vpdesk` command on it with its settings folder pre-filled (a few channels muted, some
volumes down), has two scripted field users talk on two channels while a third is idle,
and lets the console save a PNG of its window.

    unshare -n sh -c 'ip link set lo up && xvfb-run -a .venv/bin/python scripts/console_screenshot.py docs/console.png'

Run it in a loopback-only namespace: the field users are real aiortc peers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server.directory import Directory, Role  # noqa: E402
from server.media import aiortc_hooks  # noqa: E402
from tests.audio_tools import WavTrack, speech_wav  # noqa: E402
from tests.pulse import PulseAudio  # noqa: E402
from tests.server.harness import PttClient  # noqa: E402
from vpdesk.embedded import create_site  # noqa: E402

CHANNELS = [
    ("Dispatch", "Control"), ("Fire Ops", "Fire"), ("Fire Tactical 2", "Fire"),
    ("EMS 1", "Medical"), ("EMS 2", "Medical"), ("Police North", "Police"),
    ("Police South", "Police"), ("Traffic Control", "Police"), ("Public Works", "City services"),
    ("Water & Sewer", "City services"), ("Search and Rescue", "Fire"), ("Hospital Liaison", "Medical"),
]
PORT = 18080


def provision(data: Path) -> dict[str, int]:
    data.mkdir(parents=True)
    with Directory.open(data) as directory:  # channels with their teams first ...
        ids = {name: directory.add_channel(name, team=team, event="County").id for name, team in CHANNELS}
    # ... then the first-run setup, which keeps existing channels and adds the dispatcher.
    create_site(data, "dispatcher", "dispatch-pass", [name for name, _ in CHANNELS])
    with Directory.open(data) as directory:
        for user, channel in (("medic12", "EMS 1"), ("engine4", "Fire Ops"), ("adam12", "Police North")):
            directory.add_user(user, Role.GENERAL, "field-pass")
            directory.add_member(user, channel)
    return ids


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    aiortc_hooks.use_host_addresses(["127.0.0.1"])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ids = provision(tmp / "data" / "server")
        muted = ["Water & Sewer", "Public Works", "Police South"]
        settings = {
            "last_username": "dispatcher",
            "channels": {"embedded": {
                **{str(ids[n]): {"muted": True, "volume": 0.8} for n in muted},
                str(ids["EMS 2"]): {"muted": False, "volume": 0.55},
                str(ids["Traffic Control"]): {"muted": False, "volume": 0.7},
            }},
            "targets": {"embedded": ids["Fire Ops"]},
        }
        (tmp / "config").mkdir()
        (tmp / "config" / "settings.json").write_text(json.dumps(settings))
        # A sound server with a microphone and a speaker, as a dispatcher's PC has.
        pulse = PulseAudio()
        pulse.start(tmp)
        env = dict(
            os.environ,
            **pulse.env,
            VPDESK_CONFIG_DIR=str(tmp / "config"),
            VPDESK_DATA_DIR=str(tmp / "data"),
            VPDESK_LOG_DIR=str(tmp / "log"),
        )
        console = subprocess.Popen(
            [sys.executable, "-m", "vpdesk", "--listen", f"127.0.0.1:{PORT}",
             "--quit-after", "8", "--screenshot", str(args.out.resolve())],
            env=env, cwd=ROOT,
        )
        url = f"http://127.0.0.1:{PORT}"
        wav = speech_wav(tmp, "Engine four on scene, requesting a second unit", 3.0)
        talkers = []
        try:
            for _ in range(100):  # wait for the console's embedded server
                try:
                    talkers.append(await PttClient.connect(url, "medic12", slots=0, microphone=WavTrack(wav, loop=True), password="field-pass"))
                    break
                except OSError:
                    await asyncio.sleep(0.1)
            talkers.append(await PttClient.connect(url, "adam12", slots=0, microphone=WavTrack(wav, loop=True), password="field-pass"))
            await asyncio.sleep(3)
            await talkers[0].talk(ids["EMS 1"])
            await talkers[1].talk(ids["Police North"])
            await asyncio.to_thread(console.wait, 30)
        finally:
            for talker in talkers:
                await talker.close()
            if console.poll() is None:
                console.terminate()
            pulse.stop()
        print(f"wrote {args.out} (console exit {console.returncode})")
        return console.returncode or 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
