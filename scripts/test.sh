#!/usr/bin/env bash
# Set up, then run the test suite (the default run: everything but tests marked slow).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m slow` for the slow ones.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1} VLLM_CPU_OMP_THREADS_BIND=${VLLM_CPU_OMP_THREADS_BIND:-0-1}
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
