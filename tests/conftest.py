import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "0-1")

from tiny import build_tiny_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """Path of a tiny random Llama with a trained tokenizer (built once per session)."""
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-llama")))


@pytest.fixture
def problems(tmp_path) -> Path:
    """A jsonl source of 6 GSM8K-style problems."""
    path = tmp_path / "problems.jsonl"
    rows = [{"id": f"p{i}", "question": f"Tom has {i} apples and buys {i + 2} more. How many?",
             "answer": str(2 * i + 2)} for i in range(6)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
