"""The `vpserver` command: run a node, or provision users, events, teams, channels,
memberships and settings, or read the audit log.

Provisioning commands open the directory directly, with the server stopped or running:
the SQLite file (WAL lets both use it), or the site's Redis when `--redis` or the config's
`redis_url` says so; the servers notice changes by the revision. They act as an admin
would, record their changes in the audit log, and end the logins of a user whose password
changes or who is removed. This module parses; the handlers are in `server.cli_commands`.
docs/cli.md shows every command.
"""

from __future__ import annotations

import argparse
import logging
import sqlite3
import sys
from pathlib import Path

from server import __version__
from server import cli_commands as commands
from server.cli_commands import PROG, CommandError, Context
from server.config import ConfigError, ServerConfig, load_config, media_port_number, parse_listen
from server.directory import DirectoryError, Role
from server.directory_redis import open_directory
from server.workers import worker_count

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2

__all__ = ["CommandError", "build_parser", "configure_logging", "main"]


# -- argument parsing -------------------------------------------------------------------


def _location_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    # Accepted both before and after the subcommand. A subparser's defaults overwrite
    # values the main parser already set, so the subcommands' copies default to SUPPRESS.
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument("--config", type=Path, metavar="FILE", default=default,
                        help="TOML configuration file")
    parser.add_argument("--data", type=Path, metavar="DIR", default=default,
                        help="data folder (default: the platform's user data folder)")


def _server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", metavar="HOST:PORT", help="HTTP/WebSocket listen address")
    parser.add_argument("--ice-address", action="append", dest="ice_addresses", metavar="ADDR",
                        help="address to gather ICE candidates on (repeatable)")
    parser.add_argument("--media-port", metavar="PORT|auto|off",
                        help="UDP port every session's media shares (default auto: one the "
                             "system picks; off: a port per connection)")
    parser.add_argument("--announced-address", metavar="ADDR",
                        help="address announced in ICE candidates (server behind NAT)")
    parser.add_argument("--tls-cert", type=Path, metavar="FILE", help="TLS certificate (PEM)")
    parser.add_argument("--tls-key", type=Path, metavar="FILE", help="TLS private key (PEM)")
    parser.add_argument("--self-signed", action="store_true", default=None,
                        help="serve HTTPS with a self-signed certificate kept in the data folder")
    parser.add_argument("--plain-http", action="store_true", default=None,
                        help="allow plain HTTP beyond loopback (a TLS proxy sits in front)")
    parser.add_argument("--stun", action="append", dest="stun_urls", metavar="URL",
                        help="STUN server handed to clients, e.g. stun:host:3478 (repeatable)")
    parser.add_argument("--turn", action="append", dest="turn_urls", metavar="URL",
                        help="TURN server handed to clients with ephemeral credentials "
                             "(repeatable)")
    parser.add_argument("--turn-secret-file", type=Path, metavar="FILE",
                        help="file holding the TURN server's static-auth-secret")
    parser.add_argument("--redis", dest="redis_url", metavar="URL",
                        help="keep live state (floor leases) and the directory in this Redis, "
                             "shared by the site's nodes, e.g. redis://host:6379/0 (default: "
                             "in this process and the data folder); give it before a "
                             "provisioning command to change that site's directory")
    parser.add_argument("--node-id", metavar="NAME",
                        help="this node's name among the site's nodes (with --redis; "
                             "default: host:port)")
    parser.add_argument("--public-url", metavar="URL",
                        help="where clients reach this node, handed to them so that they can "
                             "fail over to it (with --redis; default: the listen address)")
    parser.add_argument("--relay", dest="relay_listen", metavar="HOST:PORT",
                        help="UDP address for media to and from the site's other nodes "
                             "(with --redis; default 127.0.0.1:0, this machine only)")
    parser.add_argument("--relay-announce", metavar="HOST:PORT",
                        help="the relay address other nodes send to, when it differs from "
                             "--relay (NAT, containers)")
    parser.add_argument("--workers", metavar="N",
                        help="run N processes of this server sharing the listen port, the "
                             "kernel spreading connections over them (with --redis, Linux); "
                             "0 or auto: one per CPU core (default 1: this process alone)")
    # Internal: how the supervisor of --workers starts each worker (server.workers).
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="debug logging")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run a vpdesk server node, or provision its users, events and channels.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _location_options(parser, suppress=False)
    _server_options(parser)

    location = argparse.ArgumentParser(add_help=False)
    _location_options(location, suppress=True)
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def group(name: str, help: str):
        sub = subcommands.add_parser(name, help=help, description=help)
        actions = sub.add_subparsers(dest="action", metavar="ACTION", required=True)

        def action(action_name: str, help: str, handler, *positionals: str):
            p = actions.add_parser(action_name, help=help, description=help, parents=[location])
            p.set_defaults(handler=handler)
            for positional in positionals:
                p.add_argument(positional)
            return p

        return action

    password_help = "the password (default: prompt, or read a line from stdin)"
    user = group("user", "manage users")
    p = user("add", "add a user", commands.user_add, "name")
    p.add_argument("--role", required=True, choices=[r.value for r in Role])
    p.add_argument("--password", help=password_help)
    user("list", "list users", commands.user_list)
    user("rename", "rename a user", commands.user_rename, "name", "new")
    p = user("role", "change a user's role (the last admin stays admin)", commands.user_role,
             "name")
    p.add_argument("role", choices=[r.value for r in Role])
    user("remove", "remove a user, its memberships and its logins", commands.user_remove, "name")
    p = user("passwd", "set a user's password and end its logins", commands.user_passwd, "name")
    p.add_argument("--password", help=password_help)

    event = group("event", "manage events and their dispatchers")
    event("add", "add an event", commands.event_add, "name")
    event("list", "list events", commands.event_list)
    event("rename", "rename an event", commands.event_rename, "name", "new")
    event("remove", "remove an event with its teams and channels", commands.event_remove, "name")
    event("show", "show an event's teams, channels and dispatchers", commands.event_show, "name")
    event("assign", "let a dispatch user manage an event", commands.event_assign, "event", "user")
    event("unassign", "take an event from a dispatch user", commands.event_unassign,
          "event", "user")

    team = group("team", "manage the teams of an event")
    team("add", "add a team to an event", commands.team_add, "event", "name")
    team("list", "list an event's teams", commands.team_list, "event")
    team("rename", "rename a team", commands.team_rename, "event", "name", "new")
    team("remove", "remove a team (its channels stay in the event)", commands.team_remove,
         "event", "name")

    channel = group("channel", "manage channels")
    p = channel("add", "add a channel", commands.channel_add, "name")
    p.add_argument("--event", help="the event the channel belongs to (made if missing)")
    p.add_argument("--team", help="the team, within the event, the channel belongs to "
                                  "(made if missing)")
    p = channel("list", "list channels", commands.channel_list)
    p.add_argument("--event", help="only this event's channels")
    channel("rename", "rename a channel", commands.channel_rename, "name", "new")
    p = channel("move", "put a channel in another team of its event", commands.channel_move, "name")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--team", help="the team (in the channel's event)")
    where.add_argument("--no-team", action="store_true", help="take the channel out of its team")
    channel("remove", "remove a channel and its memberships", commands.channel_remove, "name")

    member = group("member", "manage channel memberships")
    member("add", "make a user a member of a channel", commands.member_add, "user", "channel")
    member("remove", "take a user out of a channel", commands.member_remove, "user", "channel")
    member("list", "list a channel's members", commands.member_list, "channel")

    settings = group("settings", "show or change site settings")
    settings("show", "show the site settings", commands.settings_show)
    settings("set", "change a setting (max_talk_ms: none = the server's default)",
             commands.settings_set, "key", "value")

    p = subcommands.add_parser("audit", help="print the audit log, newest first",
                            description="print the audit log, newest first", parents=[location])
    p.add_argument("--limit", type=int, default=100, metavar="N", help="at most N entries")
    p.add_argument("--kind", help="only this kind, e.g. login or user.* (a prefix)")
    return parser


# -- entry point ------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """The `vpserver` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    if args.command is None:
        return _run_server(args, sys.argv[1:] if argv is None else list(argv))
    try:
        site = load_config(args.config).with_overrides(data_dir=args.data,
                                                       redis_url=args.redis_url)
    except ConfigError as exc:
        return _fail(exc, EXIT_USAGE)
    args.data_dir = site.data_dir
    try:
        if args.command == "audit":
            # The site's log: in its Redis when --redis or the config file names one.
            commands.audit(args.data_dir, args.limit, args.kind,
                           redis_url=site.redis_url, redis_prefix=site.redis_prefix)
        else:
            # The site's directory: in Redis when the site keeps it there, so that every
            # node sees the change; else the file in the data folder.
            with open_directory(args.data_dir, site.redis_url, site.redis_prefix) as directory:
                context = Context(directory, args.data_dir, redis_url=site.redis_url,
                                  redis_prefix=site.redis_prefix)
                args.handler(context, args)
            context.write_audit()
    except (DirectoryError, CommandError) as exc:
        return _fail(exc)
    except (sqlite3.Error, OSError) as exc:
        return _fail(f"cannot use the data in {args.data_dir}: {exc}")
    return EXIT_OK


def _fail(message: object, code: int = EXIT_ERROR) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return code


def _run_server(args: argparse.Namespace, argv: list[str]) -> int:
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
            media_port=args.media_port,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            tls_self_signed=args.self_signed,
            plain_http=args.plain_http,
            stun_urls=args.stun_urls,
            turn_urls=args.turn_urls,
            redis_url=args.redis_url,
            turn_secret=_read_secret(args.turn_secret_file),
            node_id=args.node_id,
            public_url=args.public_url,
            relay_listen=args.relay_listen,
            relay_announce=args.relay_announce,
            workers=args.workers,
        )
        media_port_number(config.media_port)  # ConfigError now, not when the node starts
        for address in (config.relay_listen, config.relay_announce):
            if address is not None:
                parse_listen(address)  # ConfigError now rather than when the node starts
        workers = 1 if args.reuse_port else worker_count(config.workers)
    except ConfigError as exc:
        return _fail(exc, EXIT_USAGE)
    configure_logging(args.verbose)
    if workers > 1:
        return _run_workers(config, argv, workers)
    # Imported here: provisioning commands must not pay for (or depend on) aiortc.
    from server.node import run_node

    logger.info("vpserver %s: listening on %s, data in %s", __version__, config.listen,
                config.data_dir)
    try:
        if args.reuse_port:
            run_node(config, reuse_port=True)  # one worker of --workers
        else:
            run_node(config)
    except ConfigError as exc:  # e.g. TLS missing beyond loopback, an unreadable certificate
        return _fail(exc, EXIT_USAGE)
    except KeyboardInterrupt:
        return 130
    return EXIT_OK


def _run_workers(config: ServerConfig, argv: list[str], count: int) -> int:
    from server.workers import SupervisorError, run_workers

    try:
        return run_workers(config, argv, count)
    except ConfigError as exc:  # no Redis, no SO_REUSEPORT, TLS options that cannot work
        return _fail(exc, EXIT_USAGE)
    except SupervisorError as exc:
        return _fail(exc)


def _read_secret(path: Path | None) -> str | None:
    # A file, not an option value: a secret on the command line shows in the process list.
    if path is None:
        return None
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the TURN secret file {path}: {exc}") from None
    if not secret:
        raise ConfigError(f"the TURN secret file {path} is empty")
    return secret


def configure_logging(verbosity: int) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbosity else logging.INFO,
        # The process id tells `--workers` processes apart in one journal.
        format="%(asctime)s %(process)d %(levelname)-7s %(name)s: %(message)s",
    )
    if verbosity < 2:
        # aioice and aiortc log every candidate pair at DEBUG; ask for them with -vv.
        for noisy in ("aioice", "aiortc"):
            logging.getLogger(noisy).setLevel(max(logging.getLogger(noisy).level, logging.INFO))


