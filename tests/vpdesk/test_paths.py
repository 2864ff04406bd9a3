"""Where shipped and user files live: source checkout, frozen bundle, env overrides."""

from __future__ import annotations

import sys
from pathlib import Path

import platformdirs
import pytest

from vpdesk import paths
from vpdesk.core.tones import TONE_NAMES

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_overrides(monkeypatch):
    for name in (paths.CONFIG_DIR_ENV, paths.DATA_DIR_ENV, paths.LOG_DIR_ENV):
        monkeypatch.delenv(name, raising=False)


def test_source_checkout_is_not_frozen():
    assert paths.frozen() is False


def test_shipped_tones_exist_in_the_checkout():
    folder = paths.shipped_tones_dir()
    assert folder == REPO / "server" / "tones"
    for name in TONE_NAMES:
        assert (folder / f"{name}.wav").is_file(), name


def test_web_dir_in_the_checkout():
    folder = REPO / "server" / "web"
    # git keeps no empty folder: the page's folder exists once it has files in it.
    assert paths.web_dir() == (folder if folder.is_dir() else None)


def test_frozen_bundle_uses_meipass(monkeypatch, tmp_path):
    (tmp_path / "server" / "tones").mkdir(parents=True)
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    assert paths.frozen() is True
    assert paths.shipped_tones_dir() == tmp_path / "server" / "tones"
    assert paths.web_dir() is None  # the bundle has no server/web
    (tmp_path / "server" / "web").mkdir(parents=True)
    assert paths.web_dir() == tmp_path / "server" / "web"


def test_env_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv(paths.CONFIG_DIR_ENV, str(tmp_path / "c"))
    monkeypatch.setenv(paths.DATA_DIR_ENV, str(tmp_path / "d"))
    monkeypatch.setenv(paths.LOG_DIR_ENV, str(tmp_path / "l"))
    assert paths.config_dir() == tmp_path / "c"
    assert paths.data_dir() == tmp_path / "d"
    assert paths.log_dir() == tmp_path / "l"
    assert paths.settings_path() == tmp_path / "c" / "settings.json"
    assert paths.embedded_data_dir() == tmp_path / "d" / "server"


def test_blank_override_means_the_platform_default(monkeypatch, no_overrides):
    monkeypatch.setenv(paths.CONFIG_DIR_ENV, "   ")
    assert paths.config_dir() == Path(platformdirs.user_config_dir("vpdesk", appauthor=False))


def test_platform_defaults(no_overrides):
    assert paths.config_dir() == Path(platformdirs.user_config_dir("vpdesk", appauthor=False))
    assert paths.data_dir() == Path(platformdirs.user_data_dir("vpdesk", appauthor=False))
    assert paths.log_dir() == Path(platformdirs.user_log_dir("vpdesk", appauthor=False))
    assert paths.settings_path().name == "settings.json"
    assert "vpdesk" in paths.config_dir().parts


def test_override_expands_home(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv(paths.DATA_DIR_ENV, "~/portable")
    assert paths.data_dir() == tmp_path / "portable"
