"""Console settings: every field round-trips, parsing never raises, a damaged file is kept,
and saving is atomic."""

from __future__ import annotations

import json
import math
import os

import pytest

from vpdesk.core.ptt import PttMode
from vpdesk.core.settings import (
    ChannelPrefs,
    Settings,
    SettingsStore,
    server_key,
)
from vpdesk.core.tones import TONE_NAMES, ToneSetting, ToneSettings


def every_field_changed() -> Settings:
    """Settings with every field away from its default."""
    tones = ToneSettings()
    tones.set_volume("busy", 0.25)
    tones.set_enabled("incoming", True)
    tones.set_enabled("talk_permit", False)
    s = Settings(
        ptt_mode=PttMode.TOGGLE,
        ptt_key="F12",
        input_device="USB Headset Mic",
        output_device="Speakers (Realtek)",
        tone_dir="/home/d/tones",
        tones=tones,
        last_server="http://radio.example:8080",
        last_username="dispatch-1",
        embedded_listen="0.0.0.0:9000",
        targets={"embedded": 3, "http://radio.example:8080": 12},
        window_geometry="AdnQywADAAAAAAGQ",
        window_state="AAAA/wAAAAD9AAAA",
    )
    s.set_channel_prefs("embedded", 3, muted=True, volume=0.4)
    s.set_channel_prefs("embedded", 7, volume=0.0)
    s.set_channel_prefs("http://radio.example:8080", 12, muted=True)
    return s


def test_every_field_round_trips_through_json():
    original = every_field_changed()
    text = json.dumps(original.to_dict())
    restored = Settings.from_dict(json.loads(text))
    assert restored == original
    # Every dataclass field really differs from the default, so the test covers each.
    default = Settings()
    for name in Settings.__dataclass_fields__:
        assert getattr(original, name) != getattr(default, name), name


def test_round_trip_through_the_store(tmp_path):
    store = SettingsStore(tmp_path / "deep" / "er" / "settings.json")
    original = every_field_changed()
    store.save(original)  # creates the folders
    fresh = SettingsStore(store.path)
    assert fresh.load() == original
    assert fresh.problem is None


def test_missing_file_gives_defaults_and_no_problem(tmp_path):
    store = SettingsStore(tmp_path / "settings.json")
    assert store.load() == Settings()
    assert store.problem is None
    assert list(tmp_path.iterdir()) == []


def test_channel_prefs_default_and_set():
    s = Settings()
    assert s.channel_prefs("embedded", 5) == ChannelPrefs(muted=False, volume=1.0)
    assert s.channels == {}  # asking does not store
    assert s.set_channel_prefs("embedded", 5, muted=True) == ChannelPrefs(True, 1.0)
    assert s.set_channel_prefs("embedded", 5, volume=3.0) == ChannelPrefs(True, 1.0)
    assert s.set_channel_prefs("embedded", 5, volume=-1) == ChannelPrefs(True, 0.0)
    assert s.set_channel_prefs("embedded", 5, volume=0.3, muted=False) == ChannelPrefs(False, 0.3)
    assert s.channel_prefs("embedded", 5) == ChannelPrefs(False, 0.3)
    assert s.channel_prefs("http://other", 5) == ChannelPrefs()  # per server
    with pytest.raises(ValueError):
        s.set_channel_prefs("embedded", 5, volume=math.nan)
    assert s.channel_prefs("embedded", 5) == ChannelPrefs(False, 0.3)


ODD_VALUES = [
    None, True, 0, -1, 1.5, math.nan, math.inf, "", "x", "0.5", [], [1, 2], {}, {"a": None},
    10**400, -(10**30),
]


@pytest.mark.parametrize("value", ODD_VALUES, ids=repr)
def test_any_top_level_value_gives_defaults(value):
    assert Settings.from_dict(value) == Settings()


@pytest.mark.parametrize("value", ODD_VALUES, ids=repr)
def test_any_value_in_any_field_never_raises(value):
    for name in [*Settings.__dataclass_fields__, "version", "unknown"]:
        s = Settings.from_dict({name: value})
        # Whatever it read, it serialises again and parses to itself.
        text = json.dumps(s.to_dict(), allow_nan=False)
        assert Settings.from_dict(json.loads(text)) == s


@pytest.mark.parametrize("value", ODD_VALUES, ids=repr)
def test_any_value_inside_nested_fields_never_raises(value):
    data = {
        "channels": {"embedded": {"1": value, "2": {"muted": value, "volume": value}}, "s": value},
        "targets": {"embedded": value},
        "tones": {"busy": value, "emergency": {"enabled": value, "volume": value}},
    }
    s = Settings.from_dict(data)
    for by_id in s.channels.values():
        for prefs in by_id.values():
            assert isinstance(prefs.muted, bool)
            assert 0.0 <= prefs.volume <= 1.0
    for name in TONE_NAMES:
        assert 0.0 <= s.tones.get(name).volume <= 1.0
    json.dumps(s.to_dict(), allow_nan=False)


def test_wrong_types_keep_defaults():
    s = Settings.from_dict(
        {
            "ptt_mode": "sideways",
            "ptt_key": 32,
            "input_device": 4,
            "output_device": ["a"],
            "tone_dir": False,
            "last_server": {"url": "x"},
            "last_username": 7,
            "embedded_listen": "no port here",
            "window_geometry": 123,
            "channels": [],
            "targets": "3",
            "tones": "loud",
        }
    )
    assert s == Settings()


def test_values_are_sanitised_field_by_field():
    s = Settings.from_dict(
        {
            "ptt_mode": "TOGGLE",  # the enum's name is accepted as well as its value
            "channels": {
                "embedded": {
                    "1": {"muted": True, "volume": 7.5},  # clamped
                    "2": {"muted": "yes", "volume": "0.5"},  # strings: defaults
                    "3": {"volume": -(10**400)},  # clamped, no OverflowError
                    "4": {"volume": math.nan},  # NaN: default
                    "-5": {"muted": True},  # negative id: dropped
                    "x": {"muted": True},  # not an id: dropped
                    "²": {"muted": True},  # a unicode digit int() refuses: dropped
                    "9" * 5000: {"muted": True},  # beyond any id (and int()'s digit limit)
                    "6": "loud",  # not an object: dropped
                },
                "http://empty": {},
            },
            "targets": {"embedded": "12", "a": -1, "b": True, "c": 4.0, "d": 8},
            "tones": {"busy": {"volume": 10**400}, "talk_permit": {"volume": "x"}, "nope": {}},
        }
    )
    assert s.ptt_mode is PttMode.TOGGLE
    assert s.channels == {
        "embedded": {
            1: ChannelPrefs(True, 1.0),
            2: ChannelPrefs(False, 1.0),
            3: ChannelPrefs(False, 0.0),
            4: ChannelPrefs(False, 1.0),
        }
    }
    assert s.targets == {"embedded": 12, "d": 8}
    defaults = ToneSettings()
    assert s.tones.get("busy") == defaults.get("busy")  # the overflow kept the default
    assert s.tones.get("talk_permit") == defaults.get("talk_permit")


def test_unknown_keys_are_ignored_and_known_ones_still_read():
    s = Settings.from_dict({"version": 99, "future_feature": {"x": 1}, "ptt_key": "F5"})
    assert s.ptt_key == "F5"


def test_damaged_file_is_kept_and_defaults_returned(tmp_path):
    path = tmp_path / "settings.json"
    path.write_bytes(b'{"ptt_key": "F1", oops')
    store = SettingsStore(path)
    assert store.load() == Settings()
    kept = tmp_path / "settings.json.damaged-1"
    assert kept.read_bytes() == b'{"ptt_key": "F1", oops'
    assert "damaged" in store.problem and "settings.json.damaged-1" in store.problem
    assert not path.exists()
    # A later save does not touch the kept copy.
    store.save(Settings(ptt_key="F2"))
    assert kept.read_bytes() == b'{"ptt_key": "F1", oops'
    assert SettingsStore(path).load().ptt_key == "F2"


@pytest.mark.parametrize(
    "content", [b"", b"[1, 2]", b'"text"', b"null", b"\xff\xfe\x00garbage", b"[" * 100_000]
)
def test_non_object_or_undecodable_file_counts_as_damaged(tmp_path, content):
    path = tmp_path / "settings.json"
    path.write_bytes(content)
    store = SettingsStore(path)
    assert store.load() == Settings()
    assert store.problem is not None
    assert (tmp_path / "settings.json.damaged-1").read_bytes() == content


def test_a_second_damaged_file_gets_a_new_name(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text("first damage")
    SettingsStore(path).load()
    path.write_text("second damage")
    store = SettingsStore(path)
    store.load()
    assert (tmp_path / "settings.json.damaged-1").read_text() == "first damage"
    assert (tmp_path / "settings.json.damaged-2").read_text() == "second damage"
    assert "settings.json.damaged-2" in store.problem


def test_a_good_file_with_odd_fields_is_not_damaged(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"ptt_key": 5, "last_username": "amy"}))
    store = SettingsStore(path)
    assert store.load().last_username == "amy"
    assert store.problem is None
    assert [p.name for p in tmp_path.iterdir()] == ["settings.json"]


def test_crash_during_replace_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "settings.json"
    store = SettingsStore(path)
    store.save(Settings(ptt_key="F1"))
    before = path.read_bytes()

    def crash(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        store.save(Settings(ptt_key="F9"))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["settings.json"]
    assert SettingsStore(path).load().ptt_key == "F1"


def test_save_writes_readable_json_object(tmp_path):
    path = tmp_path / "settings.json"
    SettingsStore(path).save(every_field_changed())
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["ptt_mode"] == "toggle"
    assert data["channels"]["embedded"]["3"] == {"muted": True, "volume": 0.4}
    assert data["targets"] == {"embedded": 3, "http://radio.example:8080": 12}


def test_unreadable_path_gives_defaults_with_a_problem(tmp_path):
    path = tmp_path / "settings.json"
    path.mkdir()  # a folder where the file should be: reading fails with OSError
    store = SettingsStore(path)
    assert store.load() == Settings()
    assert store.problem is not None and "could not be read" in store.problem
    assert path.is_dir()  # nothing was moved or deleted


@pytest.mark.parametrize(
    "url, key",
    [
        (None, "embedded"),
        ("", "embedded"),
        ("  ", "embedded"),
        ("http://host:8080", "http://host:8080"),
        ("HTTP://Radio.Example:8080/", "http://radio.example:8080"),
        ("http://radio.example:8080///", "http://radio.example:8080"),
        ("  http://h:8080/  ", "http://h:8080"),
        ("http://h:80/", "http://h"),
        ("https://H:443", "https://h"),
        ("https://h:8443/base/", "https://h:8443/base"),
        ("radio.example:8080", "http://radio.example:8080"),
        ("http://[FE80::1]:8080/", "http://[fe80::1]:8080"),
    ],
)
def test_server_key_normalises(url, key):
    assert server_key(url) == key


def test_server_key_equal_for_spellings_of_one_server():
    assert server_key("http://Host:8080/") == server_key("http://host:8080")
    assert server_key("http://host:8080") != server_key("http://host:8081")


def test_tone_setting_values_survive(tmp_path):
    tones = ToneSettings()
    tones.set_volume("emergency", 0.1)
    s = Settings(tones=tones)
    store = SettingsStore(tmp_path / "s.json")
    store.save(s)
    assert store.load().tones.get("emergency") == ToneSetting(True, 0.1)


def test_a_version_1_file_moves_from_the_old_loopback_default_to_the_lan_default():
    # Version 1 wrote its default on every save, so it says nothing about the user's wish.
    old = Settings.from_dict({"version": 1, "embedded_listen": "127.0.0.1:8080"})
    assert old.embedded_listen == "0.0.0.0:8443"
    # A listen address the user changed stays, in either version.
    chosen = Settings.from_dict({"version": 1, "embedded_listen": "127.0.0.1:9000"})
    assert chosen.embedded_listen == "127.0.0.1:9000"
    kept = Settings.from_dict({"version": 2, "embedded_listen": "127.0.0.1:8080"})
    assert kept.embedded_listen == "127.0.0.1:8080"
    assert Settings().to_dict()["version"] >= 2  # version 3 added last_servers
