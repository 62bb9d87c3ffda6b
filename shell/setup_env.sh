#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install what it needs.
#   shell/setup_env.sh            # the library (requirements.txt)
#   shell/setup_env.sh test       # the library and the test tools (requirements-test.txt)
# Re-installs only when the requirements files change (a stamp file remembers their hash).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
want="${1:-run}"
req=requirements.txt
[ "$want" = test ] && req=requirements-test.txt
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "creating virtual environment in $root/.venv" >&2
  "$python" -m venv .venv
fi
stamp=".venv/.installed-$want"
hash="$(cat requirements.txt requirements-test.txt pyproject.toml | sha256sum | cut -d' ' -f1)"
installed() { [ -f "$1" ] && [ "$(cat "$1")" = "$hash" ]; }
# the test environment contains the run environment
if ! installed "$stamp" && ! { [ "$want" = run ] && installed .venv/.installed-test; }; then
  echo "installing $req into .venv (the first time takes a few minutes: PyTorch is large)" >&2
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r "$req"
  .venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
  echo "$hash" > "$stamp"
fi
