"""The `vpserver` command: provisioning subcommands in-process, and `python -m server`."""

from __future__ import annotations

import io
import subprocess
import sys
import types
from pathlib import Path

import pytest

from server.cli import main
from server.config import ConfigError, ServerConfig, media_port_number
from server.directory import Directory, Role

ROOT = Path(__file__).resolve().parents[2]


def run(data: Path, *argv: str) -> int:
    return main([*argv, "--data", str(data)])


def usage_error(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as info:
        main(argv)
    return info.value.code


def test_user_commands(tmp_path, capsys):
    assert run(tmp_path, "user", "add", "bob", "--role", "dispatch", "--password", "pw") == 0
    assert "added user 'bob'" in capsys.readouterr().out
    with Directory.open(tmp_path) as d:
        bob = d.user_by_name("bob")
        assert bob.role is Role.DISPATCH
        assert d.authenticate("bob", "pw") == bob

    assert run(tmp_path, "user", "list") == 0
    out = capsys.readouterr().out
    assert "bob" in out and "dispatch" in out

    assert run(tmp_path, "user", "passwd", "bob", "--password", "new") == 0
    assert "password" in capsys.readouterr().out
    with Directory.open(tmp_path) as d:
        assert d.authenticate("bob", "new") is not None
        assert d.authenticate("bob", "pw") is None

    assert run(tmp_path, "user", "remove", "bob") == 0
    assert "removed user 'bob'" in capsys.readouterr().out
    with Directory.open(tmp_path) as d:
        assert d.list_users() == []
    assert run(tmp_path, "user", "list") == 0
    assert "no users" in capsys.readouterr().out


def test_user_errors_exit_1_with_one_line(tmp_path, capsys):
    assert run(tmp_path, "user", "add", "bob", "--role", "admin", "--password", "pw") == 0
    capsys.readouterr()
    assert run(tmp_path, "user", "add", "bob", "--role", "admin", "--password", "pw") == 1
    err = capsys.readouterr().err
    assert err == "vpserver: user 'bob' exists already\n"
    assert run(tmp_path, "user", "remove", "carol") == 1
    assert capsys.readouterr().err == "vpserver: no user 'carol'\n"
    assert run(tmp_path, "user", "passwd", "carol", "--password", "x") == 1
    assert "no user 'carol'" in capsys.readouterr().err
    assert run(tmp_path, "user", "add", "bad\tname", "--role", "admin", "--password", "pw") == 1
    err = capsys.readouterr().err
    assert "control characters" in err and "Traceback" not in err
    assert run(tmp_path, "user", "add", "dave", "--role", "admin", "--password", "") == 1
    assert "password" in capsys.readouterr().err


def test_password_from_stdin(tmp_path, monkeypatch, capsys):
    # Not a TTY: one line is read from stdin.
    monkeypatch.setattr(sys, "stdin", io.StringIO("s3cret pass\n"))
    assert run(tmp_path, "user", "add", "bob", "--role", "general") == 0
    monkeypatch.setattr(sys, "stdin", io.StringIO("changed\r\n"))
    assert run(tmp_path, "user", "passwd", "bob") == 0
    with Directory.open(tmp_path) as d:
        assert d.authenticate("bob", "changed") is not None
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert run(tmp_path, "user", "add", "amy", "--role", "general") == 1
    assert "no password" in capsys.readouterr().err


def test_channel_commands(tmp_path, capsys):
    assert run(tmp_path, "channel", "add", "North", "--team", "Fire", "--event", "Parade") == 0
    assert run(tmp_path, "channel", "add", "Alpha") == 0
    assert "added channel 'Alpha'" in capsys.readouterr().out
    with Directory.open(tmp_path) as d:
        north = d.channel_by_name("North")
        assert (north.team, north.event) == ("Fire", "Parade")
        assert d.channel_by_name("Alpha").team is None

    assert run(tmp_path, "channel", "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert "Alpha" in lines[1] and "North" in lines[2] and "Fire" in lines[2]

    assert run(tmp_path, "channel", "add", "North") == 1
    assert "channel 'North' exists already" in capsys.readouterr().err
    assert run(tmp_path, "channel", "remove", "North") == 0
    assert run(tmp_path, "channel", "remove", "North") == 1
    assert capsys.readouterr().err == "vpserver: no channel 'North'\n"
    with Directory.open(tmp_path) as d:
        assert [c.name for c in d.list_channels()] == ["Alpha"]


def test_member_commands(tmp_path, capsys):
    assert run(tmp_path, "user", "add", "bob", "--role", "general", "--password", "pw") == 0
    assert run(tmp_path, "channel", "add", "North") == 0
    capsys.readouterr()

    assert run(tmp_path, "member", "list", "North") == 0
    assert "no members" in capsys.readouterr().out
    assert run(tmp_path, "member", "add", "bob", "North") == 0
    assert "member" in capsys.readouterr().out
    with Directory.open(tmp_path) as d:
        bob, north = d.user_by_name("bob"), d.channel_by_name("North")
        assert d.is_member(bob.id, north.id)
    assert run(tmp_path, "member", "list", "North") == 0
    assert "bob" in capsys.readouterr().out

    assert run(tmp_path, "member", "add", "carl", "North") == 1
    assert "no user 'carl'" in capsys.readouterr().err
    assert run(tmp_path, "member", "list", "South") == 1
    assert "no channel 'South'" in capsys.readouterr().err

    assert run(tmp_path, "member", "remove", "bob", "North") == 0
    with Directory.open(tmp_path) as d:
        assert not d.is_member(bob.id, north.id)
    assert run(tmp_path, "member", "remove", "bob", "North") == 1
    assert "not a member" in capsys.readouterr().err


def test_cli_write_is_seen_by_open_directory(tmp_path):
    # The server keeps its Directory open; the CLI's write shows up in the revision.
    with Directory.open(tmp_path) as server:
        before = server.revision()
        assert run(tmp_path, "channel", "add", "North") == 0
        assert server.revision() > before
        assert server.channel_by_name("North") is not None


def test_data_option_before_subcommand_and_from_config(tmp_path):
    assert main(["--data", str(tmp_path / "a"), "channel", "add", "X"]) == 0
    with Directory.open(tmp_path / "a") as d:
        assert d.channel_by_name("X") is not None

    config = tmp_path / "server.toml"
    config.write_text(f'data_dir = "{(tmp_path / "b").as_posix()}"\n', encoding="utf-8")
    assert main(["channel", "add", "Y", "--config", str(config)]) == 0
    with Directory.open(tmp_path / "b") as d:
        assert d.channel_by_name("Y") is not None


def test_bad_config_exits_2(tmp_path, capsys):
    config = tmp_path / "server.toml"
    config.write_text("nonsense_key = 1\n", encoding="utf-8")
    assert main(["user", "list", "--config", str(config)]) == 2
    assert "nonsense_key" in capsys.readouterr().err
    assert main(["--config", str(config)]) == 2
    assert main(["--config", str(tmp_path / "missing.toml"), "user", "list"]) == 2


@pytest.mark.parametrize("argv", [
    ["user"],
    ["user", "add", "bob"],  # --role missing
    ["user", "add", "bob", "--role", "boss", "--password", "x"],
    ["channel", "frobnicate"],
    ["member", "add", "bob"],
    ["nonsense"],
    ["user", "role", "bob", "boss"],
    ["event", "assign", "Fair"],
    ["team", "add", "Fair"],
    ["channel", "move", "North"],  # --team or --no-team is required
    ["channel", "move", "North", "--team", "Fire", "--no-team"],
    ["settings", "set", "site_name"],
    ["audit", "--limit", "many"],
])
def test_usage_errors_exit_2(tmp_path, argv, capsys):
    assert usage_error([*argv, "--data", str(tmp_path)]) == 2
    assert "usage:" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    [],
    ["user"], ["user", "add"], ["user", "list"], ["user", "remove"], ["user", "passwd"],
    ["user", "rename"], ["user", "role"],
    ["event"], ["event", "add"], ["event", "list"], ["event", "rename"], ["event", "remove"],
    ["event", "show"], ["event", "assign"], ["event", "unassign"],
    ["team"], ["team", "add"], ["team", "list"], ["team", "rename"], ["team", "remove"],
    ["channel"], ["channel", "add"], ["channel", "list"], ["channel", "remove"],
    ["channel", "rename"], ["channel", "move"],
    ["member"], ["member", "add"], ["member", "remove"], ["member", "list"],
    ["settings"], ["settings", "show"], ["settings", "set"],
    ["audit"],
])
def test_help_exits_0(argv, capsys):
    assert usage_error([*argv, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: vpserver {' '.join(argv)}".rstrip())


def test_server_options_reach_run_node(tmp_path, monkeypatch):
    # A stand-in server.node records the config instead of serving.
    seen: list[ServerConfig] = []
    stub = types.ModuleType("server.node")
    stub.run_node = seen.append
    monkeypatch.setitem(sys.modules, "server.node", stub)

    code = main([
        "--data", str(tmp_path), "--listen", "0.0.0.0:9000",
        "--ice-address", "127.0.0.1", "--ice-address", "10.0.0.2",
        "--announced-address", "203.0.113.5",
    ])
    assert code == 0
    (config,) = seen
    assert config.data_dir == tmp_path
    assert (config.listen_host, config.listen_port) == ("0.0.0.0", 9000)
    assert config.ice_addresses == ["127.0.0.1", "10.0.0.2"]
    assert config.announced_address == "203.0.113.5"
    assert config.token_ttl_s == ServerConfig().token_ttl_s  # untouched fields keep defaults


def test_bad_listen_exits_2(capsys):
    assert main(["--listen", "nope"]) == 2
    assert "nope" in capsys.readouterr().err


def test_python_dash_m_server(tmp_path):
    with Directory.open(tmp_path) as d:
        d.add_user("bob", Role.ADMIN, "pw")
    result = subprocess.run(
        [sys.executable, "-m", "server", "user", "list", "--data", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "bob" in result.stdout and "admin" in result.stdout

    result = subprocess.run(
        [sys.executable, "-m", "server", "user", "remove", "carol", "--data", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == "vpserver: no user 'carol'"


# -- schema v2 commands -----------------------------------------------------------------


def provision(data: Path, *commands: str) -> None:
    """Run each command (a string split on '|' into argv) and require success."""
    for command in commands:
        argv = command.split("|")
        assert run(data, *argv) == 0, argv


def test_user_rename_and_role(tmp_path, capsys):
    provision(tmp_path, "user|add|root|--role|admin|--password|pw",
              "user|add|bob|--role|general|--password|pw")
    capsys.readouterr()
    assert run(tmp_path, "user", "rename", "BOB", "Robert") == 0
    assert capsys.readouterr().out == "renamed user 'BOB' to 'Robert'\n"
    assert run(tmp_path, "user", "role", "robert", "dispatch") == 0
    assert capsys.readouterr().out == "user 'Robert' is now dispatch\n"
    with Directory.open(tmp_path) as d:
        assert d.user_by_name("Robert").role is Role.DISPATCH
        assert d.authenticate("Robert", "pw") is not None

    assert run(tmp_path, "user", "rename", "Robert", "root") == 1
    assert capsys.readouterr().err == "vpserver: user 'root' exists already\n"
    assert run(tmp_path, "user", "role", "carol", "admin") == 1
    assert capsys.readouterr().err == "vpserver: no user 'carol'\n"


def test_last_admin_is_refused(tmp_path, capsys):
    provision(tmp_path, "user|add|root|--role|admin|--password|pw")
    capsys.readouterr()
    assert run(tmp_path, "user", "role", "root", "general") == 1
    assert capsys.readouterr().err == (
        "vpserver: user 'root' is the last admin: demoting them would leave the site "
        "without one\n")
    assert run(tmp_path, "user", "remove", "root") == 1
    assert "last admin" in capsys.readouterr().err
    provision(tmp_path, "user|add|second|--role|admin|--password|pw", "user|remove|root")
    with Directory.open(tmp_path) as d:
        assert [u.name for u in d.list_users()] == ["second"]


def test_passwd_and_remove_end_the_users_logins(tmp_path, capsys):
    from server.logins import LoginStore

    provision(tmp_path, "user|add|root|--role|admin|--password|pw",
              "user|add|bob|--role|general|--password|pw")
    with Directory.open(tmp_path) as d:
        root, bob = d.user_by_name("root"), d.user_by_name("bob")
    with LoginStore.open(tmp_path) as logins:
        mine = [logins.create(bob, address="127.0.0.1", client="web", refresh_ttl_s=60)[0]
                for _ in range(2)]
        theirs = logins.create(root, address=None, client="console", refresh_ttl_s=60)[0]
    capsys.readouterr()

    assert run(tmp_path, "user", "passwd", "bob", "--password", "new") == 0
    assert capsys.readouterr().out == "changed the password of user 'bob' (ended 2 login(s))\n"
    with LoginStore.open(tmp_path) as logins:
        assert logins.active_among([*mine, theirs]) == {theirs}
        again = logins.create(bob, address=None, client="web", refresh_ttl_s=60)[0]
    assert run(tmp_path, "user", "remove", "bob") == 0
    assert capsys.readouterr().out == "removed user 'bob' (ended 1 login(s))\n"
    with LoginStore.open(tmp_path) as logins:
        assert not logins.is_active(again) and logins.is_active(theirs)


def test_event_commands(tmp_path, capsys):
    provision(tmp_path, "user|add|amy|--role|dispatch|--password|pw",
              "user|add|gus|--role|general|--password|pw")
    capsys.readouterr()
    assert run(tmp_path, "event", "list") == 0
    assert capsys.readouterr().out == "no events\n"
    assert run(tmp_path, "event", "add", "County Fair") == 0
    assert capsys.readouterr().out == "added event 'County Fair' (id 1)\n"
    provision(tmp_path, "event|add|Marathon", "team|add|county fair|Fire",
              "channel|add|Fire Ops|--event|County Fair|--team|Fire",
              "channel|add|Gate|--event|County Fair")
    capsys.readouterr()

    assert run(tmp_path, "event", "assign", "County Fair", "amy") == 0
    assert capsys.readouterr().out == "user 'amy' dispatches event 'County Fair'\n"
    assert run(tmp_path, "event", "assign", "County Fair", "gus") == 1
    err = capsys.readouterr().err
    assert err.startswith("vpserver: user 'gus' is general: only dispatch users")

    assert run(tmp_path, "event", "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "NAME", "TEAMS", "CHANNELS", "DISPATCHERS"]
    assert lines[1].split() == ["1", "County", "Fair", "1", "2", "amy"]
    assert lines[2].split() == ["2", "Marathon", "0", "0", "-"]

    assert run(tmp_path, "event", "show", "county fair") == 0
    out = capsys.readouterr().out
    assert out.startswith("event 'County Fair' (id 1)\n")
    teams, channels, dispatchers = out.split("\n\n")[1:]
    assert teams.splitlines()[2].split() == ["1", "Fire"]
    assert [line.split()[1:] for line in channels.splitlines()[2:]] == [
        ["Fire", "Ops", "Fire"], ["Gate", "-"]]
    assert dispatchers.splitlines()[2].split() == ["1", "amy", "dispatch"]

    assert run(tmp_path, "event", "unassign", "County Fair", "amy") == 0
    assert run(tmp_path, "event", "unassign", "County Fair", "amy") == 1
    assert "'amy' is not a dispatcher of event 'County Fair'" in capsys.readouterr().err
    assert run(tmp_path, "event", "rename", "Marathon", "county FAIR") == 1
    assert capsys.readouterr().err == "vpserver: event 'county FAIR' exists already\n"
    assert run(tmp_path, "event", "rename", "County Fair", "Fair 2025") == 0
    assert run(tmp_path, "event", "remove", "Fair 2025") == 0
    assert "2 channel(s)" in capsys.readouterr().out
    assert run(tmp_path, "event", "show", "Fair 2025") == 1
    assert capsys.readouterr().err == "vpserver: no event 'Fair 2025'\n"
    with Directory.open(tmp_path) as d:
        assert [e.name for e in d.list_events()] == ["Marathon"]
        assert d.list_channels() == []


def test_team_commands(tmp_path, capsys):
    provision(tmp_path, "event|add|Fair", "event|add|Parade", "team|add|Fair|Fire",
              "team|add|Parade|Fire")  # the same name in another event
    capsys.readouterr()
    assert run(tmp_path, "team", "add", "Fair", "FIRE") == 1
    assert capsys.readouterr().err == (
        "vpserver: team 'FIRE' in event 'Fair' exists already\n")
    assert run(tmp_path, "team", "add", "Nowhere", "Fire") == 1
    assert capsys.readouterr().err == "vpserver: no event 'Nowhere'\n"
    provision(tmp_path, "team|add|Fair|Medical", "channel|add|Ops|--event|Fair|--team|Fire")
    capsys.readouterr()

    assert run(tmp_path, "team", "list", "Fair") == 0
    assert [line.split()[1] for line in capsys.readouterr().out.splitlines()[1:]] == [
        "Fire", "Medical"]
    assert run(tmp_path, "team", "rename", "Fair", "Fire", "Rescue") == 0
    assert capsys.readouterr().out == "renamed team 'Fire' to 'Rescue'\n"
    with Directory.open(tmp_path) as d:
        assert d.channel_by_name("Ops").team == "Rescue"
    assert run(tmp_path, "team", "rename", "Fair", "Fire", "X") == 1
    assert capsys.readouterr().err == "vpserver: no team 'Fire' in event 'Fair'\n"
    assert run(tmp_path, "team", "remove", "Fair", "Rescue") == 0
    with Directory.open(tmp_path) as d:
        ops = d.channel_by_name("Ops")
        assert (ops.team, ops.event) == (None, "Fair")
        assert [t.name for t in d.list_teams(d.event_by_name("Parade").id)] == ["Fire"]
    assert run(tmp_path, "team", "list", "Parade") == 0
    provision(tmp_path, "team|remove|Parade|Fire")
    capsys.readouterr()
    assert run(tmp_path, "team", "list", "Parade") == 0
    assert capsys.readouterr().out == "event 'Parade' has no teams\n"


def test_channel_placement_commands(tmp_path, capsys):
    provision(tmp_path, "channel|add|North|--event|Fair|--team|Fire",
              "channel|add|South|--event|fair|--team|fire",  # found again, any case
              "channel|add|Parade HQ|--event|Parade|--team|Fire",  # another event's Fire
              "channel|add|Loose|--team|Fire",  # a site-wide team
              "team|add|Fair|Medical")
    capsys.readouterr()
    with Directory.open(tmp_path) as d:
        north, south = d.channel_by_name("North"), d.channel_by_name("South")
        assert (south.team_id, south.event_id) == (north.team_id, north.event_id)
        assert d.channel_by_name("Parade HQ").team_id != north.team_id
        loose = d.channel_by_name("Loose")
        assert loose.event_id is None and loose.team == "Fire"

    assert run(tmp_path, "channel", "list", "--event", "Fair") == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1:] for line in lines[1:]] == [
        ["North", "Fire", "Fair"], ["South", "Fire", "Fair"]]
    assert run(tmp_path, "channel", "list", "--event", "Nowhere") == 1
    assert capsys.readouterr().err == "vpserver: no event 'Nowhere'\n"

    assert run(tmp_path, "channel", "move", "North", "--team", "Medical") == 0
    assert capsys.readouterr().out == "channel 'North' is now in team 'Medical'\n"
    assert run(tmp_path, "channel", "move", "South", "--no-team") == 0
    assert capsys.readouterr().out == "channel 'South' is now in no team\n"
    assert run(tmp_path, "channel", "move", "Parade HQ", "--team", "Medical") == 1
    assert capsys.readouterr().err == (
        "vpserver: no team 'Medical' in event 'Parade' (channel 'Parade HQ' is in that "
        "event)\n")
    assert run(tmp_path, "channel", "move", "Loose", "--team", "Medical") == 1
    assert capsys.readouterr().err == (
        "vpserver: no site-wide team 'Medical' (channel 'Loose' is in no event)\n")

    assert run(tmp_path, "channel", "rename", "North", "Nord") == 0
    assert capsys.readouterr().out == "renamed channel 'North' to 'Nord'\n"
    assert run(tmp_path, "channel", "rename", "Nord", "south") == 1
    assert capsys.readouterr().err == "vpserver: channel 'south' exists already\n"
    with Directory.open(tmp_path) as d:
        nord = d.channel_by_name("Nord")
        assert (nord.id, nord.team) == (north.id, "Medical")
        assert d.channel_by_name("South").team is None


def test_settings_commands(tmp_path, capsys):
    assert run(tmp_path, "settings", "show") == 0
    assert capsys.readouterr().out.splitlines() == [
        "site_name     vpdesk", "max_talk_ms   none (the server default)"]
    assert run(tmp_path, "settings", "set", "max_talk_ms", "30000") == 0
    assert run(tmp_path, "settings", "set", "site_name", "Fair HQ") == 0
    assert capsys.readouterr().out == "max_talk_ms is now 30000\nsite_name is now Fair HQ\n"
    with Directory.open(tmp_path) as d:
        assert d.get_settings() == {"site_name": "Fair HQ", "max_talk_ms": 30_000}

    for argv, message in [
        (["max_talk_ms", "lots"], "max_talk_ms must be a whole number of ms or none, not 'lots'"),
        (["max_talk_ms", "100"], "max_talk_ms 100 is outside 5000..600000"),
        (["colour", "red"], "unknown setting 'colour' (known: max_talk_ms, site_name)"),
        (["site_name", " "], "site_name ' ' is empty"),
    ]:
        assert run(tmp_path, "settings", "set", *argv) == 1
        assert capsys.readouterr().err == f"vpserver: {message}\n"
    assert run(tmp_path, "settings", "set", "max_talk_ms", "None") == 0
    assert capsys.readouterr().out == "max_talk_ms is now none (the server default)\n"
    with Directory.open(tmp_path) as d:
        assert d.get_settings() == {"site_name": "Fair HQ", "max_talk_ms": None}


def test_audit_prints_changes_and_entries(tmp_path, capsys):
    from server.audit import AuditLog

    assert run(tmp_path, "audit") == 0
    assert capsys.readouterr().out == "no audit entries\n"
    provision(tmp_path, "user|add|bob|--role|general|--password|secret pw",
              "channel|add|Fire Ops", "member|add|bob|Fire Ops")
    assert run(tmp_path, "member", "add", "bob", "Nowhere") == 1  # failures are not audited
    log = AuditLog.open(tmp_path)
    try:
        with Directory.open(tmp_path) as d:
            log.record("login", actor=d.user_by_name("bob"), address="192.0.2.7",
                       login="abc", client="web page")
    finally:
        log.close()
    capsys.readouterr()

    assert run(tmp_path, "audit") == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines] == [
        "login", "member.add", "channel.create", "user.create"]
    login, member_add = lines[0], lines[1]
    assert login.split()[2:4] == ["bob", "192.0.2.7"]
    assert login.endswith('login=abc client="web page"')
    assert member_add.split()[2:4] == ["-", "-"]
    assert member_add.endswith('via=vpserver channel_id=1 channel="Fire Ops" user_id=1 user=bob')
    assert "secret" not in "\n".join(lines)
    # Aligned: every detail column starts at the same offset; times are local, to the second.
    assert len({line.index(line.split()[4]) for line in lines}) == 1
    assert all(len(line.split()[0]) == len("2025-01-01T12:00:00") for line in lines)

    assert run(tmp_path, "audit", "--kind", "user.*") == 0
    assert [line.split()[1] for line in capsys.readouterr().out.splitlines()] == ["user.create"]
    assert run(tmp_path, "audit", "--limit", "2") == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert run(tmp_path, "audit", "--limit", "0") == 1
    assert capsys.readouterr().err == "vpserver: --limit must be at least 1, not 0\n"


def test_tls_and_turn_options_reach_run_node(tmp_path, monkeypatch, capsys):
    seen: list[ServerConfig] = []
    stub = types.ModuleType("server.node")
    stub.run_node = seen.append
    monkeypatch.setitem(sys.modules, "server.node", stub)
    secret = tmp_path / "turn.secret"
    secret.write_text("  s3cret\n", encoding="utf-8")

    assert main([
        "--data", str(tmp_path), "--tls-cert", "cert.pem", "--tls-key", "key.pem",
        "--plain-http", "--stun", "stun:127.0.0.1:3478", "--stun", "stun:192.0.2.1:3478",
        "--turn", "turn:127.0.0.1:3478?transport=udp", "--turn-secret-file", str(secret),
    ]) == 0
    assert main(["--data", str(tmp_path), "--self-signed"]) == 0
    configured, self_signed = seen
    assert (configured.tls_cert, configured.tls_key) == (Path("cert.pem"), Path("key.pem"))
    assert configured.plain_http is True and configured.tls_self_signed is False
    assert configured.stun_urls == ["stun:127.0.0.1:3478", "stun:192.0.2.1:3478"]
    assert configured.turn_urls == ["turn:127.0.0.1:3478?transport=udp"]
    assert configured.turn_secret == "s3cret"
    assert self_signed.tls_self_signed is True and self_signed.plain_http is False
    assert (self_signed.tls_cert, self_signed.turn_secret, self_signed.stun_urls) == (
        None, None, [])

    empty = tmp_path / "empty.secret"
    empty.write_text(" \n", encoding="utf-8")
    capsys.readouterr()
    assert main(["--data", str(tmp_path), "--turn-secret-file", str(empty)]) == 2
    assert capsys.readouterr().err == f"vpserver: the TURN secret file {empty} is empty\n"
    assert main(["--data", str(tmp_path), "--turn-secret-file", str(tmp_path / "no")]) == 2
    assert "cannot read the TURN secret file" in capsys.readouterr().err
    assert len(seen) == 2


def test_vpserver_script_event_add(tmp_path):
    # The console script installed beside the interpreter running the tests.
    script = Path(sys.executable).parent / "vpserver"
    result = subprocess.run(
        [str(script), "event", "add", "County Fair", "--data", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "added event 'County Fair' (id 1)\n"
    result = subprocess.run(
        [str(script), "event", "add", "county fair", "--data", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr == "vpserver: event 'county fair' exists already\n"
    with Directory.open(tmp_path) as d:
        assert [e.name for e in d.list_events()] == ["County Fair"]


def test_media_port_setting(tmp_path, capsys):
    assert media_port_number(0) == media_port_number("auto") == media_port_number(" AUTO ") == 0
    assert media_port_number(40000) == media_port_number("40000") == 40000
    assert media_port_number("off") is None and media_port_number("per-connection") is None
    for bad in (-1, 70000, "x", True, 2.5, "40000x"):
        with pytest.raises(ConfigError, match="media_port"):
            media_port_number(bad)
    config = tmp_path / "server.toml"
    config.write_text('media_port = "sometimes"\n', encoding="utf-8")
    assert main(["--config", str(config), "--data", str(tmp_path / "d")]) == 2
    assert "media_port" in capsys.readouterr().err
    assert main(["--media-port", "99999", "--data", str(tmp_path / "d")]) == 2
    assert "media_port" in capsys.readouterr().err
