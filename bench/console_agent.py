"""One console process for the console benchmarks, driven over stdin/stdout.

Modes:
- `--ui` (default): the real application minus its dialogs: vpdesk.app.Console (settings,
  AudioDevices, TonePlayer, ConsoleSession, ConsoleViewModel, MainWindow) on qasync with
  the GUI-thread garbage collector, as vpdesk.app.main() runs it, QT_QPA_PLATFORM=offscreen.
  `--embedded DATA --listen HOST:PORT` runs the server inside it (vpdesk's small-site
  mode, the console logs in by a locally minted token); `--url URL` logs in to a
  standalone server with the user's password.
- `--headless`: the same session and audio devices on plain asyncio, no Qt.
- `--loopback`: no network at all: the Microphone's blocks go straight into a Speaker
  sink, to measure what the audio devices alone cost.

The audio devices are PortAudio's defaults: the orchestrator picks them per process with
PULSE_SOURCE / PULSE_SINK. The stage probes of bench/console_probes.py are installed
before anything opens.

Protocol: one JSON object per line on stdin ({"cmd": ..., ...}); each reply is one line
on stdout starting with "@@". Logs go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.console_probes import LoopLag, StageProbe  # noqa: E402
from vpdesk.core.ptt import TxState  # noqa: E402

logger = logging.getLogger("console_agent")
PASSWORD = "bench-pw"

# The reference counts of None, True and False, reported with each sample: PySide6
# 6.12.0 on Python 3.11 dropped one on every void Qt call and every emit, and the console
# aborted within a minute (pyproject now caps PySide6 below 6.12; tests/vpdesk/
# test_qt_binding.py guards it). A falling count here would show such a bug again.
_WATCHED_OBJECTS = {"None": None, "True": True, "False": False}


def refcounts() -> dict[str, int]:
    return {name: sys.getrefcount(obj) for name, obj in _WATCHED_OBJECTS.items()}


def override_speaker_defaults(latency: float | None, prefill_ms: float | None) -> None:
    """What-if runs: every Speaker this process makes gets this PortAudio output latency
    (seconds) and/or sink prefill, as if the product's defaults were these."""
    if latency is None and prefill_ms is None:
        return
    from vpdesk.audio.playback import Speaker

    original = Speaker.__init__

    def init(self, device, **kw):
        if latency is not None:
            kw["latency"] = latency
        if prefill_ms is not None:
            kw["prefill_ms"] = prefill_ms
        original(self, device, **kw)

    Speaker.__init__ = init


def reply(obj: dict) -> None:
    sys.stdout.write("@@" + json.dumps(obj) + "\n")
    sys.stdout.flush()


def cpu_self() -> float:
    return sum(os.times()[:2])


async def until(predicate, timeout: float, step: float = 0.005) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(step)
    return True


class HeadlessListener:
    """SessionListener with no UI."""

    def connection_changed(self) -> None: ...
    def channels_reset(self) -> None: ...
    def channel_changed(self, channel_id: int) -> None: ...
    def tx_state_changed(self) -> None: ...
    def show_message(self, text: str) -> None:
        logger.info("message: %s", text)

    def tone_played(self, name: str) -> None: ...


class Runner:
    """Starts the console (UI or headless) and exposes session / speaker / microphone."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.session = None
        self.speaker = None
        self.microphone = None
        self.server = None
        self.vm = None
        self._console = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        if self.args.mode == "ui":
            await self._start_ui()
        elif self.args.mode == "headless":
            await self._start_headless()
        else:
            await self._start_loopback()

    async def _start_ui(self) -> None:
        from vpdesk.app import Console, Options
        from vpdesk.session.console import Credentials

        args = self.args

        class BenchConsole(Console):
            async def _standalone(self):  # no login dialog: the bench knows the password
                self.settings.last_server = args.url
                self.settings.last_username = args.user
                return Credentials(args.url, args.user, PASSWORD)

        options = Options(server=args.url, user=args.user, data_dir=args.embedded, listen=args.listen)
        self._console = console = BenchConsole(self._app, options)
        self._task = asyncio.get_running_loop().create_task(console.run())
        ok = await until(lambda: console.session is not None or self._task.done(), 60, 0.02)
        if self._task.done() or not ok:
            raise RuntimeError(f"console did not start: {self._task.exception() if self._task.done() else 'timeout'}")
        self.session, self.vm, self.server = console.session, console.vm, console.server
        self.speaker, self.microphone = console.audio.speaker, console.audio.microphone

    async def _start_headless(self) -> None:
        from vpdesk.audio.capture import Microphone
        from vpdesk.audio.playback import Speaker
        from vpdesk.audio.tone_player import TonePlayer
        from vpdesk.core.tones import ToneSettings
        from vpdesk.session.console import ConsoleSession, Credentials

        args = self.args
        loop = asyncio.get_running_loop()
        if args.embedded is not None:
            from server.logins import local_token_source
            from vpdesk.embedded import local_url, start_embedded

            self.server = await start_embedded(args.embedded, args.listen)
            user = self.server.directory.user_by_name(args.user)
            credentials = Credentials(local_url(self.server), user.name,
                                      token_source=local_token_source(self.server.app, user))
        else:
            credentials = Credentials(args.url, args.user, PASSWORD)
        self.speaker = Speaker(None)
        self.speaker.open()
        self.microphone = Microphone(None, loop)
        self.microphone.open()
        tones = TonePlayer(self.speaker, ToneSettings(), None)
        self.session = ConsoleSession(credentials, listener=HeadlessListener(), speaker=self.speaker,
                                      microphone=self.microphone, play_tone=tones.play)
        self.session.start()

    async def _start_loopback(self) -> None:
        from vpdesk.audio.capture import Microphone
        from vpdesk.audio.playback import Speaker

        loop = asyncio.get_running_loop()
        self.speaker = Speaker(None)
        self.speaker.open()
        self.microphone = mic = Microphone(None, loop)
        sink = self.speaker.sink("loopback")
        original = mic._on_block

        def through(block, overflow):  # the microphone's block, straight to the sink
            original(block, overflow)
            sink.write(block.astype("float32") / 32768.0)

        mic._on_block = through
        mic.open()

    async def stop(self) -> None:
        if self._console is not None:
            self._console._closed.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 30)
            return
        if self.session is not None:
            await self.session.stop()
        for device in (self.microphone, self.speaker):
            if device is not None:
                device.close()
        if self.server is not None:
            await self.server.stop()

    # --- what the commands need -----------------------------------------------------

    def press(self) -> None:
        (self.vm or self.session).press("keyboard")

    def release(self) -> None:
        (self.vm or self.session).release("keyboard")

    def set_target(self, cid: int) -> None:
        (self.vm or self.session).set_target(cid)

    def set_muted(self, cid: int, muted: bool) -> None:
        (self.vm or self.session).set_muted(cid, muted)


class Agent:
    def __init__(self, args: argparse.Namespace, app=None) -> None:
        self.args = args
        self.probe = StageProbe(trace_buffer=args.trace_buffer)
        self.probe.install()
        self.runner = Runner(args)
        self.runner._app = app
        self.lag = LoopLag()
        self.commands: asyncio.Queue = asyncio.Queue()
        self._cpu_marks: list[tuple[float, float]] = []

    def _read_stdin(self, loop: asyncio.AbstractEventLoop) -> None:
        for line in sys.stdin:  # ends at EOF (the orchestrator died)
            loop.call_soon_threadsafe(self.commands.put_nowait, line)
        loop.call_soon_threadsafe(self.commands.put_nowait, '{"cmd": "quit"}')

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        threading.Thread(target=self._read_stdin, args=(loop,), daemon=True).start()
        try:
            await self.runner.start()
        except Exception as exc:  # noqa: BLE001 - tell the orchestrator, then exit
            logger.exception("start failed")
            reply({"error": f"start failed: {exc!r}"})
            return
        for _ in range(1_000_000):  # bounded: one command per iteration
            line = await self.commands.get()
            try:
                command = json.loads(line)
                name = command.pop("cmd")
                if name == "quit":
                    await self.runner.stop()
                    reply({"ok": True})
                    return
                result = await getattr(self, f"cmd_{name}")(**command)
                reply(result)
            except Exception as exc:  # noqa: BLE001 - the orchestrator sees it
                logger.exception("command failed: %s", line.strip())
                reply({"error": repr(exc)})

    # --- commands -------------------------------------------------------------------

    async def cmd_ready(self, timeout: float = 60.0) -> dict:
        """Wait until connected, every channel joined and the media path up."""
        session = self.runner.session
        out = {"pid": os.getpid(), "t": time.monotonic(), "refcounts": refcounts()}
        if session is None:
            return out
        await session.wait_connected(timeout)
        ok = await until(lambda: len(session.board.joined_ids()) == len(session.board), timeout, 0.05)
        if not ok:
            raise RuntimeError(f"joined {len(session.board.joined_ids())} of {len(session.board)} channels")
        await session._peer.wait_connected(timeout)
        out["channels"] = {session.board.get(c).name: c for c in session.board.ids()}
        out["url"] = session.credentials.url
        return out

    async def cmd_target(self, channel: int) -> dict:
        self.runner.set_target(channel)
        return {"target": self.runner.session.target}

    async def cmd_mute(self, channel: int, muted: bool = True) -> dict:
        self.runner.set_muted(channel, muted)
        return {"ok": True}

    async def cmd_press(self, timeout: float = 5.0) -> dict:
        session = self.runner.session
        clips = len(self.probe.events["clip_start"])
        before = len(session.access_times)
        t_press = time.monotonic()
        self.runner.press()
        await until(lambda: session.ptt.state is not TxState.REQUESTING and len(session.access_times) > before
                    or session.ptt.state in (TxState.IDLE, TxState.DENIED), timeout, 0.002)
        state = session.ptt.state.value
        access = session.access_times[-1] if len(session.access_times) > before else None
        await until(lambda: len(self.probe.events["clip_start"]) > clips, 0.5, 0.005)
        tone = next((e for e in self.probe.events["clip_start"][clips:] if e["t"] >= t_press), None)
        return {"state": state, "t_press": t_press, "access_s": access,
                "tone_cb_s": tone["t"] - t_press if tone else None,
                "tone_out_latency_s": tone["out_latency"] if tone else None}

    async def cmd_release(self, timeout: float = 5.0) -> dict:
        session = self.runner.session
        self.runner.release()
        await until(lambda: session.ptt.state is TxState.IDLE, timeout, 0.01)
        return {"state": session.ptt.state.value}

    async def cmd_clear(self) -> dict:
        self.probe.clear()
        return {"ok": True}

    async def cmd_lag_start(self) -> dict:
        self.lag.start()
        return {"ok": True}

    async def cmd_lag_stop(self) -> dict:
        return {"samples": await self.lag.stop()}

    async def cmd_stats(self, events: bool = True) -> dict:
        r = self.runner
        out: dict = {"cpu_s": cpu_self(), "t": time.monotonic(), "refcounts": refcounts()}
        if r.speaker is not None:
            sp = r.speaker
            out["speaker"] = {"underruns": sp.underruns, "output_underflows": sp.output_underflows,
                              "callbacks": sp.callbacks,
                              "latency_s": sp._stream.latency if sp._stream is not None else None,
                              "buffered_ms": {str(k): s.buffered_ms for k, s in sp._sinks.items()},
                              "dropped_samples": {str(k): s.dropped_samples for k, s in sp._sinks.items()}}
        if r.microphone is not None:
            mic = r.microphone
            out["microphone"] = {"blocks": mic.blocks, "overflows": mic.overflows,
                                 "dropped": mic.track.dropped,
                                 "latency_s": mic._stream.latency if mic._stream is not None else None}
        if r.session is not None:
            receivers = {}
            for cid in r.session.board.ids():
                rx = r.session.receiver_of(cid)
                if rx is not None:
                    receivers[str(cid)] = rx.stats()  # packets, lost, bad, FEC, concealed, late, ...
            out["receivers"] = receivers
            out["access_times"] = list(r.session.access_times)
        if events:
            out["events"] = self.probe.events
            out["buffer_trace"] = self.probe.buffer_trace
        return out


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--ui", dest="mode", action="store_const", const="ui")
    mode.add_argument("--headless", dest="mode", action="store_const", const="headless")
    mode.add_argument("--loopback", dest="mode", action="store_const", const="loopback")
    p.set_defaults(mode="ui")
    p.add_argument("--url", help="a standalone server")
    p.add_argument("--embedded", type=Path, metavar="DATA", help="run the server inside, on this data folder")
    p.add_argument("--listen", default="127.0.0.1:0", help="the embedded server's address")
    p.add_argument("--user", default="u0")
    p.add_argument("--trace-buffer", action="store_true", help="record every sink write's buffered_ms")
    p.add_argument("--speaker-latency", type=float, help="what-if: PortAudio output latency (s)")
    p.add_argument("--prefill-ms", type=float, help="what-if: PlaybackSink prefill (ms)")
    return p.parse_args()


def main() -> int:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from server.media import aiortc_hooks

    aiortc_hooks.use_host_addresses(["127.0.0.1"])
    override_speaker_defaults(args.speaker_latency, args.prefill_ms)
    if args.mode != "ui":
        asyncio.run(Agent(args).run())
        return 0

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    import qasync
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from vpdesk.ui.gui_gc import GuiThreadGarbageCollector
    from vpdesk.ui.theme import apply_theme

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setQuitOnLastWindowClosed(False)
    apply_theme(app)
    collector = GuiThreadGarbageCollector(app)
    collector.start()
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    with loop:
        loop.run_until_complete(Agent(args, app).run())
    collector.stop()
    QTimer.singleShot(0, app.quit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
