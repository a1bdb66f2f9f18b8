#!/usr/bin/env bash
# Create .venv (Python 3.11+) and install fleetserve and the sandbox (fleetserve-sandbox, ./sandbox),
# both editable with their test extras. Idempotent: reinstalls when either pyproject.toml changes.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "fleetserve needs Python 3.11 or newer ($python is $("$python" --version 2>&1))" >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=.venv/.fleetserve-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ sandbox/pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test]' -e './sandbox[test]'
  touch "$stamp"
fi
# The cache modes' tests run a real rsync daemon and client on loopback (tests/test_cache_shell.py).
if ! command -v rsync >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rsync >/dev/null
fi
