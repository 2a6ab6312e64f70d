"""The one answer checker: find the final answer in a completion, normalize it, compare it
with the gold answer. Shared by the filter stages and by evaluation.

Numbers are compared exactly (as fractions), so "0.75" equals "3/4" and "1,000" equals
"1000.00" but "1/3" does not equal "0.33". Anything else (expressions, intervals, sets) goes
through the ``math-verify`` library.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from fractions import Fraction

SYMBOLIC_TIMEOUT_S = 2
MAX_ANSWER_CHARS = 300  # longer is not an answer; the bound also keeps the scans linear

_DIGITS = r"(?:\d{1,3}(?:,\d{3})+|\d{1,3}(?:[ \u00a0\u2009\u202f]\d{3})+|\d+)(?:\.\d*)?|\.\d+"
_NUMBER = re.compile(
    rf"(?P<sign>[-+]?)\s*(?:[$€£]|USD|EUR|GBP)?\s*(?P<sign2>[-+]?)\s*(?P<num>{_DIGITS})"
    rf"(?:\s*/\s*(?P<den>{_DIGITS}))?\s*%?(?P<rest>.*)", re.DOTALL)
# Text after a number that makes it part of an expression ("2^3", "5x", "2 pi"), not a unit.
_NOT_A_UNIT = re.compile(r"[\d^*/+=<>\\{}\[\]|√π∞]|^[A-Za-z](?![A-Za-z])|^\s*(?:pi|sqrt|[xyzni])\b")
_LATEX_FRAC = re.compile(r"\\[dt]?frac\s*\{\s*([-+]?[\d.]+)\s*\}\s*\{\s*([\d.]+)\s*\}")
_LATEX_TEXT = re.compile(r"\\(?:text|textbf|mathrm|mbox)\s*\{([^{}]*)\}")
_LATEX_SPACE = re.compile(r"\\[,!;: ]|\\quad|\\left|\\right")

# A number as it appears in running text (no plain-space thousands: "5 120-page books").
_TOKEN = re.compile(
    r"\\[dt]?frac\{-?\d+(?:\.\d+)?\}\{\d+(?:\.\d+)?\}"
    r"|(?<![\w.])[-−]?(?:\\?\$|[€£])?-?"
    r"(?:(?:\d{1,3}(?:(?:,|\{,\}|\\,)\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+)"
    r"(?:/\d+(?![\d.]))?(?:\s?\\?%)?")
_GSM8K = re.compile(r"####")
_ANSWER_IS = (r"(?:\b(?:so|thus|therefore|hence)\b,?\s+)?(?:\bthe\s+)?(?:\bfinal\s+)?\banswer\b"
              r"[*\s]*(?:(?:is|was|would be|will be)\b[*\s]*:?|:|=)[*\s]*")
_ANSWER_IS_RE = re.compile(_ANSWER_IS, re.IGNORECASE)
_ANSWER_IS_BEFORE_BOX = re.compile(_ANSWER_IS + r"(?:\$\$?|\\\(|\\\[)?\s*$", re.IGNORECASE)
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_SENTENCE_END = re.compile(r"[.;!?]+(?=\s|$)|,(?=\s+[A-Za-z]{2})")
_LAST_EQUALS = re.compile(r"(?<![<>!=\\])=(?!=)")
_OPERATOR_NEXT = re.compile(r"\s*(?:[-+*/^=×÷(\\]|[A-Za-z]\b)")
_MATH_WORDS = re.compile(r"\\[A-Za-z]+|\b(?:sqrt|sin|cos|tan|log|ln|exp|pi|inf|oo)\b")
_DELIMITERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
_FENCE = re.compile(r"```[ \t]*(?P<lang>[\w+-]*)[^\n]*\n(?P<code>.*?)(?:```|\Z)", re.DOTALL)


@dataclass(frozen=True)
class Extraction:
    """A final answer found in a text. ``format`` is "gsm8k", "boxed", "answer_is" or
    "last_number"; ``span`` holds the offsets of ``raw`` in the text; ``start`` is where the answer statement begins (the marker; the text's end for a
    last-number fallback, which has none)."""

    answer: str
    raw: str
    span: tuple[int, int]
    format: str
    start: int


def normalize_number(s: str) -> str | None:
    """The canonical form of a number written as text ("$1,234.50" -> "1234.5",
    "\\frac{3}{4}" -> "0.75", "1/3" -> "1/3", "18 dollars" -> "18"), or None."""
    value = to_fraction(s)
    return None if value is None else canonical(value)


def to_fraction(s: str) -> Fraction | None:
    """The exact value of a number written as text, or None when it is not one."""
    if not isinstance(s, str):
        return None
    text = _LATEX_TEXT.sub(r" \1", _unwrap(s.strip()))
    text = _LATEX_FRAC.sub(r"\1/\2", _LATEX_SPACE.sub("", text))
    text = text.replace("{,}", ",").replace("\\$", "$").replace("\\%", "%").replace("−", "-")
    m = _NUMBER.fullmatch(text.strip())
    if not m or (m["sign"] and m["sign2"]) or _NOT_A_UNIT.search(m["rest"]):
        return None
    try:
        value = _decimal(m["num"]) / (_decimal(m["den"]) if m["den"] else 1)
    except (ValueError, ZeroDivisionError):  # a zero denominator, or too many digits
        return None
    return -value if "-" in (m["sign"], m["sign2"]) else value


def canonical(value: Fraction) -> str:
    """"18" for integers, the shortest exact decimal ("0.75") when there is one, else "a/b"."""
    if value.denominator == 1:
        return str(value.numerator)
    rest, powers = value.denominator, {2: 0, 5: 0}
    for p in powers:
        while rest % p == 0:
            rest //= p
            powers[p] += 1
    if rest != 1:
        return f"{value.numerator}/{value.denominator}"
    places = max(powers.values())
    digits = str(abs(value.numerator) * 10 ** places // value.denominator).rjust(places + 1, "0")
    return f"{'-' if value < 0 else ''}{digits[:-places]}.{digits[-places:]}"


def extract_answer(text: str) -> Extraction | None:
    """The final answer of a completion: "#### N" first, then the last \\boxed{...}, then
    "The answer is N" / "Answer: N", then the last number in the text."""
    if not isinstance(text, str):
        return None
    for marker in reversed(list(_GSM8K.finditer(text))):
        if found := _statement(text, marker.start(), marker.end(), "gsm8k"):
            return found
    for box in reversed(list(_BOXED.finditer(text))):
        if found := _boxed(text, box):
            return found
    for marker in reversed(list(_ANSWER_IS_RE.finditer(text))):
        if found := _statement(text, marker.start(), marker.end(), "answer_is"):
            return found
    tokens = list(_TOKEN.finditer(text))
    if tokens:
        return _extraction(text, *tokens[-1].span(), "last_number", len(text))
    return None


def extract_gold(gold) -> str | None:
    """The normalized gold answer: what follows the last "####" of a GSM8K solution, the
    last \\boxed{...} of a MATH solution, or the whole string; None when there is none."""
    if gold is None:
        return None
    text = str(gold)
    if "####" in text:
        text = text.rsplit("####", 1)[1]
    elif boxes := list(_BOXED.finditer(text)):
        end = _closing_brace(text, boxes[-1].end())
        text = text[boxes[-1].end():end] if end is not None else text
    start, end = _trim(text, 0, len(text))
    value = text[start:end]
    if not value or len(value) > MAX_ANSWER_CHARS:
        return None
    return normalize_number(value) or value


def extract_code(text: str) -> tuple[str, tuple[int, int]] | None:
    """The program of a program-of-thought completion and its span: the last ```python (or
    plain ```) block that prints, else the last such block. An unclosed last fence counts."""
    if not isinstance(text, str):
        return None
    blocks = [m for m in _FENCE.finditer(text)
              if m["lang"].lower() in ("", "python", "py", "python3") and m["code"].strip()]
    if not blocks:
        return None
    printing = [m for m in blocks if "print(" in m["code"]]
    block = (printing or blocks)[-1]
    start, end = block.span("code")
    end = start + len(block["code"].rstrip())
    return text[start:end], (start, end)


def is_correct(pred, gold) -> bool:
    """Whether the predicted answer equals the gold one: exactly for numbers, through
    math-verify for anything else. Never raises."""
    pred, gold = ("" if x is None else str(x).strip() for x in (pred, gold))
    if not pred or not gold:
        return False
    p, g = to_fraction(pred), to_fraction(gold)
    if p is not None and g is not None:
        return p == g
    return _symbolic_equal(pred, gold)


def _symbolic_equal(pred: str, gold: str) -> bool:
    """math-verify's verdict (gold first: it is not symmetric). Its timeout uses SIGALRM,
    which only the main thread may set, so other threads run without one."""
    from math_verify import parse, verify

    if max(len(pred), len(gold)) > MAX_ANSWER_CHARS:
        return False
    main_thread = threading.current_thread() is threading.main_thread()
    timeout = SYMBOLIC_TIMEOUT_S if main_thread else None
    try:
        parsed = [parse(f"${_unwrap(x)}$", parsing_timeout=timeout) for x in (gold, pred)]
        return bool(parsed[0] and parsed[1] and verify(*parsed, timeout_seconds=timeout))
    except Exception:  # noqa: BLE001 - sympy raises anything on odd input; timeouts are caught
        return False


def _decimal(digits: str) -> Fraction:
    return Fraction(re.sub(r"[,\s]", "", digits).rstrip(".") or "0")


def _unwrap(s: str) -> str:
    """``s`` without enclosing math or bold delimiters ("$18$", "\\(x\\)", "**5**")."""
    start, end = _trim(s, 0, len(s))
    return s[start:end]


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    """Shrink [start, end) past whitespace, trailing punctuation and enclosing delimiters."""
    while True:
        before = (start, end)
        while start < end and text[start] in " \t\r\n*":
            start += 1
        while start < end and text[end - 1] in " \t\r\n*.,;:!?":
            end -= 1
        math = _math_span(text, start, end)
        if math and math[1] + len(math[2]) == end:
            start, end = math[0], math[1]
        if (start, end) == before:
            return start, end


def _statement(text: str, marker: int, start: int, fmt: str) -> Extraction | None:
    """The answer after a marker, up to the end of its line (or of its math, or sentence)."""
    end = text.find("\n", start, start + MAX_ANSWER_CHARS)
    end = min(len(text), start + MAX_ANSWER_CHARS) if end < 0 else end
    start, end = _trim(text, start, end)
    math = _math_span(text, start, end)
    if math:
        start, end = _trim(text, math[0], math[1])
    else:
        stop = _SENTENCE_END.search(text, start, end)
        start, end = _trim(text, start, stop.start() if stop else end)
    return _value(text, start, end, fmt, marker, is_math=math is not None)


def _math_span(text: str, start: int, end: int) -> tuple[int, int, str] | None:
    """The inside (start, end) and the closer of a $...$, \\(...\\) or \\[...\\] that opens
    at ``start``. A "$" with a space inside it is a currency sign: "$5 - $3"."""
    for opener, closer in _DELIMITERS:
        if text.startswith(opener, start):
            inner = start + len(opener)
            close = text.find(closer, inner, end)
            if close > inner and not (opener[0] == "$" and (text[inner].isspace()
                                                            or text[close - 1].isspace())):
                return inner, close, closer
    return None


def _boxed(text: str, box: re.Match) -> Extraction | None:
    close = _closing_brace(text, box.end())
    if close is None:
        return None
    start, end = _trim(text, box.end(), close)
    lead = _ANSWER_IS_BEFORE_BOX.search(text, 0, box.start())
    return _value(text, start, end, "boxed", lead.start() if lead else box.start(), is_math=True)


def _closing_brace(text: str, start: int) -> int | None:
    """The offset of the brace that closes the one opened just before ``start``."""
    depth = 1
    for i in range(start, min(len(text), start + MAX_ANSWER_CHARS)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return i
    return None


def _value(text: str, start: int, end: int, fmt: str, marker: int,
           is_math: bool) -> Extraction | None:
    """The answer in text[start:end]: the number it is, or starts with ("18 because ..."),
    or that ends it after a last "=" ("3 + 4 = 7", "x = 5"); else the text itself when it
    is math (``is_math``, or it looks like math rather than words)."""
    if normalize_number(text[start:end]) is not None:
        return _extraction(text, start, end, fmt, marker)
    lead = _TOKEN.match(text, start, end)
    if lead and not _OPERATOR_NEXT.match(text, lead.end(), end):
        return _extraction(text, start, lead.end(), fmt, marker)
    equals = [m.end() for m in _LAST_EQUALS.finditer(text, start, end)]
    if equals:
        return _value(text, *_trim(text, equals[-1], end), fmt, marker, is_math)
    if start < end and (is_math or _looks_like_math(text[start:end])):
        return _extraction(text, start, end, fmt, marker)
    return None


def _looks_like_math(s: str) -> bool:
    """True for "x^2+1", "(1, 2]", "\\sqrt{2}"; False for words ("I am not sure")."""
    rest = _MATH_WORDS.sub(" ", s)
    return len(s) <= 80 and bool(re.search(r"\w", s)) and not re.search(r"[A-Za-z]{3,}", rest)


def _extraction(text: str, start: int, end: int, fmt: str, marker: int) -> Extraction:
    raw = text[start:end]
    return Extraction(normalize_number(raw) or raw, raw, (start, end), fmt, marker)
