"""A tiny Llama that has learned one tool-integrated trace by heart: greedy decoding writes
it, so generate's stop -> run -> continue path is exercised with a real model, deterministically.

The traces it learned show outputs 40, 41 or 43 after ``print(6 * 7)``, never 42: a trace
that says ``42`` there got it from the sandbox, not from the model.
"""

from __future__ import annotations

from pathlib import Path

from tiny import build_tiny_model, learn_by_heart

SYSTEM = "Use Python for arithmetic."
USER = "Problem: {{ question }}"
TRACE = ("I will compute.\n```python\nprint(6 * 7)\n```\n```output\n{first}\n```\n"
         "Check the ratio.\n```python\nprint(1 / 0)\n```\n```output\nZeroDivisionError: "
         "division by zero\n```\nAdd more.\n```python\nprint(2 + 3)\n```\n```output\n5\n```\n"
         "So the answer is 42.\n#### 42")


def prompt_file(folder: Path, name: str = "tir-test", max_tool_calls: int = 4,
                extra: str = "") -> Path:
    """A prompt file (tools: python) whose prompts the teacher was trained on."""
    path = folder / f"{name}.yaml"
    path.write_text(f"name: {name}\nkind: cot\nsystem: {SYSTEM}\nuser: \"{USER}\"\n"
                    f"tools: [python]\nmax_tool_calls: {max_tool_calls}\n"
                    f"sampling: {{temperature: 0, max_tokens: 200}}\n{extra}")
    return path


def build_tir_teacher(folder: Path, questions: list[str], steps: int = 150) -> Path:
    """Write the tiny model trained on ``TRACE`` after each of ``questions`` to ``folder``."""
    traces = [TRACE.format(first=first) for first in (40, 41, 43)]
    chats = [[{"role": "system", "content": SYSTEM},
              {"role": "user", "content": USER.replace("{{ question }}", q)},
              {"role": "assistant", "content": trace}] for q in questions for trace in traces]
    build_tiny_model(folder, corpus=[*traces, SYSTEM, *questions] * 10, vocab_size=300,
                     hidden=64, layers=2, heads=2, split_digits=True)
    return learn_by_heart(folder, chats, steps)
