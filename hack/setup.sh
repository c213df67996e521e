#!/usr/bin/env bash
# Creates .venv with every Python dependency (pinned in the pyproject.toml files) from PyPI: the four
# component distributions (core/, operator/, trainer/, cli/) editable, plus the test and lint groups.
# Idempotent: a second run only checks. torch is the PyPI (CUDA) build: a few GB, about a minute.
#
# Bytecode is compiled at install (--compile-bytecode): these machines set PYTHONDONTWRITEBYTECODE=1,
# so without it every process of a local run compiles torch's sources at import, several at once.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=.venv/.torchjob-setup
fresh() {
  [ -f "$stamp" ] || return 1
  for p in pyproject.toml core/pyproject.toml operator/pyproject.toml trainer/pyproject.toml cli/pyproject.toml; do
    [ "$stamp" -nt "$p" ] || return 1
  done
}
if fresh; then
  exit 0
fi
if ! command -v uv >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check "uv==0.9.30"
fi
[ -x .venv/bin/python ] || uv venv --quiet --python 3.11 .venv
echo "[setup] installing torchjob and its pinned dependencies into .venv" >&2
# The root distribution depends on the four components; tool.uv.sources makes them editable installs.
uv pip install --quiet --compile-bytecode --python .venv/bin/python -e . --group test --group lint
touch "$stamp"
