"""`vpserver` as its own process: provisioned by the CLI, serving media, stopping cleanly."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import numpy as np

from tests.audio_tools import WavTrack
from tests.server.harness import PASSWORD, PttClient, close_all

ROOT = Path(__file__).resolve().parents[2]


def vpserver(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, **kwargs)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def wait_healthy(url: str, proc: subprocess.Popen) -> dict:
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            assert proc.poll() is None, proc.stderr.read()
            try:
                async with http.get(url + "/api/health") as resp:
                    return await resp.json()
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
    raise AssertionError("server did not come up")


async def test_standalone_node_serves_talks_and_stops_on_sigterm(tmp_path):
    data = str(tmp_path / "site")
    for command in (
        ["user", "add", "disp", "--role", "dispatch", "--password", PASSWORD],
        ["user", "add", "field", "--role", "general", "--password", PASSWORD],
        ["channel", "add", "Ops", "--team", "Fire"],
        ["member", "add", "disp", "Ops"],
        ["member", "add", "field", "Ops"],
    ):
        done = vpserver(*command, "--data", data)
        assert done.returncode == 0, done.stderr
    config = tmp_path / "node.toml"
    port = free_port()
    config.write_text(f'listen = "127.0.0.1:{port}"\nice_addresses = ["127.0.0.1"]\nmax_talk_ms = 30000\n')
    proc = subprocess.Popen([sys.executable, "-m", "server", "--config", str(config), "--data", data],
                            cwd=ROOT, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        assert (await wait_healthy(url, proc))["status"] == "ok"
        # The field users' page and its tones come from every node.
        async with aiohttp.ClientSession() as http:
            async with http.get(url + "/") as resp:
                assert resp.status == 200 and 'src="web/js/main.js"' in await resp.text()
            async with http.get(url + "/web/js/app.js") as resp:
                assert resp.status == 200 and resp.content_type == "text/javascript"
            async with http.get(url + "/tones/busy.wav") as resp:
                assert resp.status == 200 and (await resp.read())[:4] == b"RIFF"
        tone = (np.sin(np.arange(48_000) * 2 * np.pi * 440 / 48_000) * 8000).astype(np.int16)
        talker = await PttClient.connect(url, "disp", slots=1, microphone=WavTrack(tone, loop=True))
        listener = await PttClient.connect(url, "field", slots=1)
        try:
            channel = talker.hello["channels"][0]["id"]
            assert talker.hello["limits"]["max_talk_ms"] == 30000  # from the config file
            await listener.join(channel)
            assert (await talker.talk(channel))["granted"]
            await asyncio.sleep(1.0)
            assert await listener.inbound_packets(channel) > 20
            # Provisioning while it runs: a new member sees the channel without reconnecting.
            assert vpserver("user", "add", "late", "--role", "general", "--password", PASSWORD, "--data", data).returncode == 0
            assert vpserver("member", "add", "late", "Ops", "--data", data).returncode == 0
            late = await PttClient.connect(url, "late", media=False)
            assert [c["name"] for c in late.hello["channels"]] == ["Ops"]
            await late.close()
        finally:
            await close_all(talker, listener)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        log = proc.stderr.read()
        assert "stopped" in log and "Traceback" not in log and "Task was destroyed" not in log
        assert "session=" in log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_every_subcommand_has_help():
    for args in (["--help"], ["user", "add", "--help"], ["channel", "add", "--help"], ["member", "add", "--help"]):
        done = vpserver(*args)
        assert done.returncode == 0 and "usage:" in done.stdout
