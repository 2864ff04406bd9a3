"""What the installers say about the app: its names, its version, where things are.

Read by the PyInstaller spec (vpdesk.spec) and by build.py, so the bundle, the archives
and the installers agree. The version is pyproject.toml's, the only place it is written.
Stdlib only (the spec runs inside PyInstaller).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

INSTALLERS_DIR = Path(__file__).resolve().parent
ROOT = INSTALLERS_DIR.parent
ICONS_DIR = INSTALLERS_DIR / "icons"

APP_NAME = "vpdesk"  # the executable, the bundle folder, the .desktop file and the icon name
DISPLAY_NAME = "vpdesk"
SUMMARY = "Push-to-talk dispatch console"
BUNDLE_ID = "org.vpdesk.console"  # macOS CFBundleIdentifier
# The console's own files, shipped inside the bundle at the same relative paths that
# server/shipped.py looks for (server/web, server/tones).
WEB_DIR = ROOT / "server" / "web"
TONES_DIR = ROOT / "server" / "tones"


def project_version() -> str:
    """The version in pyproject.toml's [project] table."""
    with open(ROOT / "pyproject.toml", "rb") as file:
        return tomllib.load(file)["project"]["version"]
