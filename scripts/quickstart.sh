#!/usr/bin/env bash
# Set up, then let the embedded teacher (SmolLM2-135M-Instruct) write step-by-step solutions
# for 4 example problems with the transformers backend. Output: runs/quickstart/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/distill generate --prompt gsm8k-cot --data examples/problems.jsonl \
    --out runs/quickstart --backend hf --limit 4 --n 2 --max-tokens 256 "$@"
.venv/bin/python - <<'PY'
import datasets
ds = datasets.load_dataset("parquet", data_files="runs/quickstart/data/*.parquet", split="train")
print(ds)
row = ds[0]
print(f"\n--- {row['question']}\n{row['completion']}\n--- gold: {row['gold']}")
PY
