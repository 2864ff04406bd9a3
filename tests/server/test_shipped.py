"""server.shipped: where the web page and the tones are, in a checkout and in a bundle."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from server import shipped
from server.web_routes import default_tones_dir, default_web_dir
from vpdesk import paths
from vpdesk.core.tones import SHIPPED_TONES_DIR, TONE_NAMES

ROOT = Path(__file__).resolve().parents[2]


def test_a_checkout_serves_its_own_files():
    assert shipped.frozen() is False
    assert shipped.web_dir() == ROOT / "server" / "web"
    assert shipped.tones_dir() == ROOT / "server" / "tones"
    assert (shipped.web_dir() / "index.html").is_file()
    for name in TONE_NAMES:
        assert (shipped.tones_dir() / f"{name}.wav").is_file(), name


def test_server_and_console_ask_the_same_helper(monkeypatch, tmp_path):
    (tmp_path / "server" / "web").mkdir(parents=True)
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    assert default_web_dir() == paths.web_dir() == tmp_path / "server" / "web"
    assert default_tones_dir() == paths.shipped_tones_dir() == tmp_path / "server" / "tones"


def test_a_freezer_without_meipass_keeps_files_beside_the_executable(monkeypatch, tmp_path):
    executable = tmp_path / "app" / "vpdesk"
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.delattr(sys, "_MEIPASS", raising=False)
    monkeypatch.setattr(sys, "executable", str(executable))
    assert shipped.package_dir() == tmp_path / "app" / "server"
    assert shipped.tones_dir() == tmp_path / "app" / "server" / "tones"


def test_the_console_s_default_tone_folder_is_the_shipped_one():
    assert SHIPPED_TONES_DIR == shipped.tones_dir()


def test_the_helper_loads_no_third_party_module():
    """The standalone server and the console's core import it: no Qt, no aiohttp."""
    code = (
        "import sys, server.shipped\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in ('PySide6', 'aiohttp', 'aiortc', 'platformdirs')]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)
