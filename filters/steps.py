"""Re-compute the arithmetic a reasoning states and drop (or flag) rows with a false step.

A claim is a chain ``a op b = c`` of expressions joined by ``=``: numbers with ``+ - * / x ×
÷ · \\times \\cdot \\div`` (and ``plus``, ``minus``, ``times``, ``divided by``, ``multiplied
by``), parentheses, unary minus, thousands separators (``1,000``), decimals (``.5``), a
currency (``$12``), units after a number (``12 cats``, ``3.5 kg``, ``$12/hour``), percentages
(``20%`` is 0.2: ``20% of 50 = 10``, ``50 * 20% = 10``, and ``40/50 * 100 = 80%``) and
fractions (``3/4 * 12 = 9``; ``60 / 3/4 = 80``). GSM8K calculator annotations (``<<48/2=24>>``)
are claims too. Values are exact (``fractions.Fraction``). A written result may be the value
rounded, cut off or rounded up to its own decimals (``10 / 3 = 3.33``, ``7 / 2 = 3``, ``50 / 12
= 5`` buses), and an operand that is a small fraction rounded may mean the fraction (``0.33 *
300 = 100``), so neither is a false step.

In a chain each ``=`` is checked (``5 * 4 = 20 = 21`` is false), except a running total
(``2 + 3 = 5 + 4 = 9``: the next expression starts from the last value). What is not clearly
arithmetic is no claim: a pair with no operator (``1 dozen = 12``), a label before an
expression (``Week 2 = 35 + 35``), algebra (``2x + 3 = 11``), multiplier words (``3 dozen``,
``4 squared``), times and ratios (``12:30``), ordinals, factorials, LaTeX commands other than
the three operators, code blocks, a number that may continue an expression the scanner could
not read (after ``+``, ``of``, ``twice``), a percentage added to a plain number (``50 + 20% =
60``), sums of different units (``4 pounds - 6 ounces``), chained divisions (``14 / 1 / 4``)
and a false pair whose sides name different units and differ by a conversion factor (``1/2
hour = 30 minutes``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from fractions import Fraction

from distill.errors import DistillError
from distill.filters.base import RowStage

ACTIONS = ("drop", "flag")
REASON_CHARS = 80  # of the false step, in the drop reason

_TOKEN = re.compile(
    r"(?P<space>[ \t\r\f\v\u00a0\u2009\u202f]+)"
    r"|(?P<bad>\d+:\d+|==|<=|>=|!=|=>|->|\^|\\(?!(?:times|cdot|div)(?![A-Za-z]))[A-Za-z]+)"
    r"|(?P<num>(?P<cur>[$€£¥₹][ \t]*)?(?P<digits>[0-9]+(?:(?:[.,]|,\\!)[0-9]+)*|\.[0-9]+)(?:\.\.\.|…)?"
    r"(?P<pct>[ ]?%|[ ]percent\b)?)"
    r"|(?P<wordop>\b(?:plus|minus|times|divided[ ]by|multiplied[ ]by)\b)"
    r"|(?P<op>[-+*/×÷·⋅−–]|\\times|\\cdot|\\div)"
    r"|(?P<eq>=)|(?P<lp>\()|(?P<rp>\))"
    r"|(?P<word>[A-Za-z]+(?:'[A-Za-z]+)?)"
    r"|(?P<punct>\*\*|[\n,.;:!?\"'“”‘’—…$•])"
    r"|(?P<other>.)", re.IGNORECASE)
_PLAIN_NUMBER = re.compile(r"[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?|(?:0|[1-9]\d*)(?:\.\d+)?|\.\d+")
_OPS = {"+": "+", "-": "-", "−": "-", "–": "-", "*": "*", "×": "*", "·": "*", "⋅": "*",
        "\\times": "*", "\\cdot": "*", "/": "/", "÷": "/", "\\div": "/", "plus": "+",
        "minus": "-", "times": "*", "divided by": "/", "multiplied by": "*"}
_ANNOTATION = re.compile(r"<<([^<>\n]{1,300})>>")
_FENCE = re.compile(r"```.*?(?:```|\Z)", re.DOTALL)
# Words that end a unit (they are not one): the number's phrase goes on with a sentence.
_STOP = {"a", "an", "the", "and", "or", "of", "to", "in", "on", "at", "for", "per", "each",
         "is", "are", "was", "were", "be", "so", "then", "which", "that", "this", "it", "he",
         "she", "they", "we", "you", "i", "from", "with", "by", "as", "left", "more", "less",
         "than", "if", "but", "now", "will", "would", "can", "has", "have", "had", "after",
         "before", "all", "altogether", "total", "into", "over", "off", "remaining", "because",
         "since", "when", "while", "where", "not", "only", "also", "just", "about", "there",
         "here", "his", "her", "their", "its", "our", "my", "your", "what", "how", "who"}
# Words after a number that change its value: the claim is not plain arithmetic.
_MULTIPLIERS = {"dozen", "dozens", "hundred", "hundreds", "thousand", "thousands", "million",
                "millions", "billion", "billions", "squared", "cubed", "half", "halves",
                "third", "thirds", "quarter", "quarters", "am", "pm", "percentage"}
# Words before a number that make it an operand of something the scanner does not read.
_NO_START = {"and", "twice", "double", "half", "triple", "thrice", "by", "over", "than", "per",
             "into", "times", "step", "steps", "part", "parts", "day", "days", "week", "weeks",
             "month", "months", "year", "years", "round", "rounds", "level", "levels", "page",
             "pages", "chapter", "chapters", "number", "numbers", "no", "grade", "grades",
             "room", "rooms", "question", "questions", "problem", "problems", "line", "lines",
             "row", "rows", "game", "games", "test", "tests", "version", "floor", "episode"}
_NUMBER_WORDS = {"one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                 "eleven", "twelve", "twenty", "thirty", "forty", "fifty", "hundred", "some",
                 "each", "all", "most", "many", "much", "any", "none", "both", "sum", "product",
                 "difference", "quotient", "square", "root", "cube", "fraction"}
_OF_AFTER = _MULTIPLIERS | _NO_START | _NUMBER_WORDS  # "half of", "the sum of": no start after
_CONVERSIONS = [Fraction(f) for f in (10, 100, 1000, 10 ** 6, 12, 16, 24, 60, 3600, 7, 52, 365)]
_UNIT_LETTERS = set("hsmgld")  # "km/h", "m/s"
_SHORT_UNITS = {"kg", "km", "cm", "mm", "ml", "lb", "lbs", "oz", "ft", "mi", "hr", "hrs", "min",
                "sec", "mph", "kph", "gal", "qt", "pt", "yd", "yds", "in", "m", "g", "l", "h",
                "s", "k"}  # with no space after a number ("5kg"; not "2nd", "4ac")


class _Abort(Exception):
    """Not plain arithmetic (algebra, a multiplier word): no claim here."""


class _NoFactor(Exception):
    """No operand at this token."""


@dataclass
class _Tok:
    kind: str
    text: str
    start: int
    end: int
    spaced: bool  # whitespace right before it
    written: Fraction | None = None  # a number as written (80 for 80%)
    decimals: int = 0
    pct: bool = False
    cur: str | None = None


@dataclass
class _Val:
    """An interval of exact values (a point unless an operand may be rounded), whether it is
    a percentage, and the units of its operands."""

    lo: Fraction
    hi: Fraction
    pct: bool = False
    units: frozenset = frozenset()


@dataclass
class _Seg:
    """One side of an ``=``: an expression from token ``first`` to ``stop`` (exclusive)."""

    first: int
    stop: int = 0
    val: _Val | None = None  # None: unverifiable
    has_op: bool = False
    pct: bool = False  # a percentage among its operands
    units: set = field(default_factory=set)
    lead: _Tok | None = None  # its first number when it begins with one
    of: bool = False  # may "of" multiply ("20% of 50"): on the left of a chain only
    literal: _Tok | None = None  # the number, when the side is just a number


@dataclass(frozen=True)
class Claim:
    """One checked ``=`` of a chain: the text from where its chain (or running total) starts
    to the end of the right side, its offsets in the text, and whether it holds."""

    text: str
    start: int
    end: int
    holds: bool

    @property
    def short(self) -> str:
        """The claim on one line, without calculator annotations."""
        text = " ".join(_ANNOTATION.sub(" ", self.text).split())
        return text if len(text) <= REASON_CHARS else text[:REASON_CHARS - 1] + "…"


def check_claims(text: str, tolerance: float = 0) -> list[Claim]:
    """Every arithmetic claim of ``text`` the scanner reads, in order of position."""
    tolerance = Fraction(tolerance)
    found = []
    for m in _ANNOTATION.finditer(text):
        found += _Scanner(text, m.start(1), m.end(1), tolerance).claims()
    masked = _FENCE.sub(lambda m: " " * len(m.group()), text)
    masked = _ANNOTATION.sub(lambda m: " " * len(m.group()), masked)
    found += _Scanner(masked, 0, len(masked), tolerance, original=text).claims()
    return sorted(found, key=lambda c: (c.start, c.end))


class _Scanner:
    def __init__(self, text: str, start: int, end: int, tolerance: Fraction,
                 original: str | None = None):
        self.original = text if original is None else original
        self.tolerance = tolerance
        self.toks = _tokens(text, start, end)

    # -- the chains ------------------------------------------------------------------------

    def claims(self) -> list[Claim]:
        out, i = [], 0
        while i < len(self.toks):
            chain = self._chain(i) if self._can_start(i) else None
            if chain is None:
                i += 1
                continue
            out += self._checked(chain)
            i = chain[-1].stop
        return out

    def _can_start(self, i: int) -> bool:
        """May a claim start at token ``i``: an operand not inside something unread?"""
        t = self.toks[i]
        if t.kind == "op" and self._op(i) == "-":
            after = self._at(i + 1)
            if after is None or after.spaced or after.kind not in ("num", "lp"):
                return False
        elif t.kind not in ("num", "lp"):
            return False
        before, earlier = self._at(i - 1), self._at(i - 2)
        if before is None or before.kind == "eq":
            return True
        if before.kind == "lp":  # not inside "$100+($100*(10/100) = $110"
            return earlier is None or earlier.kind not in ("op", "wordop", "num", "rp")
        if before.kind == "punct":  # not in "14, 400", ".8 + . 84", "6 \\cdot\n5"
            return earlier is None or not (earlier.kind in ("op", "wordop") or (
                before.text in ".," and earlier.kind == "num"))
        if before.kind != "word" or not t.spaced:
            return False
        word = before.text.lower()
        if word in _NO_START or (len(word) == 1 and word not in ("a", "i")):
            return False
        if word == "of":  # "a total of 5 + 3", not "2 packs of 12 + 3" nor "half of 12 + 3"
            return not ((earlier is not None and earlier.text.lower() in _OF_AFTER)
                        or any(self._is(k, "num") for k in range(i - 4, i - 1)))
        return True

    def _chain(self, i: int) -> list[_Seg] | None:
        first = self._segment(i, first=True)
        if first is None or not self._is(first.stop, "eq"):
            return None
        chain = [first]
        while self._is(chain[-1].stop, "eq"):
            seg = self._segment(chain[-1].stop + 1)
            if seg is None or not (self._is(seg.stop, "eq") or self._ends(seg.stop)
                                   or self._is(seg.stop - 1, "word")):  # "= 12 cats<br>"
                break
            chain.append(seg)
        return chain if len(chain) > 1 else None

    def _ends(self, j: int) -> bool:
        """May an expression end right before token ``j``?"""
        t, after = self._at(j), self._at(j + 1)
        if t is not None and t.kind == "punct" and t.text in ".," and not t.spaced \
                and after is not None and not after.spaced and after.kind in ("num", "bad"):
            return False  # "3,\\,744", "12.5.3"
        if t is None or t.kind in ("punct", "word", "rp"):
            return True
        return (t.kind == "op" and t.text in "-–" and t.spaced and after is not None
                and after.kind == "word")  # a dash between words: "= 8 - so 8 cats"

    def _checked(self, chain: list[_Seg]) -> list[Claim]:
        out, base = [], 0
        for k in range(1, len(chain)):
            left, right = chain[k - 1], chain[k]
            if right.has_op and right.lead is not None and left.val is not None \
                    and self._fits(left, right.lead):
                base = k  # a running total: "2 + 3 = 5 + 4 = 9"
                continue
            if not any(s.has_op for s in chain[base:k + 1]):
                continue  # "1 dozen = 12"
            if k == 1 and left.literal is not None:
                continue  # a label: "8 batches = 5.5 * 8", "Week 2 = 35 + 35"
            holds = self._holds(left, right)
            if holds is None:
                continue
            if not holds and left.units and right.units \
                    and left.units.isdisjoint(right.units) and self._converts(left, right):
                continue  # a conversion: "1/2 hour = 30 minutes", "$1 / 2 = 50 cents"
            start, end = self.toks[chain[base].first].start, self.toks[self._core(right)].end
            out.append(Claim(self.original[start:end], start, end, holds))
        return out

    def _holds(self, left: _Seg, right: _Seg) -> bool | None:
        if left.val is None or right.val is None:
            return None
        if right.literal is not None:
            return self._fits(left, right.literal)
        if left.literal is not None:
            return self._fits(right, left.literal)
        return any(_overlap(a, b.lo, b.hi, self.tolerance)
                   for a in _readings(left) for b in _readings(right))

    def _converts(self, left: _Seg, right: _Seg) -> bool:
        """Is one side a number that the other, times a factor that converts units (60, 100,
        12, ...), rounds to?"""
        if right.literal is None:
            left, right = right, left
        if right.literal is None:
            return False
        c, unit = right.literal.written, Fraction(1, 10 ** right.literal.decimals)
        return any(left.val.hi * k >= c - unit / 2 and left.val.lo * k <= c + unit / 2
                   for f in _CONVERSIONS for k in (f, 1 / f))

    def _fits(self, seg: _Seg, number: _Tok) -> bool:
        """Is ``number`` the value of ``seg``, to its decimals (``_near``)?"""
        written = [(number.written, number.decimals)]
        if number.pct:
            written.append((number.written / 100, number.decimals + 2))
        return any(_near(v, c, decimals, self.tolerance)
                   for v in _readings(seg) for c, decimals in written)

    def _core(self, seg: _Seg) -> int:
        """The last token of ``seg`` before the unit of its last operand."""
        last = seg.stop - 1
        while self._is(last, "word") or (self._op(last) == "/" and self._is(last + 1, "word")):
            last -= 1
        return last

    # -- one side of an "=" ----------------------------------------------------------------

    def _segment(self, i: int, first: bool = False) -> _Seg | None:
        seg = _Seg(i, of=first)
        try:
            seg.val, seg.stop = self._expr(i, seg, 0)
        except (_Abort, _NoFactor):
            return None
        if not seg.has_op and self._is(i, "num"):
            seg.literal = self.toks[i]
        elif not seg.has_op and self._is(i + 1, "num"):  # "-3"
            number = self.toks[i + 1]
            seg.literal = replace(number, written=-number.written)
        return seg

    def _expr(self, i: int, seg: _Seg, depth: int) -> tuple[_Val | None, int]:
        val, i = self._term(i, seg, depth)
        while self._op(i) in ("+", "-"):
            try:
                right, j = self._term(i + 1, seg, depth)
            except _NoFactor:
                break
            val, i = _apply(self._op(i), val, right), j
            seg.has_op = True
        return val, i

    def _term(self, i: int, seg: _Seg, depth: int) -> tuple[_Val | None, int]:
        first = i
        val, i = self._factor(i, seg, depth)
        fraction = i == first + 3 and self._fraction(first)  # "3/4 of 12"
        divisions = 0
        while True:
            op = self._times(i, val, fraction and seg.of, seg.of)
            if op is None:
                return val, i
            try:
                right, j = self._factor(i + 1, seg, depth)
            except _NoFactor:
                return val, i
            divisions += op == "/"
            val = None if divisions > 1 else _apply(op, val, right)  # "14 / 1 / 4": 3.5 or 56?
            i, fraction, seg.has_op = j, False, True

    def _times(self, i: int, val: _Val | None, fraction: bool, of: bool) -> str | None:
        """The multiplicative operator at ``i``: ``* /``, an ``x`` between operands, or
        ``of`` after a percentage or a fraction."""
        t = self._at(i)
        if t is None:
            return None
        if t.kind in ("op", "wordop"):
            op = self._op(i)
            return op if op in ("*", "/") else None
        if t.kind == "word" and self._is_number_or_paren(i + 1):
            word = t.text.lower()
            if word == "x":
                return "*"
            if word == "of" and of and (fraction or (val is not None and val.pct)):
                return "*"
        return None

    def _factor(self, i: int, seg: _Seg, depth: int) -> tuple[_Val | None, int]:
        t = self._at(i)
        if t is None or depth > 20:
            raise _NoFactor
        if t.kind == "op" and self._op(i) == "-" and self._starts_operand(i + 1):
            val, j = self._factor(i + 1, seg, depth + 1)
            return (None if val is None else replace(val, lo=-val.hi, hi=-val.lo)), j
        if t.kind == "num":
            seg.pct |= t.pct
            if self._fraction(i):  # "25 / 1/3" is 75: an unspaced fraction binds first
                if self._op(i + 3) == "/" and self._is(i + 4, "num") and not self._at(i + 3).spaced:
                    raise _Abort  # "12/3/2020"
                seg.has_op = True
                val = _apply("/", _literal(t), _literal(self.toks[i + 2]))
                j = i + 3
            else:
                seg.lead = t if i == seg.first else seg.lead
                val, j = _literal(t), i + 1
            j, units = self._units(j, seg)
            if t.cur:
                units |= {"$"}
                seg.units.add("$")
            return (None if val is None else replace(val, units=frozenset(units))), j
        if t.kind == "lp":
            val, j = self._expr(i + 1, seg, depth + 1)
            if not self._is(j, "rp"):
                raise _NoFactor
            j, units = self._units(j + 1, seg)
            return (None if val is None else replace(val, units=val.units | units)), j
        raise _NoFactor

    def _units(self, j: int, seg: _Seg) -> tuple[int, set]:
        """Skip the unit after an operand ("cats", "siamese cats", "km/h"); stop at a word
        that goes on with the sentence; abort where the word makes it not plain arithmetic."""
        units: set = set()
        while len(units) < 2:
            if self._op(j) == "/" and self._unit_after_slash(j):  # "$12/hour", "km/h"
                j += 2
                continue
            t = self._at(j)
            if t is None or t.kind != "word":
                break
            word = t.text.lower()
            if word == "x" and self._is_number_or_paren(j + 1):
                break
            if not t.spaced and not units and len(word) <= 3 and word not in _SHORT_UNITS:
                raise _Abort  # "2x + 3", "5A", "4ac"
            if word in _STOP:
                break
            if word in _MULTIPLIERS or len(word) == 1:
                raise _Abort
            units.add("$" if word in ("dollar", "dollars") else word.removesuffix("s"))
            j += 1
        seg.units |= units
        return j, units

    # -- tokens ------------------------------------------------------------------------------

    def _at(self, i: int) -> _Tok | None:
        return self.toks[i] if 0 <= i < len(self.toks) else None

    def _is(self, i: int, kind: str) -> bool:
        t = self._at(i)
        return t is not None and t.kind == kind

    def _op(self, i: int) -> str | None:
        t = self._at(i)
        if t is None or t.kind not in ("op", "wordop"):
            return None
        return _OPS[" ".join(t.text.lower().split())]

    def _is_number_or_paren(self, i: int) -> bool:
        return self._is(i, "num") or self._is(i, "lp")

    def _starts_operand(self, i: int) -> bool:
        return self._is_number_or_paren(i) or (self._op(i) == "-" and self._is(i + 1, "num"))

    def _fraction(self, i: int) -> bool:
        """Is token ``i`` the numerator of an unspaced fraction ("3/4")?"""
        slash, below = self._at(i + 1), self._at(i + 2)
        return (self._is(i, "num") and self._op(i + 1) == "/" and not slash.spaced
                and below is not None and below.kind == "num" and not below.spaced
                and not self.toks[i].pct and not below.pct and not below.cur)

    def _unit_after_slash(self, j: int) -> bool:
        slash, word = self._at(j), self._at(j + 1)
        return (not slash.spaced and word is not None and word.kind == "word"
                and not word.spaced and word.text.islower()
                and (len(word.text) > 1 or word.text in _UNIT_LETTERS))


def _tokens(text: str, start: int, end: int) -> list[_Tok]:
    toks, spaced = [], True
    for m in _TOKEN.finditer(text, start, end):
        kind = m.lastgroup
        if kind == "space":
            spaced = True
            continue
        tok = _Tok(kind, m.group(), m.start(), m.end(), spaced)
        if m.group("num"):
            digits = m.group("digits").replace("\\!", "")  # LaTeX: "3,\\!744"
            if not _PLAIN_NUMBER.fullmatch(digits):  # "3,5", "12.5.3": two readings
                tok.kind = "bad"
            else:
                plain = digits.replace(",", "")
                tok.kind, tok.written = "num", Fraction(plain)
                tok.decimals = len(plain.partition(".")[2])
                tok.pct, tok.cur = m.group("pct") is not None, m.group("cur")
        elif kind == "other" or (tok.text == "!" and not spaced and toks
                                 and toks[-1].kind in ("num", "rp")):
            tok.kind = "bad"  # and "5!", a factorial
        elif kind == "op" and (not toks or toks[-1].text == "\n") and m.end() < end \
                and text[m.end()] in " \t":
            tok.kind = "punct"  # a bullet: "- 20 - 12 = 8"
        toks.append(tok)
        spaced = tok.kind == "punct" and tok.text == "\n"
    return toks


def _literal(t: _Tok) -> _Val:
    """A number's value; a decimal that is a fraction rounded (0.33, 1.67) may mean either."""
    value, meant = t.written, _rounded_fraction(t.written, t.decimals)
    lo, hi = min(value, meant), max(value, meant)
    return _Val(lo / 100, hi / 100, True) if t.pct else _Val(lo, hi)


def _rounded_fraction(value: Fraction, decimals: int) -> Fraction:
    """The fraction of the smallest denominator up to 12 that rounds to ``value`` at
    ``decimals`` places (1/3 for 0.33, 5/3 for 1.67), or ``value`` where it is one itself
    (0.25, 8.50) or there is none."""
    half = Fraction(1, 2 * 10 ** decimals)
    if (value * math.lcm(*range(1, 13))).denominator == 1:
        return value
    for below in range(2, 13):
        meant = Fraction(round(value * below), below)
        if abs(meant - value) <= half:
            return meant
    return value


def _apply(op: str, a: _Val | None, b: _Val | None) -> _Val | None:
    """``a op b`` over intervals; None where it is not decided."""
    if a is None or b is None:
        return None
    units = a.units | b.units
    if op in "+-":
        if a.pct != b.pct:
            return None  # "50 + 20%": 50.2 or 60?
        if a.units and b.units and a.units.isdisjoint(b.units):
            return None  # "4 pounds - 6 ounces"
        if op == "+":
            return _Val(a.lo + b.lo, a.hi + b.hi, a.pct, units)
        return _Val(a.lo - b.hi, a.hi - b.lo, a.pct, units)
    if op == "*":
        ends = [x * y for x in (a.lo, a.hi) for y in (b.lo, b.hi)]
        return _Val(min(ends), max(ends), a.pct and b.pct, units)
    if b.lo <= 0 <= b.hi:
        return None
    ends = [x / y for x in (a.lo, a.hi) for y in (b.lo, b.hi)]
    return _Val(min(ends), max(ends), a.pct and not b.pct, units)


def _readings(seg: _Seg) -> list[_Val]:
    """With a percentage among the operands, the value may be meant in percentage points:
    ``3/21 * 100% = 14.28``, ``$7500/75% = $100`` (each 1%), ``100% - 20% = 80``."""
    val = seg.val
    if not seg.pct:
        return [val]
    return [val] + [replace(val, lo=val.lo * k, hi=val.hi * k)
                    for k in (Fraction(100), Fraction(1, 100))]


def _near(val: _Val, c: Fraction, decimals: int, tolerance: Fraction) -> bool:
    """May ``c`` be ``val`` rounded (or, for an exact value, cut off or rounded up) to
    ``decimals`` places? A value that has no more decimals must be ``c`` itself."""
    unit = Fraction(1, 10 ** decimals)
    slack = tolerance * max(abs(c), abs(val.lo), abs(val.hi))
    if val.lo == val.hi:  # rounded, cut off or rounded up: less than one unit away
        return abs(val.lo - c) < unit + slack
    return val.hi >= c - unit / 2 - slack and val.lo <= c + unit / 2 + slack


def _overlap(val: _Val, lo: Fraction, hi: Fraction, tolerance: Fraction) -> bool:
    slack = tolerance * max(abs(lo), abs(hi), abs(val.lo), abs(val.hi))
    return val.lo <= hi + slack and val.hi >= lo - slack


class Steps(RowStage):
    """Re-computes every arithmetic claim of ``field`` (default ``completion``) and adds
    ``false_step``: the text of the first false claim, or None. ``action`` "drop" (default)
    drops a row with a false step ("false step: 20 - 12 = 12"), "flag" keeps it. A claim
    holds within ``tolerance`` (relative, default 0: exact, but for rounding)."""

    name = "steps"
    adds = ("false_step",)

    def __init__(self, action: str = "drop", tolerance: float = 0, field: str = "completion"):
        super().__init__()
        if action not in ACTIONS:
            raise DistillError(f"steps: action is one of {', '.join(ACTIONS)}, not {action!r}")
        if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) \
                or not 0 <= tolerance < 1:
            raise DistillError(f"steps: tolerance is a relative error in [0, 1), "
                               f"not {tolerance!r}")
        self.action, self.tolerance, self.field = action, tolerance, field
        self.needs = (field,)
        self.claims = self.false_claims = self.rows_with_claims = self.rows_false = 0

    def check(self, row: dict) -> str | None:
        text = row[self.field]
        found = check_claims(text if isinstance(text, str) else "", self.tolerance)
        false = [c for c in found if not c.holds]
        self.claims += len(found)
        self.false_claims += len(false)
        self.rows_with_claims += bool(found)
        self.rows_false += bool(false)
        row["false_step"] = false[0].text if false else None
        if not false or self.action == "flag":
            return None
        return f"false step: {false[0].short}"

    def report(self) -> dict:
        return {"action": self.action, "claims_checked": self.claims,
                "false_claims": self.false_claims, "rows_with_claims": self.rows_with_claims,
                "rows_with_a_false_step": self.rows_false}
