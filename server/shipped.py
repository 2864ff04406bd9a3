"""Where the files shipped with vpdesk are: the field users' web page and the tones.

Both live inside the `server` package (`server/web/`, `server/tones/`), so one rule finds
them in every way vpdesk runs:
- a source checkout or an editable install: beside this module, in the checkout;
- an installed wheel: beside this module, in site-packages (they are package data);
- a PyInstaller bundle: under `sys._MEIPASS`, where the spec puts them at the same
  relative paths (`server/web`, `server/tones`).

This is the one module that knows about `sys._MEIPASS`; the server (`web_routes`) and the
console (`vpdesk.paths`) both ask here. No Qt, no third-party imports: the standalone
server uses it too.

Pure functions reading `sys` each time: call from any thread.
"""

from __future__ import annotations

import sys
from pathlib import Path

# server/shipped.py → the `server` package's folder (checkout or site-packages).
_PACKAGE_DIR = Path(__file__).resolve().parent
_PACKAGE_NAME = "server"
WEB_FOLDER = "web"
TONES_FOLDER = "tones"


def frozen() -> bool:
    """True when running from a PyInstaller (or similar) bundle."""
    return bool(getattr(sys, "frozen", False))


def package_dir() -> Path:
    """The folder holding the `server` package's shipped files.

    Frozen, that is `<bundle>/server` (PyInstaller's unpack folder, or beside the
    executable for freezers that set no `_MEIPASS`); else the package's own folder.
    """
    if frozen():
        meipass = getattr(sys, "_MEIPASS", None)
        root = Path(meipass) if meipass else Path(sys.executable).resolve().parent
        return root / _PACKAGE_NAME
    return _PACKAGE_DIR


def web_dir() -> Path:
    """The field users' web page (index.html, js/, ...). May be missing in a build that
    left it out: callers check `is_dir()`."""
    return package_dir() / WEB_FOLDER


def tones_dir() -> Path:
    """The shipped tone WAVs (talk_permit.wav, busy.wav, ...), written by
    server/tones/make_tones.py in the checkout."""
    return package_dir() / TONES_FOLDER
