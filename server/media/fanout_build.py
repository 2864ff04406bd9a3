"""Builds server.media._fanout, the C fan-out (fanout.c), with cffi in API mode.

setup.py runs it when the project is installed; a machine without a C compiler installs
without it and the server forwards with the Python path (server/media/fast_fanout.py).
By hand, from anywhere: `python server/media/fanout_build.py` builds it in place.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import cffi

HERE = Path(__file__).resolve().parent


def make_builder(absolute_paths: bool = False) -> cffi.FFI:
    # setuptools wants source paths relative to the project's root, where it runs;
    # cffi's own compile() runs in a build folder and wants them absolute.
    place = (lambda p: str(p)) if absolute_paths else (lambda p: os.path.relpath(p))
    builder = cffi.FFI()
    builder.cdef((HERE / "fanout.h").read_text())
    builder.set_source(
        "server.media._fanout",
        "#include <stdint.h>\n#include \"fanout.h\"\n",
        sources=[place(HERE / "fanout.c")],
        include_dirs=[place(HERE)],
        extra_compile_args=["-O2", "-std=gnu11"],
    )
    return builder


ffibuilder = make_builder()

if __name__ == "__main__":
    import shutil
    import tempfile

    if not sys.platform.startswith("linux"):
        sys.exit("the C fan-out uses sendmmsg: Linux only")
    with tempfile.TemporaryDirectory() as build_dir:
        built = Path(make_builder(absolute_paths=True).compile(tmpdir=build_dir))
        shutil.copy2(built, HERE / built.name)
    print(HERE / built.name)
