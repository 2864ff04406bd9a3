"""Take the README's screenshots of the field user's page: desktop and phone.

Starts a throw-away embedded server with a field user on six channels, has a scripted
dispatcher talk on one of them, signs the field user in through the real page in
Debian's Chromium (Playwright), mutes one channel, and saves PNGs of the page as a
laptop (1280x800) and a phone (390x844) show it.

    unshare -n sh -c 'ip link set lo up && .venv/bin/python scripts/web_screenshot.py docs/'

Run it in a loopback-only namespace: the dispatcher and the browser are real WebRTC peers.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.async_api import async_playwright  # noqa: E402

from server.config import ServerConfig  # noqa: E402
from server.directory import Directory, Role  # noqa: E402
from server.node import EmbeddedServer  # noqa: E402
from tests.audio_tools import WavTrack, speech_wav  # noqa: E402
from tests.server.harness import PttClient  # noqa: E402
from tests.web.browser import Microphone, launch_chromium, new_page  # noqa: E402

CHANNELS = [
    ("Fire Ops", "Fire"), ("EMS 1", "Medical"), ("Police North", "Police"),
    ("Search and Rescue", "Fire"), ("Public Works", "City services"), ("Hospital Liaison", "Medical"),
]
VIEWPORTS = {"web-desktop.png": (1280, 800), "web-phone.png": (390, 844)}


def provision(data: Path) -> None:
    with Directory.open(data) as directory:
        for name, team in CHANNELS:
            directory.add_channel(name, team=team, event="County")
        directory.add_user("dispatcher", Role.DISPATCH, "dispatch-pass")
        directory.add_user("engine4", Role.GENERAL, "field-pass")
        for name, _ in CHANNELS:
            directory.add_member("dispatcher", name)
            directory.add_member("engine4", name)


async def sign_in(page, url: str) -> None:
    await page.goto(url)
    await page.fill("#username", "engine4")
    await page.fill("#password", "field-pass")
    await page.click("#login-button")
    await page.wait_for_selector('#connection[data-state="online"]')
    await page.wait_for_selector(".channel")


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path, help="folder for web-desktop.png and web-phone.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "site"
        data.mkdir()
        provision(data)
        config = ServerConfig(data_dir=data, listen_port=0, ice_addresses=["127.0.0.1"])
        server = await EmbeddedServer(config).start()
        wav = speech_wav(Path(tmp), "Engine four, respond to the north gate, smoke reported", 12.0)
        dispatcher = await PttClient.connect(server.url, "dispatcher", slots=2, microphone=WavTrack(wav), password="dispatch-pass")
        try:
            fire_ops = server.directory.channel_by_name("Fire Ops").id
            granted = await dispatcher.talk(fire_ops)
            assert granted["granted"], granted
            async with async_playwright() as playwright:
                browser = await launch_chromium(playwright, Microphone.FAKE)
                for filename, (width, height) in VIEWPORTS.items():
                    page = await new_page(browser, viewport=(width, height))
                    await sign_in(page, server.url)
                    await page.locator(".channel", has_text="Police North").locator(".channel-mute").click()
                    await page.locator(".channel", has_text="Fire Ops").locator(".channel-select").click()
                    await page.wait_for_selector('#floor-banner[data-state="taken"]')
                    await page.screenshot(path=str(args.out / filename))
                    print(f"wrote {args.out / filename}")
                    await page.context.close()
                await browser.close()
        finally:
            await dispatcher.close()
            await server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
