"""A talker in its own process, for the crash test: logs in, takes the floor, prints
"granted", then talks until it is killed (or 60 s pass)."""

import asyncio
import sys

import numpy as np

from tests.audio_tools import WavTrack
from tests.server.harness import PttClient


async def main(url: str, user: str, channel: int) -> None:
    tone = (np.sin(np.arange(48_000) * 2 * np.pi * 440 / 48_000) * 8000).astype(np.int16)
    client = await PttClient.connect(url, user, slots=1, microphone=WavTrack(tone, loop=True))
    reply = await client.talk(channel)
    print("granted" if reply.get("granted") else f"denied {reply}", flush=True)
    await asyncio.sleep(60)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
