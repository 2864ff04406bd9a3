"""Starting the console: settings, the embedded server or a login, audio, the window.

`vpdesk` with no arguments runs a small site: the server starts inside the console
(first run: a short setup creates the admin account and the channels) and the console
logs in to it without asking. `vpdesk --server URL` shows a login dialog for a
standalone server instead; `--server URL1,URL2,...` names the nodes of a site of several,
in the order to try them (the console moves to the next when its node fails).

Runs on the GUI thread, which under qasync is also the asyncio loop's thread. Dialogs
are shown with `open()` and awaited, never `exec()`: a nested Qt loop would stall the
asyncio tasks (the embedded server among them).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import logging.handlers
import signal
import socket
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QSocketNotifier, QTimer
from PySide6.QtWidgets import QApplication, QDialog

from vpdesk import paths
from vpdesk.audio.capture import Microphone
from vpdesk.audio.devices import AudioDeviceError, list_input_devices, list_output_devices
from vpdesk.audio.playback import Speaker
from vpdesk.audio.tone_player import TonePlayer
from vpdesk.core.nodes import parse_url_list
from vpdesk.core.settings import Settings, SettingsStore, server_key
from vpdesk.session.console import (
    ChannelPreference,
    ConsoleSession,
    Credentials,
    LoginRefused,
    check_login,
)
from vpdesk.ui.dialogs import LoginDialog, SetupDialog
from vpdesk.ui.gui_gc import GuiThreadGarbageCollector
from vpdesk.ui.main_window import MainWindow
from vpdesk.ui.theme import apply_theme
from vpdesk.viewmodels.console import ConsoleViewModel

logger = logging.getLogger(__name__)


@dataclass
class Options:
    # None: run the embedded server; else one URL, or a site's node URLs separated by commas
    server: str | None = None
    user: str | None = None
    data_dir: Path | None = None  # the embedded server's data folder
    listen: str | None = None  # the embedded server's address, overrides the settings
    quit_after: float | None = None  # seconds after connecting (smoke tests, screenshots)
    screenshot: Path | None = None  # grab the window to this PNG just before quitting
    # A standalone server's certificate (PEM) to trust instead of the system's CAs: for a
    # server with a self-signed certificate. None: the system's CAs.
    server_cert: Path | None = None

    @property
    def servers(self) -> tuple[str, ...]:
        """The node URLs `server` names, normalised, in order (empty: embedded). Raises
        ValueError for an entry that is not an http(s) URL."""
        return () if self.server is None else parse_url_list(self.server)


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="vpdesk", description="vpdesk push-to-talk dispatch console"
    )
    parser.add_argument("--server", metavar="URL[,URL...]", help="connect to a standalone server, or to a site of several nodes given as comma-separated URLs in the order to try them (default: run a server inside the console)")
    parser.add_argument("--user", help="user name to log in with (standalone or embedded)")
    parser.add_argument("--data-dir", type=Path, help="the embedded server's data folder")
    parser.add_argument("--listen", metavar="HOST:PORT", help="the embedded server's address (default from settings: 0.0.0.0:8443 with HTTPS and a self-signed certificate; a loopback address serves plain http)")
    parser.add_argument("--server-cert", type=Path, metavar="PEM", help="trust only this certificate for --server (a standalone server with a self-signed certificate); default: the system's CAs")
    parser.add_argument("--quit-after", type=float, metavar="SECONDS", help=argparse.SUPPRESS)
    parser.add_argument("--screenshot", type=Path, metavar="PNG", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    options = Options(args.server, args.user, args.data_dir, args.listen, args.quit_after, args.screenshot,
                      args.server_cert)
    try:
        options.servers
    except ValueError as exc:
        parser.error(f"--server: {exc}")
    return options


def setup_logging() -> Path | None:
    """Log to a rotating file in the platform's log folder, and to stderr."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    if sys.stderr is not None:  # a windowed frozen app on Windows has none
        stderr = logging.StreamHandler()
        stderr.setFormatter(fmt)
        stderr.setLevel(logging.WARNING)
        root.addHandler(stderr)
    try:
        folder = paths.log_dir()
        folder.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(
            folder / "vpdesk.log", maxBytes=2_000_000, backupCount=3, encoding="utf-8"
        )
    except OSError as exc:
        logger.warning("no log file: %s", exc)
        return None
    handler.setFormatter(fmt)
    root.addHandler(handler)
    return folder / "vpdesk.log"


async def shown(dialog: QDialog) -> bool:
    """Show `dialog` without a nested event loop; True when it was accepted."""
    done: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def finished(result: int) -> None:
        if not done.done():
            done.set_result(result)

    dialog.finished.connect(finished)
    dialog.open()
    try:
        return await done == QDialog.DialogCode.Accepted
    finally:
        dialog.finished.disconnect(finished)


def dispose(dialog: QDialog) -> None:
    """Delete a dialog on the GUI thread now that it is done with (see ui.gui_gc)."""
    dialog.close()
    dialog.deleteLater()


class AudioDevices:
    """The microphone and speaker the settings name, and what went wrong opening them.

    The console keeps listening without a microphone, and keeps running (silently) without
    a speaker: each problem becomes a sentence on the status bar, not a crash.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.microphone: Microphone | None = None
        self.speaker = Speaker(None)

    def open(self, settings: Settings) -> str:
        """(Re)open both devices as `settings` name them; return the problems, or ""."""
        problems = []
        speaker = Speaker(settings.output_device)
        try:
            speaker.open()
        except AudioDeviceError as exc:
            problems.append(str(exc))  # the speaker still takes writes, silently
        self.speaker.close()
        self.speaker = speaker
        microphone: Microphone | None = Microphone(settings.input_device, self._loop)
        try:
            microphone.open()
        except AudioDeviceError as exc:
            problems.append(str(exc))
            microphone = None
        if self.microphone is not None:
            self.microphone.close()
        self.microphone = microphone
        return "  ·  ".join(problems)

    def close(self) -> None:
        if self.microphone is not None:
            self.microphone.close()
        self.speaker.close()


def device_names(kind: str) -> list[str]:
    try:
        devices = list_input_devices() if kind == "input" else list_output_devices()
    except AudioDeviceError:
        return []
    return [d.name for d in devices]


class Console:
    """One run of the console application."""

    def __init__(self, app: QApplication, options: Options) -> None:
        self.app = app
        self.options = options
        self.store = SettingsStore(paths.settings_path())
        self.settings = self.store.load()
        self.server = None
        self.session: ConsoleSession | None = None
        self.window: MainWindow | None = None
        self.audio: AudioDevices | None = None
        self._closed = asyncio.Event()

    async def run(self) -> int:
        try:
            credentials = await (self._embedded() if self.options.server is None else self._standalone())
            if credentials is None:
                return 0  # the dispatcher cancelled the setup or the login
            await self._show(credentials)
            await self._closed.wait()
            return 0
        finally:
            await self._shutdown()

    # --- where to connect ----------------------------------------------------------

    async def _embedded(self) -> Credentials | None:
        from server.logins import local_token_source
        from vpdesk.embedded import (
            SetupError,
            create_site,
            local_ssl_context,
            local_url,
            needs_setup,
            start_embedded,
        )

        data = self.options.data_dir or paths.embedded_data_dir()
        admin = None
        if needs_setup(data):
            dialog = SetupDialog()
            try:
                while True:
                    if not await shown(dialog):
                        return None
                    name, password, confirm, channels = dialog.values()
                    try:
                        create_site(data, name, password, channels, confirm_password=confirm)
                    except SetupError as exc:
                        dialog.set_error(str(exc))
                        continue
                    admin = name
                    break
            finally:
                dispose(dialog)
        listen = self.options.listen or self.settings.embedded_listen
        self.server = await start_embedded(data, listen)
        directory = self.server.directory
        wanted = admin or self.options.user or self.settings.last_username
        user = directory.user_by_name(wanted) if wanted else None
        if user is None:
            user = next((u for u in directory.list_users() if u.role.value == "admin"), None)
        if user is None:
            raise SystemExit(f"the site in {data} has no admin user")
        self.settings.last_username = user.name
        self.settings.set_servers([])
        url = local_url(self.server)
        label = f"this console's server ({url.split('//', 1)[1]})"
        # The console trusts exactly the certificate its own server serves (pinned).
        return Credentials(
            url, user.name,
            token_source=local_token_source(self.server.app, user),
            label=label, ssl=local_ssl_context(self.server),
        )

    async def _standalone(self) -> Credentials | None:
        url = self.options.server
        server_ssl = self._server_ssl()
        dialog = LoginDialog(url, self.options.user or self.settings.last_username)
        try:
            while True:
                if not await shown(dialog):
                    return None
                url, user, password = dialog.values()
                try:
                    urls = dialog.server_urls()
                except ValueError as exc:
                    dialog.set_error(str(exc))
                    continue
                credentials = Credentials(urls[0], user, password, ssl=server_ssl, urls=urls)
                try:
                    await check_login(credentials)
                except LoginRefused as exc:
                    dialog.set_error(str(exc))
                    continue
                except Exception as exc:  # noqa: BLE001 - unreachable, bad URL, TLS...: all shown
                    dialog.set_error(f"Cannot reach {url}: {exc or type(exc).__name__}")
                    continue
                self.settings.set_servers(credentials.urls)
                self.settings.last_username = user
                return credentials
        finally:
            dispose(dialog)

    def _server_ssl(self) -> ssl.SSLContext | None:
        """The pinned context `--server-cert` asks for; None: the system's CAs."""
        if self.options.server_cert is None:
            return None
        from server.config import ConfigError
        from server.tls import pinned_client_context

        try:
            return pinned_client_context(self.options.server_cert)
        except ConfigError as exc:
            raise SystemExit(f"vpdesk: {exc}") from None

    # --- the window ----------------------------------------------------------------

    async def _show(self, credentials: Credentials) -> None:
        loop = asyncio.get_running_loop()
        self.audio = AudioDevices(loop)
        problem = self.audio.open(self.settings)
        key = server_key(self.settings.last_server)
        tones = TonePlayer(
            self.audio.speaker,
            self.settings.tones,
            Path(self.settings.tone_dir) if self.settings.tone_dir else None,
            paths.shipped_tones_dir(),
        )
        self.tones = tones

        def preferences(cid: int) -> ChannelPreference:
            prefs = self.settings.channel_prefs(key, cid)
            return ChannelPreference(prefs.muted, prefs.volume)

        self.session = ConsoleSession(
            credentials,
            listener=None,  # the view model sets itself
            speaker=self.audio.speaker,
            microphone=self.audio.microphone,
            play_tone=lambda name: tones.play(name),
            ptt_mode=self.settings.ptt_mode,
            preferences=preferences,
            target=self.settings.targets.get(key),
        )
        if self.store.problem:
            problem = "  ·  ".join(p for p in (problem, self.store.problem) if p)
        vm = ConsoleViewModel(
            self.session,
            self.settings,
            store=self.store,
            server_key=key,
            microphone=self.audio.microphone,
            tone_player=tones,
            audio_problem=problem,
            list_devices=device_names,
            on_audio_settings=self._reopen_audio,
        )
        self.vm = vm
        self.window = MainWindow(vm)
        if self.settings.window_geometry:
            self.window.restore_geometry(self.settings.window_geometry, self.settings.window_state or "")
        else:
            self.window.resize(1280, 800)
        self.window.closing.connect(self._closed.set)
        self.window.show()
        # On the system-wide monotonic clock: the installer test measures start-up with it.
        logger.info("window shown (monotonic %.3f)", time.monotonic())
        self.session.start()
        if self.options.quit_after is not None:
            loop.create_task(self._quit_later(self.options.quit_after))

    def _reopen_audio(self, settings: Settings) -> str:
        assert self.audio is not None and self.session is not None
        problem = self.audio.open(settings)
        self.session.set_audio(self.audio.speaker, self.audio.microphone)
        self.vm.set_microphone(self.audio.microphone)
        self.tones.speaker = self.audio.speaker
        return problem

    def request_quit(self) -> None:
        """Quit as closing the window does (settings saved, server stopped, exit code 0).
        GUI thread. Before the window is shown, the console quits as soon as it is."""
        logger.info("quit requested")
        if self.window is not None:
            self.window.close()
        self._closed.set()

    async def _quit_later(self, seconds: float) -> None:
        assert self.session is not None
        with contextlib.suppress(TimeoutError):
            await self.session.wait_connected(timeout=20)
        await asyncio.sleep(seconds)
        if self.options.screenshot is not None and self.window is not None:
            self.window.grab().save(str(self.options.screenshot))
        if self.window is not None:
            self.window.close()
        self._closed.set()

    async def _shutdown(self) -> None:
        if self.window is not None:
            geometry, state = self.window.saved_geometry()
            self.settings.window_geometry, self.settings.window_state = geometry, state
        if self.session is not None:
            await self.session.stop()
        if self.audio is not None:
            self.audio.close()
        if self.session is not None or self.server is not None:
            with contextlib.suppress(OSError):
                self.store.save(self.settings)
        if self.server is not None:
            await self.server.stop()
        # Delete the Qt objects here, on the GUI thread: left to Python's garbage
        # collector they may be destroyed on another thread, with their timers live.
        for qobject in (self.window, getattr(self, "vm", None)):
            if qobject is not None:
                qobject.deleteLater()
        await asyncio.sleep(0)


def quit_on_sigterm(console: Console, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    """Make SIGTERM (a desktop session ending, `kill`, the installer test) a clean quit
    through `console.request_quit()`; returns the undo. POSIX only (a no-op on Windows).

    Qt's loop runs in C++, where Python signal handlers wait for the next Python code:
    the wakeup fd makes the signal readable on a socket whose notifier runs some, at once.
    """
    if sys.platform == "win32":
        return lambda: None
    reader, writer = socket.socketpair()
    reader.setblocking(False)
    writer.setblocking(False)
    previous_fd = signal.set_wakeup_fd(writer.fileno())
    # Python runs the handler between any two bytecodes of the GUI thread: only schedule
    # the quit there, so that it runs from the loop, not in the middle of other code.
    previous_handler = signal.signal(
        signal.SIGTERM, lambda _signum, _frame: loop.call_soon_threadsafe(console.request_quit)
    )
    notifier = QSocketNotifier(reader.fileno(), QSocketNotifier.Type.Read)

    def drain() -> None:
        with contextlib.suppress(OSError):
            reader.recv(64)

    notifier.activated.connect(drain)

    def undo() -> None:
        notifier.setEnabled(False)
        signal.signal(signal.SIGTERM, previous_handler)
        signal.set_wakeup_fd(previous_fd)
        reader.close()
        writer.close()

    return undo


def main(argv: list[str] | None = None) -> int:
    import qasync

    options = parse_args(argv)
    log_file = setup_logging()
    started = time.monotonic()
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("vpdesk")
    app.setOrganizationName("vpdesk")
    app.setQuitOnLastWindowClosed(False)  # the console decides when to quit, after cleanup
    apply_theme(app)
    collector = GuiThreadGarbageCollector(app)
    collector.start()
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    console = Console(app, options)
    undo_sigterm = quit_on_sigterm(console, loop)
    logger.info("vpdesk starting (log %s)", log_file)
    try:
        with loop:
            code = loop.run_until_complete(console.run())
    except KeyboardInterrupt:
        code = 130
    undo_sigterm()
    collector.stop()
    logger.info("vpdesk stopped after %.1f s", time.monotonic() - started)
    QTimer.singleShot(0, app.quit)
    return code
