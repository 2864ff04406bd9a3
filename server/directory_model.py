"""The directory's records, its errors, and the rules for names and roles.

Plain values with no database behind them: any thread may use them. `server.directory`
re-exports everything here, so callers import from there.
"""

from __future__ import annotations

import enum
import unicodedata
from dataclasses import dataclass

MAX_NAME_LENGTH = 64


class Role(str, enum.Enum):
    ADMIN = "admin"
    DISPATCH = "dispatch"
    GENERAL = "general"


@dataclass(frozen=True)
class User:
    id: int
    name: str
    role: Role

    def to_wire(self) -> dict:
        return {"id": self.id, "name": self.name, "role": self.role.value}


@dataclass(frozen=True)
class Event:
    id: int
    name: str

    def to_wire(self) -> dict:
        return {"id": self.id, "name": self.name}


@dataclass(frozen=True)
class Team:
    """A team inside an event; `event_id` None: a site-wide team."""

    id: int
    name: str
    event_id: int | None

    def to_wire(self) -> dict:
        return {"id": self.id, "name": self.name, "event_id": self.event_id}


@dataclass(frozen=True)
class Channel:
    """A channel with its team's and event's names (as the wire has carried them since v1)
    and their ids (added by schema v2)."""

    id: int
    name: str
    team: str | None = None
    event: str | None = None
    team_id: int | None = None
    event_id: int | None = None

    def to_wire(self) -> dict:
        return {
            "id": self.id, "name": self.name, "team": self.team, "event": self.event,
            "team_id": self.team_id, "event_id": self.event_id,
        }


class DirectoryError(Exception):
    """A directory operation could not be done; the message names the thing."""


class NotFound(DirectoryError):
    """The named user, event, team, channel, membership or assignment does not exist."""


class AlreadyExists(DirectoryError):
    """A user, event, team or channel with that name exists already."""


class InvalidName(DirectoryError):
    """A name is empty, longer than 64 characters, or holds control characters."""


class InvalidPassword(DirectoryError):
    """A password is empty."""


class InvalidRole(DirectoryError):
    """A role is not one of admin, dispatch, general, or is the wrong one for the job."""


class InvalidPlacement(DirectoryError):
    """A channel would sit in a team of another event than its own."""


class InvalidSetting(DirectoryError):
    """A setting is unknown or its value is out of range."""


class LastAdmin(DirectoryError):
    """The change would leave the site without an admin."""


class DirectoryUnavailable(DirectoryError):
    """The directory's shared store (Redis) did not answer or refused the change; nothing
    was changed. Reads keep working from the last copy."""


def normalize_name(name: str, what: str = "name") -> str:
    """The stripped name, or InvalidName naming `what` and the offending value."""
    if not isinstance(name, str):
        raise InvalidName(f"{what} must be a string, not {type(name).__name__}")
    stripped = name.strip()
    if not stripped:
        raise InvalidName(f"{what} {name!r} is empty")
    if len(stripped) > MAX_NAME_LENGTH:
        raise InvalidName(
            f"{what} {stripped[:20]!r}... is longer than {MAX_NAME_LENGTH} characters"
        )
    # Cc: C0/C1 controls (newline, tab, escape...); Zl/Zp: line and paragraph separators.
    # Either would break the one-line-per-entry listings and log lines.
    if any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in stripped):
        raise InvalidName(f"{what} {stripped!r} contains control characters")
    return stripped


def optional_name(value: str | None, what: str) -> str | None:
    return None if value is None else normalize_name(value, what)


def parse_role(role: Role | str) -> Role:
    try:
        return Role(role)
    except ValueError:
        choices = ", ".join(r.value for r in Role)
        raise InvalidRole(f"unknown role {role!r} (choose {choices})") from None


def user_from_row(row: tuple | None) -> User | None:
    """A User from `(id, name, role)`."""
    return None if row is None else User(row[0], row[1], Role(row[2]))


def event_from_row(row: tuple | None) -> Event | None:
    """An Event from `(id, name)`."""
    return None if row is None else Event(row[0], row[1])


def team_from_row(row: tuple | None) -> Team | None:
    """A Team from `(id, name, event_id)`."""
    return None if row is None else Team(row[0], row[1], row[2])


def channel_from_row(row: tuple | None) -> Channel | None:
    """A Channel from `(id, name, team name, event name, team_id, event_id)`."""
    return None if row is None else Channel(*row)
