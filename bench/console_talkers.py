"""Scripted talkers for bench/console_load.py, in their own process so that they do not
load the console being measured.

Each talker is a logged-in session with one peer connection (bench/forward.py's Client)
that takes the floor on its channel and sends pre-encoded PTT Opus (espeak-ng speech) at
50 packets/s with aiortc_hooks.RawRtpWriter (bench/forward.py's Talker): no encoder runs.

Protocol as bench/console_agent.py: JSON lines on stdin, replies on stdout prefixed "@@".
  {"cmd": "connect", "url": URL, "talkers": [[user, channel_id], ...]}
  {"cmd": "talk", "seconds": S}   all at once; replies when every talker has released
  {"cmd": "quit"}
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.forward import FRAME_S, Client, Talker, encoded_source, login_token  # noqa: E402

logger = logging.getLogger("console_talkers")


def reply(obj: dict) -> None:
    sys.stdout.write("@@" + json.dumps(obj) + "\n")
    sys.stdout.flush()


class Talkers:
    def __init__(self) -> None:
        self.clients: list[tuple[str, int, Client]] = []
        self.payloads: list[bytes] = []

    async def connect(self, url: str, talkers: list[list]) -> dict:
        for user, channel in talkers:
            token = await login_token(url, user)
            client = await Client.connect(url, token, None, listen=False)
            self.clients.append((user, int(channel), client))
        return {"connected": len(self.clients)}

    async def talk(self, seconds: float) -> dict:
        frames = int(seconds / FRAME_S) + 10
        if len(self.payloads) < frames:
            self.payloads = await asyncio.to_thread(encoded_source, frames, Path(tempfile.mkdtemp()))
        granted = []
        for user, channel, client in self.clients:
            r = await client.signaling.request("floor_request", channel=channel)
            granted.append(bool(r.get("granted")))
        talkers = [Talker(client, self.payloads) for _, _, client in self.clients]
        t0 = time.monotonic()
        await asyncio.gather(*(t.run(seconds) for t in talkers))
        t1 = time.monotonic()
        for _, channel, client in self.clients:
            await client.signaling.request("floor_release", channel=channel)
        return {
            "t_start": t0, "t_end": t1, "granted": granted,
            "talkers": [{"user": u, "channel": c, "sent": len(t.sent), "late_sends": t.late,
                         "first_send": t.sent[0] if t.sent else None,
                         "last_send": t.sent[-1] if t.sent else None}
                        for (u, c, _), t in zip(self.clients, talkers)],
        }

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for _, _, c in self.clients), return_exceptions=True)


async def run() -> None:
    from server.media import aiortc_hooks

    aiortc_hooks.use_host_addresses(["127.0.0.1"])
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(queue.put_nowait, line)
        loop.call_soon_threadsafe(queue.put_nowait, '{"cmd": "quit"}')

    threading.Thread(target=read_stdin, daemon=True).start()
    talkers = Talkers()
    for _ in range(100_000):  # bounded: one command per iteration
        command = json.loads(await queue.get())
        name = command.pop("cmd")
        try:
            if name == "quit":
                await talkers.close()
                reply({"ok": True})
                return
            reply(await getattr(talkers, name)(**command))
        except Exception as exc:  # noqa: BLE001 - the orchestrator sees it
            logger.exception("command %s failed", name)
            reply({"error": repr(exc)})


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(run())
