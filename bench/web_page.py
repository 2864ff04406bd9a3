"""The field user's web page, measured in Debian's Chromium (headless, Playwright).

- PTT access time in the page: the mouse press on the big button (the pointerdown
  event's own timestamp) to the talk-permit tone starting (Web Audio), over N presses,
  each its own transmission. Includes the floor_request round trip to a real server.
- What an idle page sends: outbound RTP packets from the page over a window while it
  does not talk (the microphone track is detached), and over the same window while it
  talks.
- Page weight: the bytes a first visit downloads (page, styles, scripts, the tones).

Prints a table, writes docs/web-results.json and docs/web-access.png.
Run inside a loopback-only network namespace (~1 minute):
  unshare -n sh -c 'ip link set lo up && .venv/bin/python bench/web_page.py'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.async_api import async_playwright  # noqa: E402

from tests.server.harness import start_site  # noqa: E402
from tests.web.browser import Microphone, launch_chromium, new_page  # noqa: E402
from tests.web.page_helpers import sign_in  # noqa: E402

DOCS = ROOT / "docs"

# The pointerdown's timestamp is taken by the page itself, on the same clock as the tone's.
_RECORD_PRESSES = """() => {
  window.benchPresses = [];
  document.getElementById('ptt-button').addEventListener('pointerdown',
    (event) => window.benchPresses.push(event.timeStamp), { capture: true });
}"""

_OUTBOUND = """async () => {
  const pc = window.vpdeskDebug.pc;
  let sent = 0;
  (await pc.getStats()).forEach((s) => { if (s.type === 'outbound-rtp') sent += s.packetsSent; });
  return sent;
}"""


async def access_times(page, presses: int) -> list[float]:
    await page.evaluate(_RECORD_PRESSES)
    box = await page.locator("#ptt-button").bounding_box()
    await page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    out: list[float] = []
    for _ in range(presses):
        await page.mouse.down()
        await page.wait_for_selector('#ptt-button[data-state="transmitting"]')
        await page.wait_for_function("() => window.vpdeskDebug.app.tones.played.at(-1)?.name === 'talk_permit'")
        pressed, tone = await page.evaluate(
            "() => [window.benchPresses.at(-1), window.vpdeskDebug.app.tones.played.at(-1).at]"
        )
        out.append(tone - pressed)
        await asyncio.sleep(0.2)
        await page.mouse.up()
        await page.wait_for_selector('#ptt-button[data-state="idle"]')
        await asyncio.sleep(0.3)  # the floor_idle and end-of-transmission settle
    return out


async def outbound_rate(page, seconds: float) -> float:
    before = await page.evaluate(_OUTBOUND)
    await asyncio.sleep(seconds)
    return (await page.evaluate(_OUTBOUND) - before) / seconds


def page_weight() -> dict[str, int]:
    web = ROOT / "server" / "web"
    files = [web / "index.html", web / "style.css", web / "icon.svg", *sorted((web / "js").glob("*.js"))]
    tones = [ROOT / "server" / "tones" / f"{name}.wav" for name in ("talk_permit", "end_of_tx", "busy")]
    return {
        "page_bytes": sum(f.stat().st_size for f in files),
        "page_files": len(files),
        "tone_bytes": sum(f.stat().st_size for f in tones),
    }


def plot(samples: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.hist(samples, bins=30, color="#1747a6")
    for q, style in ((50, "-"), (95, "--")):
        value = float(np.percentile(samples, q))
        ax.axvline(value, color="#c4001d", linestyle=style, label=f"p{q} {value:.1f} ms")
    ax.set_xlabel("press → talk-permit tone in the page (ms)")
    ax.set_ylabel("presses")
    ax.set_title("Web page PTT access time (Chromium, loopback server)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--presses", type=int, default=60)
    parser.add_argument("--window", type=float, default=5.0, help="seconds per traffic window")
    parser.add_argument("--out", type=Path, default=DOCS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        site = await start_site(Path(tmp) / "site", users=2)
        try:
            async with async_playwright() as playwright:
                browser = await launch_chromium(playwright, Microphone.FAKE)
                page = await new_page(browser)
                await sign_in(page, site.url, "u1")
                await page.wait_for_function("() => window.vpdeskDebug.app.microphone")
                version = browser.version
                idle_pps = await outbound_rate(page, args.window)
                await page.mouse.move(10, 10)
                box = await page.locator("#ptt-button").bounding_box()
                await page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
                await page.mouse.down()
                await page.wait_for_selector('#ptt-button[data-state="transmitting"]')
                await asyncio.sleep(0.5)
                talking_pps = await outbound_rate(page, args.window)
                await page.mouse.up()
                await page.wait_for_selector('#ptt-button[data-state="idle"]')
                await asyncio.sleep(1.0)
                times = await access_times(page, args.presses)
                await browser.close()
        finally:
            await site.server.stop()

    weight = page_weight()
    results = {
        "chromium": version,
        "presses": len(times),
        "access_ms": {
            "p50": float(np.percentile(times, 50)),
            "p95": float(np.percentile(times, 95)),
            "max": float(np.max(times)),
        },
        "outbound_packets_per_s": {"idle": idle_pps, "talking": talking_pps},
        **weight,
        "command": "unshare -n sh -c 'ip link set lo up && .venv/bin/python bench/web_page.py'",
    }
    print(f"Chromium {version}, {len(times)} presses, server on loopback")
    print(f"{'figure':<44}{'value':>12}")
    print(f"{'access time p50 (press → talk-permit tone)':<44}{results['access_ms']['p50']:>9.1f} ms")
    print(f"{'access time p95':<44}{results['access_ms']['p95']:>9.1f} ms")
    print(f"{'access time max':<44}{results['access_ms']['max']:>9.1f} ms")
    print(f"{'RTP sent while idle':<44}{idle_pps:>9.1f} /s")
    print(f"{'RTP sent while talking':<44}{talking_pps:>9.1f} /s")
    print(f"{'page (html, css, svg, js)':<44}{weight['page_bytes'] / 1024:>9.1f} KiB in {weight['page_files']} files")
    print(f"{'tones fetched at sign-in':<44}{weight['tone_bytes'] / 1024:>9.1f} KiB")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "web-results.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(times, args.out / "web-access.png")
    print(f"wrote {args.out / 'web-results.json'} and {args.out / 'web-access.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
