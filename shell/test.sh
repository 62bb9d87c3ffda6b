#!/usr/bin/env bash
# Run the test suite in the project's virtual environment (created and filled on first use).
# Extra arguments go to pytest, e.g.  shell/test.sh -k attacks
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/shell/setup_env.sh" test
cd "$root"
exec .venv/bin/python -m pytest -q "$@" tests
