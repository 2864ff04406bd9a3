#!/usr/bin/env bash
# Set up (see setup.sh --test) and run the test suite. Media tests must never reach the
# network: the suite runs in a network namespace that has only loopback when the machine
# allows one (root, or unprivileged user namespaces); the tests pin ICE to 127.0.0.1
# either way. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test

run_pytest=(.venv/bin/python -m pytest -p no:cacheprovider "$@")
if unshare -n true 2>/dev/null; then
  ns=(unshare -n)
elif unshare -rn true 2>/dev/null; then
  ns=(unshare -rn)
else
  ns=()
  echo "warning: no network namespace available; running on the host (ICE pinned to 127.0.0.1)" >&2
fi
if [ "${#ns[@]}" -gt 0 ]; then
  exec "${ns[@]}" sh -c 'ip link set lo up && exec "$@"' sh "${run_pytest[@]}"
fi
exec "${run_pytest[@]}"
