"""Site settings kept in the directory: a few named values an admin may change at runtime.

Each key has a default and a validator; the table holds only keys that were set, as JSON.
A missing or unreadable row reads as the default.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from server.directory_model import InvalidName, InvalidSetting, normalize_name

logger = logging.getLogger(__name__)

MIN_MAX_TALK_MS = 5_000
MAX_MAX_TALK_MS = 600_000

# None for max_talk_ms: the server configuration's value applies.
DEFAULT_SETTINGS: dict[str, Any] = {"site_name": "vpdesk", "max_talk_ms": None}


def _site_name(value: object) -> str:
    try:
        return normalize_name(value, "site_name")
    except InvalidName as exc:
        raise InvalidSetting(str(exc)) from None


def _max_talk_ms(value: object) -> int | None:
    if value is None:
        return None
    # bool is an int subclass; True must not pass as 1 ms.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidSetting(f"max_talk_ms must be an integer or null, not {value!r}")
    if not MIN_MAX_TALK_MS <= value <= MAX_MAX_TALK_MS:
        raise InvalidSetting(
            f"max_talk_ms {value} is outside {MIN_MAX_TALK_MS}..{MAX_MAX_TALK_MS}"
        )
    return value


_VALIDATORS: dict[str, Callable[[object], Any]] = {
    "site_name": _site_name,
    "max_talk_ms": _max_talk_ms,
}


def validate_settings(values: dict[str, object]) -> dict[str, Any]:
    """The values, checked and normalized; InvalidSetting for an unknown key or bad value."""
    unknown = sorted(set(values) - set(_VALIDATORS))
    if unknown:
        known = ", ".join(sorted(_VALIDATORS))
        raise InvalidSetting(f"unknown setting {unknown[0]!r} (known: {known})")
    return {key: _VALIDATORS[key](value) for key, value in values.items()}


class SettingsMixin:
    """Directory methods for site settings. Same thread rules as `Directory`."""

    _conn: sqlite3.Connection
    _write: Callable[[], AbstractContextManager[sqlite3.Connection]]

    def get_settings(self) -> dict[str, Any]:
        """Every known setting: the stored value, or the default."""
        settings = dict(DEFAULT_SETTINGS)
        for key, text in self._conn.execute("SELECT key, value FROM settings"):
            if key not in _VALIDATORS:
                continue
            try:
                settings[key] = _VALIDATORS[key](json.loads(text))
            except (ValueError, InvalidSetting) as exc:
                logger.warning("directory: ignoring stored setting %s=%r: %s", key, text, exc)
        return settings

    def update_settings(self, **values: object) -> dict[str, Any]:
        """Change the given settings; max_talk_ms None goes back to the default.

        All or nothing: one bad value changes none. Returns every setting afterwards.
        """
        checked = validate_settings(values)
        with self._write() as db:
            for key, value in checked.items():
                if value is None or value == DEFAULT_SETTINGS[key]:
                    db.execute("DELETE FROM settings WHERE key = ?", (key,))
                else:
                    db.execute(
                        "INSERT INTO settings(key, value) VALUES (?, ?)"
                        " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                        (key, json.dumps(value)),
                    )
        logger.info("directory: settings changed: %s", checked)
        return self.get_settings()
