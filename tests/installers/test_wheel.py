"""A plain (not editable) install serves and plays the shipped tones and page, and
forwards with the C fan-out.

Builds the wheel from a copy of what deploy/compose/Dockerfile copies (pyproject.toml,
setup.py, README.md, server/, vpdesk/), installs it without dependencies into a folder, and asks
the installed packages, from outside the checkout, where their files are.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vpdesk.core.tones import TONE_NAMES

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.installer, pytest.mark.timeout(600)]

_PROBE = """
import json, server, vpdesk.paths
from server.media import fast_fanout
from server.web_routes import default_tones_dir, default_web_dir
print(json.dumps({
    "server": server.__file__,
    "c_fanout": fast_fanout._fanout.__file__ if fast_fanout.c_fanout_built() else "",
    "tones": str(default_tones_dir()),
    "console_tones": str(vpdesk.paths.shipped_tones_dir()),
    "web": str(default_web_dir()),
}))
"""


def test_an_installed_wheel_carries_the_tones_and_the_page(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for package in ("server", "vpdesk"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)],
        check=True, timeout=540,
    )
    (wheel,) = wheels.glob("vpdesk-*.whl")
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        check=True, timeout=120,
    )
    env = dict(os.environ, PYTHONPATH=str(target))
    # -P and cwd outside the checkout: the checkout's own packages are not importable.
    probe = subprocess.run(
        [sys.executable, "-P", "-c", _PROBE], cwd=tmp_path, env=env,
        check=True, capture_output=True, text=True, timeout=60,
    )
    where = {key: Path(value) for key, value in json.loads(probe.stdout).items()}
    assert where["server"].is_relative_to(target)
    # setup.py built the C fan-out into the wheel (this machine has gcc: scripts/setup.sh).
    assert where["c_fanout"].is_relative_to(target / "server" / "media"), where["c_fanout"]
    assert where["tones"] == where["console_tones"] == target / "server" / "tones"
    for name in TONE_NAMES:
        shipped = ROOT / "server" / "tones" / f"{name}.wav"
        assert (where["tones"] / f"{name}.wav").read_bytes() == shipped.read_bytes(), name
    assert where["web"] == target / "server" / "web"
    for page_file in (ROOT / "server" / "web").rglob("*"):
        if page_file.is_file():
            relative = page_file.relative_to(ROOT / "server" / "web")
            assert (where["web"] / relative).is_file(), relative
