"""The one answer checker: find the final answer in a completion, read it, compare it with the
gold answer. Shared by the filter stages and by evaluation.

It refuses to guess. An answer reads as one of a few forms (the table ``_FORMS``: a number
written as an integer, a decimal with thousands separators, a fraction, a mixed number or in
scientific notation, with a sign, a currency, a percent sign or a unit; a time of day; a
number in words) and is compared exactly, so "0.75" equals "3/4" and "1e3" equals "1000", but
"1/3" does not equal "0.33" and "12:30" equals no number. An answer that states several
values or a qualified one ("12 or 13", "12-13", "about 12", "5 hours 30 minutes", "1,5") is
*ambiguous*: it equals no single answer. Anything else (expressions, intervals, sets) goes
through the ``math-verify`` library.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from dataclasses import dataclass
from fractions import Fraction

SYMBOLIC_TIMEOUT_S = 2
MAX_ANSWER_CHARS = 300  # longer is not an answer; the bound also keeps the scans linear
CORRECT, WRONG, AMBIGUOUS = "correct", "wrong", "ambiguous"  # the verdicts of ``judge``

# --- reading one answer ---------------------------------------------------------------------

_DECIMAL = r"(?:\d{1,3}(?:,\d{3})+|\d{1,3}(?:[ \u00a0\u2009\u202f]\d{3})+|\d+)(?:\.\d*)?|\.\d+"
_TIME = re.compile(r"(?P<h>\d{1,2})(?::(?P<m>[0-5]\d)(?::(?P<s>[0-5]\d))?)?"
                   r"(?:\s*(?P<half>[ap])\.?\s?m\.?)?", re.IGNORECASE)
# The number forms, tried in this order where a number starts (after its sign and currency).
_FORMS = (
    ("scientific", re.compile(rf"(?P<m>{_DECIMAL})(?:[eE](?P<e>[-+]?\d+)|\s*(?:[x×·*]|\\times"
                              r"|\\cdot)\s*10\s*\^\s*(?:\{\s*(?P<b>[-+]?\d+)\s*\}"
                              r"|(?P<c>[-+]?\d+)))")),
    ("mixed number", re.compile(r"(?P<whole>\d+)\s+(?P<num>\d+)\s*/\s*(?P<den>\d+)")),
    ("fraction", re.compile(rf"(?P<num>{_DECIMAL})\s*/\s*(?P<den>{_DECIMAL})")),
    ("decimal", re.compile(_DECIMAL)),
)
_SCALE = re.compile(r"\s*(hundred|thousand|million|billion|dozen)\b", re.IGNORECASE)
_SIGN_CURRENCY = re.compile(r"(?P<sign>[-+]?)\s*(?:[$€£¥₹]|USD|EUR|GBP)?\s*"
                            r"(?P<sign2>[-+]?)\s*")
# What may follow a number: "-13 ..." makes a range, an operator or a lone letter an expression.
_RANGE_REST = re.compile(rf"\s*[-–—]\s*[$€£]?(?:{_DECIMAL})\s*%?(?:\s+[A-Za-z][A-Za-z .]*)?")
_EXPRESSION_REST = re.compile(r"\s*(?:[-\^*/+=<>\\{}\[\]√π∞]|[A-Za-z](?![A-Za-z])"
                              r"|(?:pi|sqrt|sin|cos|tan|log|ln|exp|inf)\b)|\(")
# Forms that state several values or a qualified one.
_AMBIGUOUS_FORMS = (
    r"\b(?:or|and|nor|either|between)\b",  # alternatives and ranges
    r"\b(?:about|approx(?:imately)?|around|roughly|nearly|almost|circa)\b|(?:\b|(?<=\d))ish\b",
    r"\b(?:at (?:least|most)|(?:more|less|fewer|greater) than|up to|over|under|above|below)\b",
    r"\b(?:not|squared|cubed|factorial)\b",  # words that change the number before them
    r"[±∓≈≃≅∼≤≥<>≠…]|\.\.\.|^\s*~|\d\s*\+\s*$",  # "12+": twelve or more
    r"\d\s*!",  # "12!": a factorial or an exclamation
    r"\\(?:pm|mp|approx|simeq|sim|cong|leq?|geq?|lt|gt|neq?|lor|vee|ldots|dots|cdots)(?![A-Za-z])",
    r"=[^=]*[,;]\s[^=]*=",  # a list of assignments: "a = 12, b = 13"
)
_AMBIGUOUS = re.compile("|".join(_AMBIGUOUS_FORMS), re.IGNORECASE)
_NUMBER_LITERAL = re.compile(r"\d+(?:[.,/]\d+)*")
_WORD = re.compile(r"[A-Za-z]{3,}")

_SMALL = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
          "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
          "eighteen", "nineteen")
_TENS = ("twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_NUMBER_WORDS = {**{w: i for i, w in enumerate(_SMALL)},
                 **{t: 20 + 10 * i for i, t in enumerate(_TENS)},
                 **{f"{t} {u}": 20 + 10 * i + j for i, t in enumerate(_TENS)
                    for j, u in enumerate(_SMALL[1:10], 1)}}
_SCALES = {"hundred": 100, "thousand": 10 ** 3, "million": 10 ** 6, "billion": 10 ** 9,
           "dozen": 12}

# "\frac{3}{4}", "\dfrac{-3}{4}", "\frac34"
_LATEX_FRAC = re.compile(r"\\[dt]?frac\s*(?:\{\s*([-+]?[\d.]+)\s*\}|(\d))"
                         r"\s*(?:\{\s*([\d.]+)\s*\}|(\d))")
_LATEX_TEXT = re.compile(r"\\(?:text|textbf|mathrm|mbox)\s*\{([^{}]*)\}")
_LATEX_SPACE = re.compile(r"\\[,!;: ]|\\quad|\\left|\\right")
_SUPERSCRIPT = re.compile("[⁻⁰¹²³⁴⁵⁶⁷⁸⁹]+")
_FROM_SUPERSCRIPT = str.maketrans("⁻⁰¹²³⁴⁵⁶⁷⁸⁹", "-0123456789")
_VULGAR_FRACTION = re.compile("[\u00bc-\u00be\u2150-\u215e]")
_SYMBOLS = str.maketrans({"−": "-", "٫": ".", "٬": ",", "⁄": "/"})


@dataclass(frozen=True)
class ClockTime:
    """A time of day ("12:30", "1:30 pm", "5 pm"), equal only to the same time: ``seconds``
    past midnight on a 24-hour clock, and ``half_known``, whether the half of the day is
    written (am/pm, or an hour of 0 or 13-23). So "13:30" equals "1:30 pm", but "1:30"
    equals neither "1:30 am" nor "1:30 pm"."""

    seconds: int
    half_known: bool


def read_answer(text) -> Fraction | ClockTime | str | None:
    """What an answer states: a number (a Fraction), a time of day (a ClockTime), AMBIGUOUS
    when it states several values or a qualified one, or None when it is something else (an
    expression, words) that only a symbolic comparison can judge."""
    if not isinstance(text, str) or len(text) > MAX_ANSWER_CHARS:
        return None
    text = _plain(text)
    if not text:
        return None
    if _AMBIGUOUS.search(text):
        return AMBIGUOUS
    for read in (_time, _number_words, _number):
        value = read(text)
        if value is not None:
            return value
    words = _WORD.findall(_MATH_WORDS.sub(" ", text))
    return AMBIGUOUS if words and len(_NUMBER_LITERAL.findall(text)) > 1 else None


def normalize_number(s: str) -> str | None:
    """The canonical form of a number written as text ("$1,234.50" -> "1234.5",
    "\\frac{3}{4}" -> "0.75", "1/3" -> "1/3", "1e3" -> "1000", "18 dollars" -> "18"), or None
    when it is not one number."""
    value = read_answer(s)
    return _canonical(value) if isinstance(value, Fraction) else None


def _plain(s: str) -> str:
    """The answer without its decorations: math delimiters, LaTeX text and spacing, escaped
    signs; unicode digits, minus and vulgar fractions as ASCII ("٣" -> "3", "3½" -> "3 1/2")."""
    text = _LATEX_TEXT.sub(r" \1 ", _unwrap(s.strip()))
    text = _LATEX_SPACE.sub("", text)
    text = _LATEX_FRAC.sub(lambda m: f" {m[1] or m[2]}/{m[3] or m[4]} ", text)
    text = text.replace("{,}", ",").replace("\\$", "$").replace("\\%", "%")
    text = re.sub(r"^\s*(?:negative|minus)\s+(?=\S)", "-", text, flags=re.IGNORECASE)
    text = _VULGAR_FRACTION.sub(lambda m: " " + unicodedata.normalize("NFKC", m[0]), text)
    text = _SUPERSCRIPT.sub(lambda m: "^" + m[0].translate(_FROM_SUPERSCRIPT), text)
    text = "".join(str(unicodedata.decimal(c)) if not c.isascii() and c.isdecimal() else c
                   for c in text)
    return text.translate(_SYMBOLS).strip()


def _time(text: str) -> ClockTime | None:
    m = _TIME.fullmatch(text)
    if not m or not (m["m"] or m["half"]):
        return None
    hour, minute, second = int(m["h"]), int(m["m"] or 0), int(m["s"] or 0)
    if m["half"]:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if m["half"].lower() == "p" else 0)
    elif hour > 23:
        return None
    return ClockTime(hour * 3600 + minute * 60 + second,
                     bool(m["half"]) or hour == 0 or hour >= 13)


def _number_words(text: str) -> Fraction | None:
    """"twelve", "twenty-five", "two hundred", "-five" (from "negative five"): a number from 0
    to 99 in words, times a scale."""
    sign = -1 if text.startswith("-") else 1
    words = re.split(r"\s+|(?<=[a-z])-(?=[a-z])", text[sign < 0:].strip().lower())
    scale = _SCALES.get(words[-1], 1) if len(words) > 1 else 1
    value = _NUMBER_WORDS.get(" ".join(words[:-1] if scale > 1 else words))
    return None if value is None else Fraction(sign * value * scale)


def _number(text: str) -> Fraction | str | None:
    """A number in one of ``_FORMS`` with its sign, currency, percent sign and unit; AMBIGUOUS
    when more numbers follow it ("12-13", "5 hours 30 minutes", "1,5", "12:30:45:1")."""
    lead = _SIGN_CURRENCY.match(text)
    if lead["sign"] and lead["sign2"]:
        return None
    for name, form in _FORMS:
        m = form.match(text, lead.end())
        if m:
            break
    else:
        return None
    rest = re.sub(r"^\s*%", "", text[m.end():])
    scale = _SCALE.match(rest)  # "1.5 million", "2 dozen"
    rest = rest[scale.end():] if scale else rest
    if _RANGE_REST.fullmatch(rest):
        return AMBIGUOUS
    if _EXPRESSION_REST.match(rest) or (re.search(r"[-+*^=]", rest) and _looks_like_math(rest)):
        return None  # "2^3", "5x", "3qr + 6q": an expression
    if re.search(r"\d", rest):
        return AMBIGUOUS
    if re.search(r"[\\{}^_|]", rest):
        return None
    try:
        value = _value_of(name, m)
    except (ValueError, ZeroDivisionError):  # a zero denominator, or too many digits
        return None
    if value is None:  # "3 5/2": a mixed number or a product
        return AMBIGUOUS if name == "mixed number" else None
    value *= _SCALES[scale[1].lower()] if scale else 1
    return -value if "-" in (lead["sign"], lead["sign2"]) else value


def _value_of(name: str, m: re.Match) -> Fraction | None:
    if name == "scientific":
        exponent = int(m["e"] or m["b"] or m["c"])
        return None if abs(exponent) > 100 else _decimal(m["m"]) * Fraction(10) ** exponent
    if name == "mixed number":
        num, den = int(m["num"]), int(m["den"])
        return int(m["whole"]) + Fraction(num, den) if 0 < num < den else None
    if name == "fraction":
        return _decimal(m["num"]) / _decimal(m["den"])
    return _decimal(m[0])


def _canonical(value: Fraction) -> str:
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


def _decimal(digits: str) -> Fraction:
    return Fraction(re.sub(r"[,\s]", "", digits).rstrip(".") or "0")


# --- finding the answer in a completion -----------------------------------------------------

# A number as it appears in running text (no plain-space thousands: "5 120-page books").
_TOKEN = re.compile(
    r"\\[dt]?frac\{-?\d+(?:\.\d+)?\}\{\d+(?:\.\d+)?\}"
    r"|(?<![\w.])[-−]?(?:\\?\$|[€£])?-?"
    r"(?:(?:\d{1,3}(?:(?:,|\{,\}|\\,)\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+)"
    r"(?:/\d+(?![\d.]))?(?:\s?\\?%)?")
_STARTS_WITH_NUMBER = re.compile(r"[-−+]?\s*(?:\\?\$|[€£¥₹])?\s*\.?\d")
_GSM8K = re.compile(r"####")
_ANSWER_IS = (r"(?:\b(?:so|thus|therefore|hence)\b,?\s+)?(?:\bthe\s+)?(?:\bfinal\s+)?\banswer\b"
              r"[*\s]*(?:(?:is|was|would be|will be)\b[*\s]*:?|:|=)[*\s]*")
_ANSWER_IS_RE = re.compile(_ANSWER_IS, re.IGNORECASE)
_ANSWER_IS_BEFORE_BOX = re.compile(_ANSWER_IS + r"(?:\$\$?|\\\(|\\\[)?\s*$", re.IGNORECASE)
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
# The end of an answer statement: a sentence's end, a comma or semicolon before words that do
# not hedge or add a number ("12, since ...", "12, and she has 2 left", but not "12, or 13",
# "12, and 13" or "12; 13"), or a reason ("18 because 3 * 6 = 18").
_SENTENCE_END = re.compile(
    r"[.!?]+(?=\s|$)|\s+(?=(?:because|since)\b)|"
    r"[,;](?=\s+(?!(?:or|maybe|perhaps|possibly|probably|about|approximately|roughly)\b)"
    r"(?!(?:and|nor)\s+\W{0,2}\d)[A-Za-z]{2})", re.IGNORECASE)
_LAST_EQUALS = re.compile(r"(?<![<>!=\\])=(?!=)")
_MATH_WORDS = re.compile(r"\\(?:begin|end)\s*\{[^{}]*\}|\\[A-Za-z]+"
                         r"|\b(?:sqrt|sin|cos|tan|log|ln|exp|pi|inf|oo)\b")
_DELIMITERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
_NOT_FACTORIAL = " \t\r\n*.,;:?"  # the trailing punctuation of a boxed or bare answer
_FENCE = re.compile(r"```[ \t]*(?P<lang>[\w+-]*)[^\n]*\n(?P<code>.*?)(?:```|\Z)", re.DOTALL)


@dataclass(frozen=True)
class Extraction:
    """A final answer found in a text. ``format`` is "gsm8k", "boxed", "answer_is" or, only
    when asked for, "fallback" (the last number of a text that states no answer); ``span``
    holds the offsets of ``raw`` in the text; ``start`` is where the answer statement begins
    (the marker; the text's end for a fallback, which has none)."""

    answer: str
    raw: str
    span: tuple[int, int]
    format: str
    start: int


def extract_answer(text: str, fallback: bool = False) -> Extraction | None:
    """The final answer of a completion: "#### N" first, then the last \\boxed{...}, then
    "The answer is N" / "Answer: N"; with ``fallback``, else the last number in the text (a
    guess: it may be a step's number, so it is marked "fallback")."""
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
    tokens = list(_TOKEN.finditer(text)) if fallback else []
    if tokens:
        return _extraction(text, *tokens[-1].span(), "fallback", len(text))
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


# --- comparing ------------------------------------------------------------------------------

def judge(pred, gold) -> str:
    """CORRECT, WRONG or AMBIGUOUS (one side states several values or a qualified one, the
    other does not: "12 or 13" against 12). Numbers and times compare exactly, anything else
    through math-verify. Never raises."""
    pred, gold = ("" if x is None else str(x).strip() for x in (pred, gold))
    if not pred or not gold:
        return WRONG
    p, g = read_answer(pred), read_answer(gold)
    if (p is AMBIGUOUS) != (g is AMBIGUOUS):
        return AMBIGUOUS
    if p is not None and g is not None and p is not AMBIGUOUS:
        return CORRECT if p == g else WRONG
    if isinstance(p, ClockTime) or isinstance(g, ClockTime):
        return WRONG
    pred, gold = (_canonical(v) if isinstance(v, Fraction) else x
                  for v, x in ((p, pred), (g, gold)))
    return CORRECT if _symbolic_equal(pred, gold) else WRONG


def is_correct(pred, gold) -> bool:
    """Whether the predicted answer equals the gold one (``judge`` says CORRECT)."""
    return judge(pred, gold) == CORRECT


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


def _unwrap(s: str) -> str:
    """``s`` without enclosing math or bold delimiters ("$18$", "\\(x\\)", "**5**") and
    trailing punctuation, but with a "!" (a factorial, in an answer)."""
    start, end = _trim(s, 0, len(s), trailing=_NOT_FACTORIAL)
    return s[start:end]


def _trim(text: str, start: int, end: int, trailing: str = " \t\r\n*.,;:!?") -> tuple[int, int]:
    """Shrink [start, end) past whitespace, ``trailing`` punctuation and enclosing delimiters
    (inside math, a "!" is a factorial: it stays)."""
    while True:
        before = (start, end)
        while start < end and text[start] in " \t\r\n*":
            start += 1
        while start < end and text[end - 1] in trailing:
            end -= 1
        math = _math_span(text, start, end)
        if math and math[1] + len(math[2]) == end:
            start, end, trailing = math[0], math[1], _NOT_FACTORIAL
        if (start, end) == before:
            return start, end


def _statement(text: str, marker: int, start: int, fmt: str) -> Extraction | None:
    """The answer after a marker, up to the end of its line (or of its math, or sentence)."""
    end = text.find("\n", start, start + MAX_ANSWER_CHARS)
    end = min(len(text), start + MAX_ANSWER_CHARS) if end < 0 else end
    start, end = _trim(text, start, end)
    math = _math_span(text, start, end)
    if math:
        start, end = _trim(text, math[0], math[1], trailing=_NOT_FACTORIAL)
    elif any(text.endswith(opener, 0, start) for opener, _ in _DELIMITERS):
        math = (start, end, "")  # the whole statement was math: "Answer: $12!$"
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
    start, end = _trim(text, box.end(), close, trailing=_NOT_FACTORIAL)
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
    """The answer in text[start:end]: all of it when it reads as a value, or as several
    numbers ("12 or 13": kept whole, so that it matches nothing); what follows a last "=" ("3 + 4 =
    7", "x = 5"); else all of it when it starts with a number or is math (``is_math``, or it
    looks like math rather than words)."""
    found = read_answer(text[start:end]) if start < end else None
    if found is not None and (found is not AMBIGUOUS or _names_a_number(text[start:end])):
        return _extraction(text, start, end, fmt, marker)
    equals = [m.end() for m in _LAST_EQUALS.finditer(text, start, end)]
    if equals:
        return _value(text, *_trim(text, equals[-1], end), fmt, marker, is_math)
    if start < end and (is_math or _STARTS_WITH_NUMBER.match(text, start, end)
                        or _looks_like_math(text[start:end])):
        return _extraction(text, start, end, fmt, marker)
    return None


def _names_a_number(s: str) -> bool:
    """True for "12 or 13" and "twelve or thirteen"; False for "I am not sure"."""
    words = re.findall(r"[a-z]+", s.lower())
    return bool(re.search(r"\d", s)) or any(w in _NUMBER_WORDS for w in words)


def _looks_like_math(s: str) -> bool:
    """True for "x^2+1", "(1, 2]", "\\sqrt{2}"; False for words ("I am not sure")."""
    rest = _MATH_WORDS.sub(" ", s)
    return len(s) <= 80 and bool(re.search(r"\w", s)) and not re.search(r"[A-Za-z]{3,}", rest)


def _extraction(text: str, start: int, end: int, fmt: str, marker: int) -> Extraction:
    raw = text[start:end]
    return Extraction(normalize_number(raw) or raw, raw, (start, end), fmt, marker)
