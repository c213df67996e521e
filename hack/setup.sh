#!/usr/bin/env bash
# Creates .venv with every Python dependency (pinned in pyproject.toml) from PyPI. Idempotent:
# a second run only checks. torch is the PyPI (CUDA) build: a few GB, about a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=.venv/.torchjob-setup
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ]; then
  exit 0
fi
if ! command -v uv >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check "uv==0.9.30"
fi
[ -x .venv/bin/python ] || uv venv --quiet --python 3.11 .venv
echo "[setup] installing torchjob and its pinned dependencies into .venv" >&2
uv pip install --quiet --python .venv/bin/python -e ".[operator,trainer,cli]" --group test --group lint
touch "$stamp"
