"""Where the console finds its shipped files and keeps the user's.

The rest of the console asks here. Shipped, read-only files (tones, the web page) are the
server package's, found by server.shipped (the one module that knows how a PyInstaller
bundle lays files out) in a source checkout, an installed wheel or a bundle alike; the
user's files (settings, the embedded server's data, logs) live in the platform's per-user
folders, each of which an environment variable can move (tests, portable installs).

Pure functions reading `sys` and the environment each time: call from any thread.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

from server import shipped

APP_NAME = "vpdesk"
CONFIG_DIR_ENV = "VPDESK_CONFIG_DIR"
DATA_DIR_ENV = "VPDESK_DATA_DIR"
LOG_DIR_ENV = "VPDESK_LOG_DIR"
SETTINGS_FILENAME = "settings.json"


def frozen() -> bool:
    """True when running from a PyInstaller (or similar) bundle."""
    return shipped.frozen()


def shipped_tones_dir() -> Path:
    """The shipped tone WAVs (talk_permit.wav, busy.wav, ...)."""
    return shipped.tones_dir()


def web_dir() -> Path | None:
    """The web page the server serves to field users, or None when it is not there."""
    folder = shipped.web_dir()
    return folder if folder.is_dir() else None


def _user_dir(env: str, default: str) -> Path:
    override = os.environ.get(env, "").strip()
    return Path(override).expanduser() if override else Path(default)


def config_dir() -> Path:
    """The user's configuration folder ($VPDESK_CONFIG_DIR overrides)."""
    return _user_dir(CONFIG_DIR_ENV, platformdirs.user_config_dir(APP_NAME, appauthor=False))


def data_dir() -> Path:
    """The user's data folder ($VPDESK_DATA_DIR overrides)."""
    return _user_dir(DATA_DIR_ENV, platformdirs.user_data_dir(APP_NAME, appauthor=False))


def embedded_data_dir() -> Path:
    """The embedded server's data folder (its directory database): data_dir()/server."""
    return data_dir() / "server"


def log_dir() -> Path:
    """The user's log folder ($VPDESK_LOG_DIR overrides)."""
    return _user_dir(LOG_DIR_ENV, platformdirs.user_log_dir(APP_NAME, appauthor=False))


def settings_path() -> Path:
    """The settings file: config_dir()/settings.json."""
    return config_dir() / SETTINGS_FILENAME
