#!/usr/bin/env bash
# Prepare this checkout on a fresh Debian/Ubuntu machine: system packages, a venv, the
# project installed into it. `--test` adds what the test suite uses; `--installer` what
# installers/build.py needs to build the desktop app (docs/installing.md). Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

want_tests=0
want_installer=0
for arg in "$@"; do
  case "$arg" in
    --test) want_tests=1 ;;
    --installer) want_installer=1 ;;
    *) echo "usage: $0 [--test] [--installer]" >&2; exit 2 ;;
  esac
done

sudo_cmd=""
if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi

packages=(python3 python3-venv python3-dev gcc)
# The console: PortAudio for sounddevice (ALSA, with the PulseAudio plugin), and the
# libraries Qt's xcb platform plugin loads.
packages+=(libportaudio2 libasound2-plugins libegl1 libgl1 libfontconfig1 libdbus-1-3
  libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-shape0
  libxcb-xinerama0 libxcb-randr0 libxcb-render-util0 libxcb-image0 fonts-dejavu-core)
if [ "$want_tests" = 1 ]; then
  # espeak-ng and sox make and measure speech; iproute2 and util-linux give the
  # loopback-only network namespace the media tests run in; pulseaudio (null sinks)
  # and pulseaudio-utils are the real audio stack of the console tests; xvfb shows the
  # real window for screenshots; chromium is the browser the web page is tested in;
  # coturn is the TURN server the relay-only tests talk through; redis-server is the real
  # Redis the live-state tests start on a free loopback port (the system service is not
  # used).
  packages+=(espeak-ng sox iproute2 util-linux pulseaudio pulseaudio-utils xvfb xauth chromium
    coturn redis-server)
fi
if [ "$want_installer" = 1 ]; then
  # PyInstaller reads shared libraries' dependencies with objdump (binutils) and ldd;
  # desktop-file-validate checks the bundle's .desktop entry in the installer test.
  packages+=(binutils desktop-file-utils)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
extras=()
[ "$want_tests" = 1 ] && extras+=(test)
[ "$want_installer" = 1 ] && extras+=(installer)
if [ "${#extras[@]}" -gt 0 ]; then
  .venv/bin/python -m pip install -q -e ".[$(IFS=,; echo "${extras[*]}")]"
else
  .venv/bin/python -m pip install -q -e .
fi
echo "setup done: $(.venv/bin/python --version), $(.venv/bin/python -c 'import aiortc; print("aiortc", aiortc.__version__)')"
