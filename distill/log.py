"""Messages and progress for long work: one line to stderr per event, flushed at once, and
tqdm bars (to stderr) for loops, so stdout stays for a command's result."""

from __future__ import annotations

import sys

from tqdm import tqdm


def log(message: str) -> None:
    """Print one progress or status line to stderr."""
    print(message, file=sys.stderr, flush=True)


def progress(total: int, desc: str, unit: str, enabled: bool = True) -> tqdm:
    """A progress bar on stderr; hidden when ``enabled`` is false or there is nothing to do."""
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled or not total,
                file=sys.stderr, dynamic_ncols=True)


def pct(part: int, whole: int) -> str:
    """``part`` as a percentage of ``whole`` with one decimal ("-" when ``whole`` is 0)."""
    return f"{100 * part / whole:.1f}%" if whole else "-"
