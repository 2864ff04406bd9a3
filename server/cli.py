"""The `vpserver` command: run a node, or provision users, channels and memberships.

Provisioning commands open the directory file directly, with the server stopped or
running (SQLite WAL lets both use it; the server notices changes by the revision).
"""

from __future__ import annotations

import argparse
import getpass
import logging
import sqlite3
import sys
from pathlib import Path

from server import __version__
from server.config import ConfigError, load_config, parse_listen
from server.directory import Directory, DirectoryError, Role

logger = logging.getLogger(__name__)

PROG = "vpserver"
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


class CommandError(Exception):
    """A provisioning command cannot go on; the message is printed as is."""


# -- argument parsing -------------------------------------------------------------------


def _location_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    # Accepted both before and after the subcommand. A subparser's defaults overwrite
    # values the main parser already set, so the subcommands' copies default to SUPPRESS.
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument("--config", type=Path, metavar="FILE", default=default,
                        help="TOML configuration file")
    parser.add_argument("--data", type=Path, metavar="DIR", default=default,
                        help="data folder (default: the platform's user data folder)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run a vpdesk server node, or provision its users and channels.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _location_options(parser, suppress=False)
    parser.add_argument("--listen", metavar="HOST:PORT", help="HTTP/WebSocket listen address")
    parser.add_argument("--ice-address", action="append", dest="ice_addresses", metavar="ADDR",
                        help="address to gather ICE candidates on (repeatable)")
    parser.add_argument("--announced-address", metavar="ADDR",
                        help="address announced in ICE candidates (server behind NAT)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="debug logging")

    location = argparse.ArgumentParser(add_help=False)
    _location_options(location, suppress=True)

    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def group(name: str, help: str):
        sub = commands.add_parser(name, help=help, description=help)
        actions = sub.add_subparsers(dest="action", metavar="ACTION", required=True)

        def action(action_name: str, help: str, handler) -> argparse.ArgumentParser:
            p = actions.add_parser(action_name, help=help, description=help, parents=[location])
            p.set_defaults(handler=handler)
            return p

        return action

    user = group("user", "manage users")
    p = user("add", "add a user", _user_add)
    p.add_argument("name")
    p.add_argument("--role", required=True, choices=[r.value for r in Role])
    p.add_argument("--password", help="the password (default: prompt, or read a line from stdin)")
    user("list", "list users", _user_list)
    p = user("remove", "remove a user and its memberships", _user_remove)
    p.add_argument("name")
    p = user("passwd", "set a user's password", _user_passwd)
    p.add_argument("name")
    p.add_argument("--password", help="the password (default: prompt, or read a line from stdin)")

    channel = group("channel", "manage channels")
    p = channel("add", "add a channel", _channel_add)
    p.add_argument("name")
    p.add_argument("--team", help="the team the channel belongs to")
    p.add_argument("--event", help="the event the channel belongs to")
    channel("list", "list channels", _channel_list)
    p = channel("remove", "remove a channel and its memberships", _channel_remove)
    p.add_argument("name")

    member = group("member", "manage channel memberships")
    p = member("add", "make a user a member of a channel", _member_add)
    p.add_argument("user")
    p.add_argument("channel")
    p = member("remove", "take a user out of a channel", _member_remove)
    p.add_argument("user")
    p.add_argument("channel")
    p = member("list", "list a channel's members", _member_list)
    p.add_argument("channel")

    return parser


# -- entry point ------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """The `vpserver` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    if args.command is None:
        return _run_server(args)
    try:
        data_dir = _data_dir(args)
    except ConfigError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        with Directory.open(data_dir) as directory:
            args.handler(directory, args)
    except (DirectoryError, CommandError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except (sqlite3.Error, OSError) as exc:
        print(f"{PROG}: cannot use the directory in {data_dir}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def _data_dir(args: argparse.Namespace) -> Path:
    if args.data is not None:
        return args.data
    return load_config(args.config).data_dir


def _run_server(args: argparse.Namespace) -> int:
    try:
        listen_host = listen_port = None
        if args.listen is not None:
            listen_host, listen_port = parse_listen(args.listen)
        config = load_config(args.config).with_overrides(
            data_dir=args.data,
            listen_host=listen_host,
            listen_port=listen_port,
            ice_addresses=args.ice_addresses,
            announced_address=args.announced_address,
        )
    except ConfigError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(args.verbose)
    # Imported here: provisioning commands must not pay for (or depend on) aiortc.
    from server.node import run_node

    logger.info("vpserver %s: listening on %s, data in %s", __version__, config.listen,
                config.data_dir)
    try:
        run_node(config)
    except KeyboardInterrupt:
        return 130
    return EXIT_OK


def configure_logging(verbosity: int) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbosity else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    if verbosity < 2:
        # aioice and aiortc log every candidate pair at DEBUG; ask for them with -vv.
        for noisy in ("aioice", "aiortc"):
            logging.getLogger(noisy).setLevel(max(logging.getLogger(noisy).level, logging.INFO))


# -- provisioning handlers: (directory, args) -> None, print one line on success ----------


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


def _user_add(directory: Directory, args: argparse.Namespace) -> None:
    user = directory.add_user(args.name, Role(args.role), _read_password(args))
    print(f"added user {user.name!r} (id {user.id}, role {user.role.value})")


def _user_list(directory: Directory, args: argparse.Namespace) -> None:
    users = directory.list_users()
    if not users:
        print("no users")
        return
    print(f"{'ID':>5}  {'NAME':<24}  ROLE")
    for user in users:
        print(f"{user.id:>5}  {user.name:<24}  {user.role.value}")


def _user_remove(directory: Directory, args: argparse.Namespace) -> None:
    directory.remove_user(args.name)
    print(f"removed user {args.name!r}")


def _user_passwd(directory: Directory, args: argparse.Namespace) -> None:
    # Fail on an unknown user before asking for a password.
    if directory.user_by_name(args.name) is None:
        raise CommandError(f"no user {args.name!r}")
    directory.set_password(args.name, _read_password(args))
    print(f"changed the password of user {args.name!r}")


def _channel_add(directory: Directory, args: argparse.Namespace) -> None:
    channel = directory.add_channel(args.name, team=args.team, event=args.event)
    print(f"added channel {channel.name!r} (id {channel.id})")


def _channel_list(directory: Directory, args: argparse.Namespace) -> None:
    channels = directory.list_channels()
    if not channels:
        print("no channels")
        return
    print(f"{'ID':>5}  {'NAME':<24}  {'TEAM':<16}  EVENT")
    for c in channels:
        print(f"{c.id:>5}  {c.name:<24}  {c.team or '-':<16}  {c.event or '-'}")


def _channel_remove(directory: Directory, args: argparse.Namespace) -> None:
    directory.remove_channel(args.name)
    print(f"removed channel {args.name!r}")


def _member_add(directory: Directory, args: argparse.Namespace) -> None:
    directory.add_member(args.user, args.channel)
    print(f"user {args.user!r} is a member of channel {args.channel!r}")


def _member_remove(directory: Directory, args: argparse.Namespace) -> None:
    directory.remove_member(args.user, args.channel)
    print(f"user {args.user!r} is no longer a member of channel {args.channel!r}")


def _member_list(directory: Directory, args: argparse.Namespace) -> None:
    channel = directory.channel_by_name(args.channel)
    if channel is None:
        raise CommandError(f"no channel {args.channel!r}")
    members = directory.members_of(channel.id)
    if not members:
        print(f"channel {channel.name!r} has no members")
        return
    print(f"{'ID':>5}  {'NAME':<24}  ROLE")
    for user in members:
        print(f"{user.id:>5}  {user.name:<24}  {user.role.value}")
