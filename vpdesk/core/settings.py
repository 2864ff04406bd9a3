"""The console's persistent settings: one JSON file, read tolerantly, written atomically.

Rule: nothing a user saved is ever lost. Reading never raises on what is in the file: a
field of the wrong type keeps its default and unknown keys are ignored (a newer console's
file still opens). A file that is not JSON at all is kept under a new name
(`settings.json.damaged-N`, never overwriting an earlier kept copy) before the console
starts with defaults. Writing goes to a temporary file in the same folder, is flushed to
disk, and then replaces the old file in one step, so a crash mid-write leaves the previous
file whole.

Stdlib only (no Qt, no platformdirs): the caller passes the file's path
(vpdesk.paths.settings_path()). `Settings` is plain data owned by the console's event
loop; `SettingsStore` does small blocking file I/O and may be called from any one thread
at a time (the console calls it on its loop: the file is a few kilobytes).
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from vpdesk.core.ptt import PttMode
from vpdesk.core.tones import TONE_NAMES, ToneSettings

logger = logging.getLogger(__name__)

# 2: the embedded server's default moved from loopback plain http to the LAN over HTTPS.
# 3: `last_servers`, every node of a site of several; `last_server` stays its first (and
#    what per-server settings are filed under), so a version 2 file loses nothing and a
#    version 2 console still finds the server it knew.
SETTINGS_VERSION = 3
EMBEDDED_SERVER_KEY = "embedded"
DEFAULT_PTT_KEY = "Space"
# The LAN, over HTTPS with the site's self-signed certificate: field users' phones reach
# the console's own server. `--listen 127.0.0.1:8080` keeps a site to this PC.
DEFAULT_EMBEDDED_LISTEN = "0.0.0.0:8443"
# Version 1 files always carried the then default; it was never the user's own choice.
_V1_DEFAULT_EMBEDDED_LISTEN = "127.0.0.1:8080"
# SQLite's largest rowid: a channel id beyond it cannot name a real channel.
_MAX_ID = 2**63 - 1
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _clamp_unit(value: float) -> float:
    return min(1.0, max(0.0, value))


@dataclass
class ChannelPrefs:
    """What the dispatcher chose for one channel on one server."""

    muted: bool = False
    volume: float = 1.0  # 0.0..1.0, clamped


@dataclass
class Settings:
    """Everything the console remembers between runs. Plain data: call from the loop
    that owns it."""

    ptt_mode: PttMode = PttMode.HOLD
    # A Qt key name as QKeySequence(key).toString() gives it ("Space", "F12", "Ctrl"...).
    ptt_key: str = DEFAULT_PTT_KEY
    input_device: str | None = None  # None: the system default
    output_device: str | None = None
    tone_dir: str | None = None  # user tone folder overriding shipped tones by file name
    tones: ToneSettings = field(default_factory=ToneSettings)
    last_server: str | None = None  # None: the embedded server; else "http://host:8080"
    # Every node URL the user gave for that site (last_server first); empty: embedded.
    last_servers: list[str] = field(default_factory=list)
    last_username: str | None = None
    embedded_listen: str = DEFAULT_EMBEDDED_LISTEN
    # server_key() → channel id → prefs
    channels: dict[str, dict[int, ChannelPrefs]] = field(default_factory=dict)
    # server_key() → PTT target channel id
    targets: dict[str, int] = field(default_factory=dict)
    window_geometry: str | None = None  # base64 of QWidget.saveGeometry(); opaque here
    window_state: str | None = None

    def __post_init__(self) -> None:
        self.last_servers = _servers(self.last_server, self.last_servers)

    def set_servers(self, urls: list[str] | tuple[str, ...]) -> None:
        """Remember the site's node URLs (empty: the embedded server). The first is the
        `last_server` per-server settings are filed under."""
        self.last_servers = [u for u in dict.fromkeys(urls) if isinstance(u, str) and u]
        self.last_server = self.last_servers[0] if self.last_servers else None

    def channel_prefs(self, server: str, channel_id: int) -> ChannelPrefs:
        """The prefs for a channel (`server` is a server_key()); defaults when unknown.
        The default returned for an unknown channel is not stored."""
        prefs = self.channels.get(server, {}).get(channel_id)
        return prefs if prefs is not None else ChannelPrefs()

    def set_channel_prefs(
        self,
        server: str,
        channel_id: int,
        *,
        muted: bool | None = None,
        volume: float | None = None,
    ) -> ChannelPrefs:
        """Change a channel's prefs (None: leave as is); returns what is now stored.
        The volume is clamped to 0.0..1.0; NaN raises ValueError."""
        current = self.channel_prefs(server, channel_id)
        new_volume = current.volume
        if volume is not None:
            v = float(volume)
            if math.isnan(v):
                raise ValueError("channel volume must be a number, not NaN")
            new_volume = _clamp_unit(v)
        prefs = ChannelPrefs(
            muted=current.muted if muted is None else bool(muted), volume=new_volume
        )
        self.channels.setdefault(server, {})[channel_id] = prefs
        return prefs

    # --- the file's shape --------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (channel ids become string keys, as JSON requires)."""
        return {
            "version": SETTINGS_VERSION,
            "ptt_mode": self.ptt_mode.value,
            "ptt_key": self.ptt_key,
            "input_device": self.input_device,
            "output_device": self.output_device,
            "tone_dir": self.tone_dir,
            "tones": self.tones.to_dict(),
            "last_server": self.last_server,
            "last_servers": _servers(self.last_server, self.last_servers),
            "last_username": self.last_username,
            "embedded_listen": self.embedded_listen,
            "channels": {
                server: {
                    str(cid): {"muted": p.muted, "volume": p.volume}
                    for cid, p in sorted(by_id.items())
                }
                for server, by_id in self.channels.items()
            },
            "targets": dict(self.targets),
            "window_geometry": self.window_geometry,
            "window_state": self.window_state,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Settings:
        """Settings from a parsed settings file. Never raises: anything of the wrong type
        or out of range keeps its default; unknown keys are ignored."""
        settings = cls()
        if not isinstance(data, Mapping):
            return settings
        mode = _ptt_mode(data.get("ptt_mode"))
        if mode is not None:
            settings.ptt_mode = mode
        key = data.get("ptt_key")
        if isinstance(key, str) and key.strip():
            settings.ptt_key = key.strip()
        for name in (
            "input_device", "output_device", "tone_dir", "last_server", "last_username",
            "window_geometry", "window_state",
        ):
            value = data.get(name)
            if isinstance(value, str) and value:
                setattr(settings, name, value)
        listen = data.get("embedded_listen")
        old_default = data.get("version", 1) == 1 and listen == _V1_DEFAULT_EMBEDDED_LISTEN
        if _valid_listen(listen) and not old_default:
            settings.embedded_listen = listen.strip()
        # Version 2 and older kept one server; an older console rewriting a newer file
        # keeps only that one: either way last_server is the anchor.
        raw_servers = data.get("last_servers")
        if isinstance(raw_servers, list):
            settings.last_servers = [u for u in raw_servers if isinstance(u, str) and u]
        if settings.last_server is None and settings.last_servers and "last_server" not in data:
            settings.last_server = settings.last_servers[0]
        settings.last_servers = _servers(settings.last_server, settings.last_servers)
        settings.tones = _tones(data.get("tones"))
        settings.channels = _channels(data.get("channels"))
        settings.targets = _targets(data.get("targets"))
        return settings


# --- tolerant field parsers (each returns None / empty for anything unusable) ---------


def _ptt_mode(value: Any) -> PttMode | None:
    if not isinstance(value, str):
        return None
    for mode in PttMode:
        if value in (mode.value, mode.name, mode.name.lower()):
            return mode
    return None


def _servers(first: str | None, servers: list[str]) -> list[str]:
    """The node list consistent with `last_server`: empty without one; else starting with
    it (moved to the front when listed further down, alone when not listed at all: the
    list then belongs to an earlier choice)."""
    if first is None:
        return []
    if first not in servers:
        return [first]
    return [first, *(u for u in dict.fromkeys(servers) if u != first)]


def _valid_listen(value: Any) -> bool:
    """'HOST:PORT', '[::1]:PORT' or ':PORT' (the server's parse_listen accepts these)."""
    if not isinstance(value, str):
        return False
    _host, sep, port = value.strip().rpartition(":")
    return bool(sep) and port.isascii() and port.isdigit() and int(port) <= 65535


def _channel_id(value: Any) -> int | None:
    """A channel id from a JSON key ("12") or value (12); None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        # isascii: "²".isdigit() is True but int() refuses it; the length bound keeps
        # int() away from its digit limit.
        if not (text.isascii() and text.isdigit() and len(text) <= 19):
            return None
        value = int(text)
    if isinstance(value, int) and 0 <= value <= _MAX_ID:
        return value
    return None


def _volume(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        v = float(value)
    except OverflowError:  # an int too big for a float: "as loud as possible"
        v = math.inf if value > 0 else -math.inf
    return None if math.isnan(v) else _clamp_unit(v)


def _prefs(value: Any) -> ChannelPrefs | None:
    if not isinstance(value, Mapping):
        return None
    prefs = ChannelPrefs()
    if isinstance(value.get("muted"), bool):
        prefs.muted = value["muted"]
    volume = _volume(value.get("volume"))
    if volume is not None:
        prefs.volume = volume
    return prefs


def _channels(value: Any) -> dict[str, dict[int, ChannelPrefs]]:
    result: dict[str, dict[int, ChannelPrefs]] = {}
    if not isinstance(value, Mapping):
        return result
    for server, by_id in value.items():
        if not isinstance(server, str) or not server or not isinstance(by_id, Mapping):
            continue
        kept: dict[int, ChannelPrefs] = {}
        for raw_id, raw_prefs in by_id.items():
            cid, prefs = _channel_id(raw_id), _prefs(raw_prefs)
            if cid is not None and prefs is not None:
                kept[cid] = prefs
        if kept:
            result[server] = kept
    return result


def _targets(value: Any) -> dict[str, int]:
    if not isinstance(value, Mapping):
        return {}
    result: dict[str, int] = {}
    for server, raw_id in value.items():
        cid = _channel_id(raw_id)
        if isinstance(server, str) and server and cid is not None:
            result[server] = cid
    return result


def _tones(value: Any) -> ToneSettings:
    """Tone settings, one tone at a time so that one bad entry spoils only itself."""
    settings = ToneSettings()
    if not isinstance(value, Mapping):
        return settings
    for name in TONE_NAMES:
        if name not in value:
            continue
        try:
            settings.tones[name] = ToneSettings.from_dict({name: value[name]}).get(name)
        except (TypeError, ValueError, OverflowError) as exc:
            logger.warning("settings: ignoring tone setting %s: %s", name, exc)
    return settings


# --- server keys -------------------------------------------------------------------------


def server_key(url: str | None) -> str:
    """The key per-server settings are filed under: "embedded" for None (or blank), else
    the URL with scheme and host in lower case, the scheme's default port and any
    trailing slash dropped ("HTTP://Host:80/" → "http://host"). A URL without a scheme
    is taken as http."""
    if url is None or not url.strip():
        return EMBEDDED_SERVER_KEY
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    try:
        host = parts.hostname or ""
        port = parts.port
    except ValueError:  # a port that is not a number: keep the text, lower-cased
        netloc = parts.netloc.lower()
    else:
        if ":" in host:
            host = f"[{host}]"
        netloc = host if port is None or port == _DEFAULT_PORTS.get(scheme) else f"{host}:{port}"
    return f"{scheme}://{netloc}{parts.path.rstrip('/')}"


# --- the file ----------------------------------------------------------------------------


class SettingsStore:
    """Reads and writes one settings file. Blocking, small file I/O: call from one thread
    at a time (the console's loop)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        # After load(): a sentence for the dispatcher when the file could not be used.
        self.problem: str | None = None
        # A damaged file we failed to keep a copy of: save() must not overwrite it.
        self._unkept_damage: bytes | None = None

    def load(self) -> Settings:
        """The saved settings; defaults when there is no file or it is damaged (see the
        module docstring). Never raises."""
        self.problem = None
        self._unkept_damage = None
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return Settings()
        except OSError as exc:
            logger.warning("settings: cannot read %s: %s", self.path, exc)
            self.problem = (
                f"Settings file {self.path} could not be read ({exc.strerror or exc}); "
                "started with defaults"
            )
            return Settings()
        try:
            data = json.loads(raw.decode("utf-8-sig"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            return self._damaged(raw, f"not valid JSON ({type(exc).__name__})")
        if not isinstance(data, dict):
            return self._damaged(raw, f"a JSON {type(data).__name__}, not an object")
        return Settings.from_dict(data)

    def save(self, settings: Settings) -> None:
        """Write `settings` atomically. Raises OSError when the disk refuses; the file on
        disk is then whatever was there before."""
        if self._unkept_damage is not None:
            # load() found a damaged file it could not copy aside: try again before the
            # new settings replace it, and refuse rather than lose it.
            self._keep_copy(self._unkept_damage)
            self._unkept_damage = None
        text = json.dumps(settings.to_dict(), indent=2, allow_nan=False) + "\n"
        folder = self.path.parent
        folder.mkdir(parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(dir=folder, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp_name, self.path)
        except BaseException:
            try:
                os.unlink(temp_name)
            except OSError:
                pass
            raise
        _fsync_dir(folder)
        logger.debug("settings: saved %s", self.path)

    def _damaged(self, raw: bytes, why: str) -> Settings:
        logger.warning("settings: %s is %s", self.path, why)
        try:
            kept = self._keep_copy(raw)
        except OSError as exc:
            logger.error("settings: cannot keep a copy of damaged %s: %s", self.path, exc)
            self._unkept_damage = raw
            self.problem = (
                f"Settings file was damaged and no copy of it could be made ({exc.strerror or exc}); "
                "started with defaults and will not overwrite it"
            )
            return Settings()
        self.problem = (
            f"Settings file was damaged; saved a copy as {kept.name} and started with defaults"
        )
        return Settings()

    def _keep_copy(self, raw: bytes) -> Path:
        """Write `raw` to the first free `<name>.damaged-N` (exclusive create: never over
        an earlier copy), then remove the damaged file so the copy is made only once."""
        for n in range(1, 10_000):
            candidate = self.path.with_name(f"{self.path.name}.damaged-{n}")
            try:
                with open(candidate, "xb") as f:
                    f.write(raw)
                    f.flush()
                    os.fsync(f.fileno())
            except FileExistsError:
                continue
            break
        else:
            raise OSError(f"no free name for a copy of {self.path}")
        try:
            os.unlink(self.path)
        except OSError as exc:  # the next save replaces it anyway
            logger.warning("settings: cannot remove damaged %s: %s", self.path, exc)
        logger.warning("settings: kept the damaged file as %s", candidate)
        return candidate


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX); Windows cannot open a folder and needs no such step."""
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
