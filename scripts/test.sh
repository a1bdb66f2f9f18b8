#!/usr/bin/env bash
# The test suite: unit tests, then end-to-end tests on the sandbox fleet (root + Linux; they are
# skipped with a reason elsewhere). Sets itself up; tears the sandbox down even on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/pytest "$@"
