"""Directory methods for the site's tree: events, their teams and channels, and the
dispatchers assigned to events.

A channel is in at most one event and at most one team; a channel with a team is in
that team's event (a site-wide team holds only site-wide channels). Deleting an event
deletes its teams and channels (and so their memberships); deleting a team leaves its
channels in the event with no team. The foreign keys in `server.directory_schema` do
the cascading.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager

from server.directory_model import (
    AlreadyExists,
    Channel,
    Event,
    InvalidPlacement,
    InvalidRole,
    NotFound,
    Role,
    Team,
    User,
    channel_from_row,
    event_from_row,
    normalize_name,
    optional_name,
    team_from_row,
    user_from_row,
)

logger = logging.getLogger(__name__)

# A channel with its team's and event's names; rows feed channel_from_row.
CHANNEL_SELECT = (
    "SELECT c.id, c.name, t.name, e.name, c.team_id, c.event_id FROM channels c"
    " LEFT JOIN teams t ON t.id = c.team_id LEFT JOIN events e ON e.id = c.event_id"
)
_ORDER_CHANNELS = " ORDER BY c.name, c.id"


def team_label(name: str, event: Event | None) -> str:
    """How messages name a team: "team X in event Y", or "site-wide team X"."""
    return f"team {name!r} in event {event.name!r}" if event else f"site-wide team {name!r}"


class EventsMixin:
    """Events, teams, channels and dispatcher assignments. Same thread rules as
    `Directory`: one thread calls, every call is one quick statement or transaction."""

    _conn: sqlite3.Connection
    _write: Callable[[], AbstractContextManager[sqlite3.Connection]]

    # -- lookups that raise ------------------------------------------------------------

    def _event(self, event_id: int) -> Event:
        event = self.get_event(event_id)
        if event is None:
            raise NotFound(f"no event {event_id}")
        return event

    def _team(self, team_id: int) -> Team:
        team = self.get_team(team_id)
        if team is None:
            raise NotFound(f"no team {team_id}")
        return team

    def _channel(self, channel_id: int) -> Channel:
        channel = self.get_channel(channel_id)
        if channel is None:
            raise NotFound(f"no channel {channel_id}")
        return channel

    def _user(self, user_id: int) -> User:
        row = self._conn.execute(
            "SELECT id, name, role FROM users WHERE id = ?", (user_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"no user {user_id}")
        return user_from_row(row)

    # -- events ------------------------------------------------------------------------

    def add_event(self, name: str) -> Event:
        name = normalize_name(name, "event name")
        try:
            with self._write() as db:
                cursor = db.execute("INSERT INTO events(name) VALUES (?)", (name,))
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"event {name!r} exists already") from None
        logger.info("directory: added event %r", name)
        return Event(cursor.lastrowid, name)

    def get_event(self, event_id: int) -> Event | None:
        row = self._conn.execute("SELECT id, name FROM events WHERE id = ?", (event_id,))
        return event_from_row(row.fetchone())

    def event_by_name(self, name: str) -> Event | None:
        row = self._conn.execute("SELECT id, name FROM events WHERE name = ?", (name.strip(),))
        return event_from_row(row.fetchone())

    def list_events(self) -> list[Event]:
        rows = self._conn.execute("SELECT id, name FROM events ORDER BY name, id")
        return [event_from_row(row) for row in rows]

    def rename_event(self, event_id: int, name: str) -> Event:
        name = normalize_name(name, "event name")
        try:
            with self._write() as db:
                old = self._event(event_id)
                db.execute("UPDATE events SET name = ? WHERE id = ?", (name, event_id))
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"event {name!r} exists already") from None
        logger.info("directory: renamed event %r to %r", old.name, name)
        return Event(event_id, name)

    def delete_event(self, event_id: int) -> None:
        """Delete an event with its teams, channels, their memberships and assignments."""
        with self._write() as db:
            event = self._event(event_id)
            db.execute("DELETE FROM events WHERE id = ?", (event_id,))
        logger.info("directory: deleted event %r", event.name)

    # -- dispatchers ---------------------------------------------------------------------

    def assign_dispatcher(self, event_id: int, user_id: int) -> None:
        """Let a dispatch user manage an event; assigning twice is a no-op.

        InvalidRole for a user whose role is not dispatch (admins see every event anyway).
        """
        with self._write() as db:
            event, user = self._event(event_id), self._user(user_id)
            if user.role is not Role.DISPATCH:
                raise InvalidRole(
                    f"user {user.name!r} is {user.role.value}: only dispatch users are "
                    f"assigned to events"
                )
            db.execute(
                "INSERT OR IGNORE INTO event_dispatchers(event_id, user_id) VALUES (?, ?)",
                (event_id, user_id),
            )
        logger.info("directory: user %r dispatches event %r", user.name, event.name)

    def unassign_dispatcher(self, event_id: int, user_id: int) -> None:
        with self._write() as db:
            event, user = self._event(event_id), self._user(user_id)
            cursor = db.execute(
                "DELETE FROM event_dispatchers WHERE event_id = ? AND user_id = ?",
                (event_id, user_id),
            )
            if cursor.rowcount == 0:
                raise NotFound(f"user {user.name!r} is not a dispatcher of event {event.name!r}")
        logger.info("directory: user %r no longer dispatches event %r", user.name, event.name)

    def dispatchers_of(self, event_id: int) -> list[User]:
        rows = self._conn.execute(
            "SELECT u.id, u.name, u.role FROM users u JOIN event_dispatchers d"
            " ON d.user_id = u.id WHERE d.event_id = ? ORDER BY u.name, u.id",
            (event_id,),
        )
        return [user_from_row(row) for row in rows]

    def events_of_dispatcher(self, user_id: int) -> list[Event]:
        rows = self._conn.execute(
            "SELECT e.id, e.name FROM events e JOIN event_dispatchers d"
            " ON d.event_id = e.id WHERE d.user_id = ? ORDER BY e.name, e.id",
            (user_id,),
        )
        return [event_from_row(row) for row in rows]

    def is_dispatcher_of(self, user_id: int, event_id: int) -> bool:
        row = self._conn.execute(
            "SELECT 1 FROM event_dispatchers WHERE user_id = ? AND event_id = ?",
            (user_id, event_id),
        )
        return row.fetchone() is not None

    # -- teams ---------------------------------------------------------------------------

    def add_team(self, event_id: int | None, name: str) -> Team:
        """A team in an event, or a site-wide team for event_id None."""
        name = normalize_name(name, "team name")
        try:
            with self._write() as db:
                event = None if event_id is None else self._event(event_id)
                cursor = db.execute(
                    "INSERT INTO teams(event_id, name) VALUES (?, ?)", (event_id, name)
                )
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"{team_label(name, event)} exists already") from None
        logger.info("directory: added %s", team_label(name, event))
        return Team(cursor.lastrowid, name, event_id)

    def get_team(self, team_id: int) -> Team | None:
        row = self._conn.execute("SELECT id, name, event_id FROM teams WHERE id = ?", (team_id,))
        return team_from_row(row.fetchone())

    def team_by_name(self, event_id: int | None, name: str) -> Team | None:
        row = self._conn.execute(
            "SELECT id, name, event_id FROM teams WHERE event_id IS ? AND name = ?",
            (event_id, name.strip()),
        )
        return team_from_row(row.fetchone())

    def list_teams(self, event_id: int | None) -> list[Team]:
        """The teams of an event, or the site-wide teams for None, ordered by name."""
        rows = self._conn.execute(
            "SELECT id, name, event_id FROM teams WHERE event_id IS ? ORDER BY name, id",
            (event_id,),
        )
        return [team_from_row(row) for row in rows]

    def rename_team(self, team_id: int, name: str) -> Team:
        name = normalize_name(name, "team name")
        try:
            with self._write() as db:
                team = self._team(team_id)
                event = None if team.event_id is None else self._event(team.event_id)
                db.execute("UPDATE teams SET name = ? WHERE id = ?", (name, team_id))
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"{team_label(name, event)} exists already") from None
        logger.info("directory: renamed %s to %r", team_label(team.name, event), name)
        return Team(team_id, name, team.event_id)

    def delete_team(self, team_id: int) -> None:
        """Delete a team; its channels stay in the event with no team."""
        with self._write() as db:
            team = self._team(team_id)
            db.execute("DELETE FROM teams WHERE id = ?", (team_id,))
        logger.info("directory: deleted team %r (%s)", team.name, team.id)

    # -- channels ------------------------------------------------------------------------

    def add_channel(self, name: str, team: str | None = None, event: str | None = None) -> Channel:
        """A channel placed by names; the event and team rows it names are created when
        missing (the team within the event, or site-wide without one)."""
        name = normalize_name(name, "channel name")
        team = optional_name(team, "team name")
        event = optional_name(event, "event name")
        try:
            with self._write() as db:
                event_id = team_id = None
                if event is not None:
                    db.execute("INSERT OR IGNORE INTO events(name) VALUES (?)", (event,))
                    event_id = self.event_by_name(event).id
                if team is not None:
                    db.execute("INSERT OR IGNORE INTO teams(event_id, name) VALUES (?, ?)",
                               (event_id, team))
                    team_id = self.team_by_name(event_id, team).id
                channel_id = self._insert_channel(db, name, event_id, team_id)
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"channel {name!r} exists already") from None
        logger.info("directory: added channel %r (team %r, event %r)", name, team, event)
        return self._channel(channel_id)

    def create_channel(
        self, name: str, event_id: int | None = None, team_id: int | None = None
    ) -> Channel:
        """A channel placed by ids; a team alone implies its event."""
        name = normalize_name(name, "channel name")
        try:
            with self._write() as db:
                if event_id is not None:
                    self._event(event_id)
                if team_id is not None:
                    team = self._team(team_id)
                    if event_id is None:
                        event_id = team.event_id
                    self._check_placement(team, event_id)
                channel_id = self._insert_channel(db, name, event_id, team_id)
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"channel {name!r} exists already") from None
        logger.info("directory: created channel %r (event %s, team %s)", name, event_id, team_id)
        return self._channel(channel_id)

    @staticmethod
    def _insert_channel(
        db: sqlite3.Connection, name: str, event_id: int | None, team_id: int | None
    ) -> int:
        return db.execute(
            "INSERT INTO channels(name, event_id, team_id) VALUES (?, ?, ?)",
            (name, event_id, team_id),
        ).lastrowid

    def _check_placement(self, team: Team, event_id: int | None) -> None:
        if team.event_id != event_id:
            where = "site-wide" if event_id is None else f"in event {self._event(event_id).name!r}"
            team_event = None if team.event_id is None else self._event(team.event_id)
            raise InvalidPlacement(
                f"{team_label(team.name, team_event)} cannot hold a channel {where}"
            )

    def get_channel(self, channel_id: int) -> Channel | None:
        row = self._conn.execute(CHANNEL_SELECT + " WHERE c.id = ?", (channel_id,))
        return channel_from_row(row.fetchone())

    def channel_by_name(self, name: str) -> Channel | None:
        row = self._conn.execute(CHANNEL_SELECT + " WHERE c.name = ?", (name.strip(),))
        return channel_from_row(row.fetchone())

    def list_channels(self) -> list[Channel]:
        rows = self._conn.execute(CHANNEL_SELECT + _ORDER_CHANNELS)
        return [channel_from_row(row) for row in rows]

    def channels_in_event(self, event_id: int) -> list[Channel]:
        rows = self._conn.execute(CHANNEL_SELECT + " WHERE c.event_id = ?" + _ORDER_CHANNELS,
                                  (event_id,))
        return [channel_from_row(row) for row in rows]

    def rename_channel(self, channel_id: int, name: str) -> Channel:
        name = normalize_name(name, "channel name")
        try:
            with self._write() as db:
                old = self._channel(channel_id)
                db.execute("UPDATE channels SET name = ? WHERE id = ?", (name, channel_id))
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"channel {name!r} exists already") from None
        logger.info("directory: renamed channel %r to %r", old.name, name)
        return self._channel(channel_id)

    def move_channel(self, channel_id: int, team_id: int | None) -> Channel:
        """Put a channel in another team of its event, or in none (None)."""
        with self._write() as db:
            channel = self._channel(channel_id)
            if team_id is not None:
                self._check_placement(self._team(team_id), channel.event_id)
            db.execute("UPDATE channels SET team_id = ? WHERE id = ?", (team_id, channel_id))
        logger.info("directory: moved channel %r to team %s", channel.name, team_id)
        return self._channel(channel_id)

    def delete_channel(self, channel_id: int) -> None:
        """Delete a channel and its memberships."""
        with self._write() as db:
            channel = self._channel(channel_id)
            db.execute("DELETE FROM channels WHERE id = ?", (channel_id,))
        logger.info("directory: deleted channel %r", channel.name)

    def remove_channel(self, name: str) -> None:
        """Delete the channel named `name` and its memberships."""
        with self._write() as db:
            cursor = db.execute("DELETE FROM channels WHERE name = ?", (name.strip(),))
            if cursor.rowcount == 0:
                raise NotFound(f"no channel {name!r}")
        logger.info("directory: removed channel %r", name)
