#!/usr/bin/env bash
# Every GPU check of the trainer in a few minutes (benchmarks/gpu_check.py says what each one checks), for
# a lent machine with one GPU where only this working tree is copied and nothing can be installed.
#
#   hack/gpu-check.sh                      all checks; results in $OUT/gpu-check.json (else build/)
#   hack/gpu-check.sh --only loader,sharing
#   hack/gpu-check.sh --dry-run            imports and arguments only: safe on a CPU machine
#
# Python: the repo's .venv when it exists and imports torch; else the machine's python3 with the working
# tree's packages on PYTHONPATH. The lent H200 machine is the second case: its python3 holds torch,
# torchvision, prometheus-client, pillow and nvidia-ml-py, and the 5.8 GB .venv is far over the 64 MiB a
# device call may carry.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv/bin/python ] && .venv/bin/python -c "import torch" 2>/dev/null; then
  py=.venv/bin/python
else
  py=$(command -v python3)
  export PYTHONPATH="$PWD/core:$PWD/trainer${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
exec "$py" benchmarks/gpu_check.py "$@"
