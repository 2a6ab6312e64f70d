"""The tool-integrated reasoning (TIR) trace format, shared by generate, the filters, eval and
training: the model writes a ```python block, the block runs, its output follows as an
```output block, and the model goes on from there::

    Half of 84 is what we need.
    ```python
    print(84 / 2)
    ```
    ```output
    42.0
    ```
    So she keeps 42 apples.
    #### 42

Output blocks are what the tool said, not what the model wrote: the final answer is read from
the text after the last one, and training leaves them out of the loss.
"""

from __future__ import annotations

from dataclasses import replace

from distill.answers import Extraction, extract_answer

CODE_START = "```python\n"
CODE_END = "```\n"  # the stop string: generation pauses where a code block closes
OUTPUT_START = "```output\n"
OUTPUT_END = "\n```\n"


def output_block(output: str) -> str:
    """The block that follows a closed code block: the tool's output, fenced."""
    return f"{OUTPUT_START}{output}{OUTPUT_END}"


def output_spans(text: str) -> list[tuple[int, int]]:
    """[start, end) of each output block in ``text``, fences included."""
    spans, at = [], 0
    while (start := text.find(OUTPUT_START, at)) >= 0:
        end = text.find(OUTPUT_END, start + len(OUTPUT_START) - 1)
        end = len(text) if end < 0 else end + len(OUTPUT_END)
        spans.append((start, end))
        at = end
    return spans


def after_outputs(text: str) -> int:
    """Where the model's own final text starts: after the last output block (0 without one)."""
    spans = output_spans(text)
    return spans[-1][1] if spans else 0


def final_answer(text: str, fallback: bool = False) -> Extraction | None:
    """``extract_answer`` of the model's own final text (after the last output block, so a
    program's output is never taken for the answer), with offsets in the whole ``text``."""
    at = after_outputs(text)
    found = extract_answer(text[at:], fallback=fallback)
    if found is None or not at:
        return found
    return replace(found, span=(found.span[0] + at, found.span[1] + at), start=found.start + at)


def open_code(text: str) -> str | None:
    """The program of the code block ``text`` ends inside (opened, not yet closed), else None."""
    start = text.rfind(CODE_START)
    if start < 0 or "```" in text[start + len(CODE_START):]:
        return None
    return text[start + len(CODE_START):]
