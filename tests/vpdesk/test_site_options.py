"""A site of several nodes in the console's settings, options and credentials: the list
is saved and read back, a version 2 file keeps its server, `--server` and the login
dialog take a comma list, and Credentials name the node in use. The dialog runs under
pytest-qt on the offscreen platform."""

from __future__ import annotations

import json
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402

from vpdesk.app import Options, parse_args  # noqa: E402
from vpdesk.core.settings import SETTINGS_VERSION, Settings, SettingsStore, server_key  # noqa: E402
from vpdesk.session.console import Credentials  # noqa: E402
from vpdesk.ui.dialogs import LoginDialog  # noqa: E402

A, B = "https://a.site:8443", "https://b.site:8443"


# --- settings ------------------------------------------------------------------------


def test_the_node_list_round_trips_through_the_store(tmp_path):
    store = SettingsStore(tmp_path / "settings.json")
    settings = Settings()
    settings.set_servers([A, B])
    store.save(settings)
    on_disk = json.loads((tmp_path / "settings.json").read_text())
    assert on_disk["version"] == SETTINGS_VERSION == 3
    # last_server stays the first node: older consoles and per-server prefs use it.
    assert on_disk["last_server"] == A and on_disk["last_servers"] == [A, B]
    loaded = store.load()
    assert loaded.last_servers == [A, B] and loaded.last_server == A
    assert loaded == settings


def test_a_version_2_file_keeps_its_server_and_everything_filed_under_it(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({
        "version": 2,
        "last_server": "http://radio.example:8080",
        "last_username": "dispatch-1",
        "channels": {"http://radio.example:8080": {"12": {"muted": True, "volume": 0.3}}},
        "targets": {"http://radio.example:8080": 12},
    }))
    store = SettingsStore(path)
    old = store.load()
    assert old.last_server == "http://radio.example:8080"
    assert old.last_servers == ["http://radio.example:8080"]
    key = server_key(old.last_server)
    assert old.channel_prefs(key, 12).muted and old.targets[key] == 12
    store.save(old)
    again = SettingsStore(path).load()
    assert again == old
    assert json.loads(path.read_text())["version"] == 3


def test_an_older_console_rewriting_the_file_keeps_its_choice_as_the_anchor():
    # A version 2 console changed last_server and dropped last_servers (unknown to it).
    s = Settings.from_dict({"version": 2, "last_server": "http://other:8080"})
    assert s.last_servers == ["http://other:8080"]
    # A list that does not contain last_server belongs to an earlier choice.
    s = Settings.from_dict({"version": 3, "last_server": "http://other:8080", "last_servers": [A, B]})
    assert s.last_servers == ["http://other:8080"]
    # One that does keeps every node, last_server first.
    s = Settings.from_dict({"version": 3, "last_server": B, "last_servers": [A, B]})
    assert s.last_servers == [B, A]


def test_a_list_without_last_server_names_it_and_an_explicit_none_is_embedded():
    assert Settings.from_dict({"version": 3, "last_servers": [A, B]}).last_server == A
    embedded = Settings.from_dict({"version": 3, "last_server": None, "last_servers": [A, B]})
    assert embedded.last_server is None and embedded.last_servers == []


@pytest.mark.parametrize("value", [None, 3, "https://a", {"a": 1}, [1, None, ""], [[A]]])
def test_a_bad_node_list_keeps_the_default(value):
    s = Settings.from_dict({"version": 3, "last_servers": value})
    assert s.last_servers == [] and s.last_server is None


def test_set_servers_empty_means_the_embedded_server():
    s = Settings()
    s.set_servers([A, B, A])
    assert s.last_servers == [A, B] and s.last_server == A
    s.set_servers([])
    assert s.last_server is None and s.last_servers == []
    assert s.to_dict()["last_servers"] == []


# --- options ---------------------------------------------------------------------------


def test_server_option_takes_a_comma_separated_list():
    options = parse_args(["--server", "https://A.site:8443/, https://b.site:8443", "--user", "d1"])
    assert options.servers == (A, B)
    assert options.user == "d1"


def test_one_server_and_none():
    assert parse_args(["--server", "http://127.0.0.1:8080"]).servers == ("http://127.0.0.1:8080",)
    assert parse_args([]).server is None and parse_args([]).servers == ()
    assert Options(server=None).servers == ()


@pytest.mark.parametrize("bad", [",", "https://a.site:8443,b.site:8443", "radio:8080"])
def test_server_option_refuses_a_bad_list(bad, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--server", bad])
    assert exit_info.value.code == 2
    assert "--server" in capsys.readouterr().err


# --- credentials -----------------------------------------------------------------------


def test_credentials_default_to_one_url_and_keep_old_calls_working():
    one = Credentials("http://h:8080", "u", "pw")
    assert one.urls == ("http://h:8080",)
    assert one.server_label == "http://h:8080"
    assert Credentials("http://h:8080", "u", label="this console's server").server_label == "this console's server"


def test_credentials_with_several_nodes_name_the_one_in_use():
    site = Credentials(A, "u", "pw", urls=(A, B))
    assert site.server_label == "site (node 1 of 2: a.site:8443)"
    moved = Credentials(B, "u", "pw", label="North", urls=(A, B))
    assert moved.server_label == "North (node 2 of 2: b.site:8443)"
    # A url missing from the list is put first.
    assert Credentials(B, "u", urls=(A,)).urls == (B, A)


# --- the login dialog's server field ---------------------------------------------------


def test_login_dialog_takes_a_comma_list(qtbot):
    dialog = LoginDialog("https://A.site:8443/, https://b.site:8443", "alice")
    qtbot.addWidget(dialog)
    assert dialog.server_urls() == (A, B)
    assert "commas" in dialog.url_edit.toolTip()
    dialog.url_edit.setText("https://a.site:8443, b.site")
    with pytest.raises(ValueError, match="not a server address"):
        dialog.server_urls()
    # A list given as such is shown comma-separated.
    listed = LoginDialog((A, B), None)
    qtbot.addWidget(listed)
    assert listed.url_edit.text() == f"{A}, {B}"
