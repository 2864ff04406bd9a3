"""The `vpserver` command: provisioning subcommands in-process, and `python -m server`."""

from __future__ import annotations

import io
import subprocess
import sys
import types
from pathlib import Path

import pytest

from server.cli import main
from server.config import ServerConfig
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
])
def test_usage_errors_exit_2(tmp_path, argv, capsys):
    assert usage_error([*argv, "--data", str(tmp_path)]) == 2
    assert "usage:" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    [],
    ["user"], ["user", "add"], ["user", "list"], ["user", "remove"], ["user", "passwd"],
    ["channel"], ["channel", "add"], ["channel", "list"], ["channel", "remove"],
    ["member"], ["member", "add"], ["member", "remove"], ["member", "list"],
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
