"""PyInstaller runtime hook: sounddevice loads the PortAudio the bundle carries (Linux).

sounddevice asks `ctypes.util.find_library("portaudio")`, which on Linux only looks at the
system's library cache: on a PC without libportaudio2 it finds nothing and the console has
no audio. Runs before the app's code, so sounddevice's import sees the bundled library.
Windows and macOS wheels carry their own PortAudio in _sounddevice_data: nothing to do.
"""

import ctypes.util
import os
import sys


def _prefer_bundled_portaudio() -> None:
    if not sys.platform.startswith("linux"):
        return
    bundled = os.path.join(getattr(sys, "_MEIPASS", ""), "libportaudio.so.2")
    if not os.path.isfile(bundled):
        return
    system_find_library = ctypes.util.find_library

    def find_library(name):
        return bundled if name == "portaudio" else system_find_library(name)

    ctypes.util.find_library = find_library


_prefer_bundled_portaudio()
