"""The handlers of `vpserver`'s provisioning commands (parsed in `server.cli`).

Each handler takes a `Context` and the parsed arguments, acts as an admin would through
the directory, and prints one line on success (listings print a table); a change is
also recorded in the audit log. Errors are DirectoryError or CommandError, whose message
`server.cli` prints as is. Main thread only.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sqlite3
import sys
from datetime import datetime
from pathlib import Path

from server.directory import Channel, Directory, Event, Role, Team, User
from server.directory_events import team_label

PROG = "vpserver"
# Audit entries written by this command name it in their detail (they have no actor).
AUDIT_VIA = "vpserver"


class CommandError(Exception):
    """A provisioning command cannot go on; the message is printed as is."""


class Context:
    """What a provisioning handler works with: the open directory, the data folder (for
    the logins and audit files beside it), and the changes to audit once it succeeded.
    Main thread only."""

    def __init__(
        self,
        directory: Directory,
        data_dir: Path,
        *,
        redis_url: str | None = None,
        redis_prefix: str = "vpdesk:",
    ) -> None:
        self.directory = directory
        self.data_dir = data_dir
        # A site on Redis keeps its logins and audit log there too (server.cluster).
        self.redis_url = redis_url
        self.redis_prefix = redis_prefix
        self._changes: list[tuple[str, dict]] = []

    def done(self, message: str, kind: str, **detail) -> None:
        """A change succeeded: say so in one line, and audit it later."""
        print(message)
        self._changes.append((kind, detail))

    def end_logins(self, user: User) -> int:
        """End every login of a user (its sessions go with them); how many there were."""
        from server.logins_redis import open_login_store

        logins = open_login_store(self.data_dir, self.redis_url, self.redis_prefix)
        try:
            return logins.revoke_user(user.id)
        finally:
            logins.close()

    def write_audit(self) -> None:
        if not self._changes:
            return
        from server.audit_redis import AuditStoreError, open_audit_log

        try:
            log = open_audit_log(self.data_dir, self.redis_url, self.redis_prefix, node_id=PROG)
        except (sqlite3.Error, OSError, AuditStoreError) as exc:
            # The change is made; failing the command now would suggest it was not.
            print(f"{PROG}: warning: could not write the audit log: {exc}", file=sys.stderr)
            return
        try:
            for kind, detail in self._changes:
                log.record(kind, via=AUDIT_VIA, **detail)
        finally:
            log.close()


# -- lookups by name: CommandError naming what is missing --------------------------------


def _user(d: Directory, name: str) -> User:
    user = d.user_by_name(name)
    if user is None:
        raise CommandError(f"no user {name!r}")
    return user


def _event(d: Directory, name: str) -> Event:
    event = d.event_by_name(name)
    if event is None:
        raise CommandError(f"no event {name!r}")
    return event


def _team(d: Directory, event: Event | None, name: str, why: str = "") -> Team:
    team = d.team_by_name(event.id if event else None, name)
    if team is None:
        raise CommandError(f"no {team_label(name, event)}{why}")
    return team


def _channel(d: Directory, name: str) -> Channel:
    channel = d.channel_by_name(name)
    if channel is None:
        raise CommandError(f"no channel {name!r}")
    return channel


def _print_aligned(rows: list[tuple], *, ids_first: bool) -> None:
    """Rows as padded columns (None shown as "-"); the last column is not padded, the
    first right-aligned when it holds ids."""
    cells = [["-" if cell is None else str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]) - 1)]
    for row in cells:
        padded = [cell.ljust(width) for cell, width in zip(row, widths)]
        if ids_first:
            padded[0] = row[0].rjust(widths[0])
        print("  ".join(padded + row[-1:]))


def _table(header: tuple[str, ...], rows: list[tuple], empty: str) -> None:
    """A header and rows whose first column is an id; `empty` when there are no rows."""
    if rows:
        _print_aligned([header, *rows], ids_first=True)
    else:
        print(empty)


def _setting_text(value: object) -> str:
    return "none (the server default)" if value is None else str(value)


# -- users ------------------------------------------------------------------------------


def _read_password(args: argparse.Namespace) -> str:
    if args.password is not None:
        return args.password
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        second = getpass.getpass("Password again: ")
        if first != second:
            raise CommandError("the passwords do not match")
        return first
    # Scripts pipe the password in, so it never appears in the process list.
    line = sys.stdin.readline()
    if not line:
        raise CommandError("no password given (use --password, a terminal, or stdin)")
    return line.rstrip("\r\n")


def _user_rows(users: list[User]) -> list[tuple]:
    return [(u.id, u.name, u.role.value) for u in users]


def user_add(c: Context, args) -> None:
    user = c.directory.create_user(args.name, Role(args.role), _read_password(args))
    c.done(f"added user {user.name!r} (id {user.id}, role {user.role.value})", "user.create",
           user_id=user.id, name=user.name, role=user.role.value)


def user_list(c: Context, args) -> None:
    _table(("ID", "NAME", "ROLE"), _user_rows(c.directory.list_users()), "no users")


def user_rename(c: Context, args) -> None:
    user = c.directory.rename_user(_user(c.directory, args.name).id, args.new)
    c.done(f"renamed user {args.name!r} to {user.name!r}", "user.rename",
           user_id=user.id, name=user.name, was=args.name)


def user_role(c: Context, args) -> None:
    user = c.directory.set_user_role(_user(c.directory, args.name).id, args.role)
    c.done(f"user {user.name!r} is now {user.role.value}", "user.role",
           user_id=user.id, name=user.name, role=user.role.value)


def user_remove(c: Context, args) -> None:
    user = _user(c.directory, args.name)
    c.directory.delete_user(user.id)
    ended = c.end_logins(user)
    c.done(f"removed user {user.name!r} (ended {ended} login(s))", "user.delete",
           user_id=user.id, name=user.name)


def user_passwd(c: Context, args) -> None:
    user = _user(c.directory, args.name)  # fail on an unknown user before asking
    c.directory.set_user_password(user.id, _read_password(args))
    ended = c.end_logins(user)
    c.done(f"changed the password of user {user.name!r} (ended {ended} login(s))",
           "password_changed", user_id=user.id, name=user.name)


# -- events and teams -------------------------------------------------------------------


def event_add(c: Context, args) -> None:
    event = c.directory.add_event(args.name)
    c.done(f"added event {event.name!r} (id {event.id})", "event.create",
           event_id=event.id, name=event.name)


def event_list(c: Context, args) -> None:
    d = c.directory
    rows = [(e.id, e.name, len(d.list_teams(e.id)), len(d.channels_in_event(e.id)),
             ", ".join(u.name for u in d.dispatchers_of(e.id)) or None)
            for e in d.list_events()]
    _table(("ID", "NAME", "TEAMS", "CHANNELS", "DISPATCHERS"), rows, "no events")


def event_rename(c: Context, args) -> None:
    event = c.directory.rename_event(_event(c.directory, args.name).id, args.new)
    c.done(f"renamed event {args.name!r} to {event.name!r}", "event.rename",
           event_id=event.id, name=event.name, was=args.name)


def event_remove(c: Context, args) -> None:
    event = _event(c.directory, args.name)
    channels = len(c.directory.channels_in_event(event.id))
    c.directory.delete_event(event.id)
    c.done(f"removed event {event.name!r} with its teams and {channels} channel(s)",
           "event.delete", event_id=event.id, name=event.name)


def event_show(c: Context, args) -> None:
    d = c.directory
    event = _event(d, args.name)
    print(f"event {event.name!r} (id {event.id})")
    print("\nteams:")
    _table(("ID", "NAME"), [(t.id, t.name) for t in d.list_teams(event.id)], "no teams")
    print("\nchannels:")
    rows = [(ch.id, ch.name, ch.team) for ch in d.channels_in_event(event.id)]
    _table(("ID", "NAME", "TEAM"), rows, "no channels")
    print("\ndispatchers:")
    _table(("ID", "NAME", "ROLE"), _user_rows(d.dispatchers_of(event.id)), "no dispatchers")


def event_assign(c: Context, args) -> None:
    event, user = _event(c.directory, args.event), _user(c.directory, args.user)
    c.directory.assign_dispatcher(event.id, user.id)  # InvalidRole unless dispatch
    c.done(f"user {user.name!r} dispatches event {event.name!r}", "dispatcher.assign",
           event_id=event.id, event=event.name, user_id=user.id, user=user.name)


def event_unassign(c: Context, args) -> None:
    event, user = _event(c.directory, args.event), _user(c.directory, args.user)
    c.directory.unassign_dispatcher(event.id, user.id)
    c.done(f"user {user.name!r} no longer dispatches event {event.name!r}",
           "dispatcher.unassign", event_id=event.id, event=event.name, user_id=user.id,
           user=user.name)


def team_add(c: Context, args) -> None:
    event = _event(c.directory, args.event)
    team = c.directory.add_team(event.id, args.name)
    c.done(f"added team {team.name!r} to event {event.name!r} (id {team.id})", "team.create",
           team_id=team.id, name=team.name, event_id=event.id)


def team_list(c: Context, args) -> None:
    event = _event(c.directory, args.event)
    rows = [(t.id, t.name) for t in c.directory.list_teams(event.id)]
    _table(("ID", "NAME"), rows, f"event {event.name!r} has no teams")


def team_rename(c: Context, args) -> None:
    team = _team(c.directory, _event(c.directory, args.event), args.name)
    renamed = c.directory.rename_team(team.id, args.new)
    c.done(f"renamed team {team.name!r} to {renamed.name!r}", "team.rename",
           team_id=team.id, name=renamed.name, was=team.name, event_id=team.event_id)


def team_remove(c: Context, args) -> None:
    team = _team(c.directory, _event(c.directory, args.event), args.name)
    c.directory.delete_team(team.id)
    c.done(f"removed team {team.name!r} (its channels stay in the event)", "team.delete",
           team_id=team.id, name=team.name, event_id=team.event_id)


# -- channels and members ---------------------------------------------------------------


def channel_add(c: Context, args) -> None:
    channel = c.directory.add_channel(args.name, team=args.team, event=args.event)
    c.done(f"added channel {channel.name!r} (id {channel.id})", "channel.create",
           channel_id=channel.id, name=channel.name, event_id=channel.event_id,
           team_id=channel.team_id)


def channel_list(c: Context, args) -> None:
    d = c.directory
    channels = d.list_channels() if args.event is None else d.channels_in_event(
        _event(d, args.event).id)
    rows = [(ch.id, ch.name, ch.team, ch.event) for ch in channels]
    _table(("ID", "NAME", "TEAM", "EVENT"), rows, "no channels")


def channel_rename(c: Context, args) -> None:
    channel = c.directory.rename_channel(_channel(c.directory, args.name).id, args.new)
    c.done(f"renamed channel {args.name!r} to {channel.name!r}", "channel.rename",
           channel_id=channel.id, name=channel.name, was=args.name)


def channel_move(c: Context, args) -> None:
    d = c.directory
    channel = _channel(d, args.name)
    team_id = None
    if not args.no_team:
        event = None if channel.event_id is None else d.get_event(channel.event_id)
        # A channel moves only within its event: say where the team was looked for.
        why = f" (channel {channel.name!r} is in {'that' if event else 'no'} event)"
        team_id = _team(d, event, args.team, why).id
    moved = d.move_channel(channel.id, team_id)
    where = f"team {moved.team!r}" if moved.team else "no team"
    c.done(f"channel {moved.name!r} is now in {where}", "channel.move",
           channel_id=moved.id, name=moved.name, team_id=moved.team_id)


def channel_remove(c: Context, args) -> None:
    channel = _channel(c.directory, args.name)
    c.directory.delete_channel(channel.id)
    c.done(f"removed channel {channel.name!r}", "channel.delete",
           channel_id=channel.id, name=channel.name)


def member_add(c: Context, args) -> None:
    user, channel = _user(c.directory, args.user), _channel(c.directory, args.channel)
    c.directory.add_membership(user.id, channel.id)
    c.done(f"user {user.name!r} is a member of channel {channel.name!r}", "member.add",
           channel_id=channel.id, channel=channel.name, user_id=user.id, user=user.name)


def member_remove(c: Context, args) -> None:
    user, channel = _user(c.directory, args.user), _channel(c.directory, args.channel)
    c.directory.remove_membership(user.id, channel.id)
    c.done(f"user {user.name!r} is no longer a member of channel {channel.name!r}",
           "member.remove", channel_id=channel.id, channel=channel.name, user_id=user.id,
           user=user.name)


def member_list(c: Context, args) -> None:
    channel = _channel(c.directory, args.channel)
    rows = _user_rows(c.directory.members_of(channel.id))
    _table(("ID", "NAME", "ROLE"), rows, f"channel {channel.name!r} has no members")


# -- settings and audit -----------------------------------------------------------------


def settings_show(c: Context, args) -> None:
    for key, value in c.directory.get_settings().items():
        print(f"{key:<12}  {_setting_text(value)}")


def settings_set(c: Context, args) -> None:
    value: object = args.value
    if args.key == "max_talk_ms":
        if args.value.strip().lower() == "none":
            value = None
        else:
            try:
                value = int(args.value)
            except ValueError:
                raise CommandError(f"max_talk_ms must be a whole number of ms or none, "
                                   f"not {args.value!r}") from None
    settings = c.directory.update_settings(**{args.key: value})
    c.done(f"{args.key} is now {_setting_text(settings[args.key])}", "settings.update",
           **{args.key: value})


def audit(data_dir: Path, limit: int, kind: str | None, *, redis_url: str | None = None,
          redis_prefix: str = "vpdesk:") -> None:
    """Print the newest `limit` audit entries (of `kind`), one aligned line each: from
    the data folder's file, or with `redis_url` from the site's log in that Redis (then
    with the node that wrote each entry before its detail)."""
    if limit < 1:
        raise CommandError(f"--limit must be at least 1, not {limit}")
    if redis_url is None:
        from server.audit import AuditLog

        log = AuditLog.open(data_dir)
        try:
            entries = log.query(limit=limit, kind=kind)
        finally:
            log.close()
    else:
        entries = _redis_audit_entries(redis_url, redis_prefix, limit, kind)
    if not entries:
        print("no audit entries")
        return
    _print_aligned([
        (datetime.fromtimestamp(e["at"]).isoformat(timespec="seconds"), e["kind"], e["actor"],
         e["address"], *([e["node"]] if "node" in e else []), _compact(e["detail"]))
        for e in entries
    ], ids_first=False)


def _redis_audit_entries(url: str, prefix: str, limit: int, kind: str | None) -> list[dict]:
    from server.audit_redis import AuditStoreError, RedisAuditLog

    try:
        log = RedisAuditLog(url, prefix=prefix)
    except AuditStoreError as exc:
        raise CommandError(str(exc)) from None
    try:
        return log.query(limit=limit, kind=kind, include_node=True)
    except AuditStoreError as exc:
        raise CommandError(str(exc)) from None
    finally:
        log.close()


def _compact(detail: dict) -> str:
    """`key=value` pairs; strings bare unless they hold spaces, quotes or '='."""
    parts = []
    for key, value in detail.items():
        if isinstance(value, str) and value and not any(ch in value for ch in ' ="\''):
            text = value
        else:
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        parts.append(f"{key}={text}")
    return " ".join(parts)
