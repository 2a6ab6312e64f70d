"""Drop rows that share a word n-gram with an eval set's questions (benchmark contamination).

Texts are normalized first: Unicode NFKC, lowercase, apostrophes removed ("Janet's" ->
"janets"), thousands separators removed ("2,125" -> "2125"), every other punctuation mark a
word break, whitespace collapsed. The eval side is indexed once per stage as a dict from the
hash of each n-gram to the first eval item holding it; a row hits when any n-gram of any of
its ``fields`` is in the index. With several n (``ngram: [8, 13]``) the longest matching n is
reported. Eval items shorter than n words hold no n-gram and cannot be matched at that n
(counted in the report as ``eval_items_shorter_than_n``).
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

from distill.errors import DistillError
from distill.filters.base import RowStage

_APOSTROPHES = re.compile(r"[\u0027\u2018\u2019\u02bc`]")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_WORDS = re.compile(r"\d+(?:\.\d+)*|[^\W_]+")
MAX_LISTED_HITS = 1000


def normalize_words(text: str) -> list[str]:
    """The words of ``text`` after normalization (see the module docstring)."""
    text = unicodedata.normalize("NFKC", str(text or "")).lower()
    text = _THOUSANDS.sub("", _APOSTROPHES.sub("", text))
    return _WORDS.findall(text)


def ngrams(words: list[str], n: int):
    for i in range(len(words) - n + 1):
        yield " ".join(words[i:i + n])


class Decontaminate(RowStage):
    """Options: ``ngram`` (int or list of ints, default 13), ``against`` (task names, loaded
    with split ``split``, or file paths; default ``["gsm8k"]``), ``fields`` (row columns to
    check, default question and completion), ``split`` (default ``"test"``)."""

    name = "decontaminate"

    def __init__(self, ngram: int | list[int] = 13, against: list[str] | str = ("gsm8k",),
                 fields: list[str] | str = ("question", "completion"), split: str = "test"):
        super().__init__()
        ns = [ngram] if isinstance(ngram, int) else list(ngram)
        if not ns or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0
                             for n in ns):
            raise DistillError(f"decontaminate: ngram must be a positive int or a list of "
                               f"them, not {ngram!r}")
        self.ns = sorted(set(ns), reverse=True)
        self.against = [against] if isinstance(against, str) else list(against)
        if not self.against:
            raise DistillError("decontaminate: 'against' names no eval set")
        self.fields = [fields] if isinstance(fields, str) else list(fields)
        self.needs = tuple(self.fields)
        self.split = split
        self.hits: list[dict] = []
        self.hits_total = 0
        self.contaminated_items: set[tuple[str, str]] = set()
        self._index: dict[int, dict[int, int]] | None = None
        self._items: list[tuple[str, str]] = []  # (eval set label, item id)
        self._sizes: dict[str, int] = {}
        self._short: dict[int, int] = {}
        self._build()  # now, so a bad eval set name fails before any row is read

    def _label(self, spec: str) -> str:
        from distill.tasks import TASKS

        return f"{spec} {self.split}" if spec.lower() in TASKS else Path(spec).name

    def _build(self) -> None:
        """Index every n-gram of every eval question, once."""
        from distill.tasks import load_task

        self._index = {n: {} for n in self.ns}
        self._short = {n: 0 for n in self.ns}
        for spec in self.against:
            label = self._label(spec)
            items = load_task(spec, split=self.split)
            self._sizes[label] = len(items)
            for item in items:
                k = len(self._items)
                self._items.append((label, item["id"]))
                words = normalize_words(item["question"])
                for n in self.ns:
                    if len(words) < n:
                        self._short[n] += 1
                    index = self._index[n]
                    for gram in ngrams(words, n):
                        index.setdefault(hash(gram), k)

    def check(self, row: dict) -> str | None:
        for n in self.ns:
            index = self._index[n]
            for column in self.fields:
                words = normalize_words(row.get(column) or "")
                first, count = None, 0
                for gram in ngrams(words, n):
                    k = index.get(hash(gram))
                    if k is not None:
                        count += 1
                        if first is None:
                            first = (k, gram)
                if first is None:
                    continue
                label, item_id = self._items[first[0]]
                self.hits_total += 1
                self.contaminated_items.add((label, item_id))
                if len(self.hits) < MAX_LISTED_HITS:
                    self.hits.append({"row_id": row.get("id"), "field": column, "against": label,
                                      "eval_id": item_id, "n": n, "ngram": first[1],
                                      "count": count})
                return f"{n}-gram overlap with {label}"
        return None

    def report(self) -> dict:
        out = {"eval_sets": self._sizes, "hits_total": self.hits_total,
               "eval_items_hit": len(self.contaminated_items), "hits": self.hits}
        if any(self._short.values()):
            out["eval_items_shorter_than_n"] = {str(n): c for n, c in self._short.items()}
        if self.hits_total > len(self.hits):
            out["hits_listed"] = len(self.hits)
        return out
