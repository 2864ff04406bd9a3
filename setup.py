"""The one thing pyproject.toml cannot say: the optional C fan-out.

server/media/fanout_build.py makes server.media._fanout with cffi. It is an accelerator
(server/media/fast_fanout.py falls back to the Python fan-out without it), so a machine
without a C compiler, or not Linux (sendmmsg), installs without it, with a warning.
"""

import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    def run(self):
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any failure: install without it
            self.warn(f"the C fan-out was not built ({exc}); the server forwards with the Python path")

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            self.warn(f"the C fan-out was not built ({exc}); the server forwards with the Python path")


linux = sys.platform.startswith("linux")
setup(
    cffi_modules=["server/media/fanout_build.py:ffibuilder"] if linux else [],
    cmdclass={"build_ext": OptionalBuildExt},
)
