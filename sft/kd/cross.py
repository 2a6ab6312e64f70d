"""Cross-tokenizer KD (``--loss uld`` with a teacher of another tokenizer): the teacher's own
sequences for the student's, and the pairing of their completion tokens.

The teacher reads each training row as its own tokenizer and chat template render it
(``build_examples`` with the run's data settings), so the prompt/completion boundary and the
counted tokens are known on both sides. ULD (Boizard et al. 2024) pairs the two completions
position by position, truncated to the shorter: the student's i-th counted token is compared
with the teacher's i-th. Student tokens past the teacher's last (and sequences whose row the
teacher's tokenization drops) train on CE only; teacher tokens past the student's last are
not used. No id is mapped: ``uld`` compares sorted probabilities.

Online, each training sequence carries the teacher's ids (cut after the last paired token) and
the positions whose hidden states predict the paired tokens (``TEACHER_COLUMNS``); offline,
the teacher's cached top-k rows of its own tokenization are moved onto the student's counted
tokens (``align_topk``), ids -1 where there is no teacher row.
"""

from __future__ import annotations

import numpy as np
import torch

from distill.errors import DistillError
from distill.log import log

TEACHER_IDS, TEACHER_POSITIONS = "teacher_input_ids", "teacher_positions"
TEACHER_COLUMNS = (TEACHER_IDS, TEACHER_POSITIONS)
TEACHER_INDEX, TEACHER_MASK = "teacher_index", "teacher_attention_mask"


def check_cross_options(config) -> None:
    """DistillError for settings an online teacher of another tokenizer cannot serve."""
    if config.feature_weight > 0 or config.attention_weight > 0:
        raise DistillError("feature and attention transfer pair hidden states token by token, "
                           "which needs one tokenizer: drop --feature-weight/--attention-weight "
                           "for a teacher with another tokenizer")
    if config.packing:
        raise DistillError("a teacher with another tokenizer runs on its own sequences, which "
                           "do not pack with the student's: drop --packing (or capture the "
                           "teacher with distill logits capture and train from --offline-logits)")


def with_teacher_sequences(examples, tokenizer, config, name: str):
    """``examples``' training sequences (a Dataset) with the ``TEACHER_COLUMNS``."""
    import pyarrow as pa
    from datasets import Dataset
    from datasets.table import InMemoryTable

    from distill.sft.kd.train import pa_table

    ids, positions = teacher_columns(examples.columns["labels"], examples.report.example_rows,
                                     examples.rows, tokenizer, config, name)
    ints = pa.list_(pa.int64())
    table = pa_table(examples.columns).append_column(TEACHER_IDS, pa.array(ids, ints)) \
        .append_column(TEACHER_POSITIONS, pa.array(positions, ints))
    return Dataset(InMemoryTable(table))


def cross_topk(train, folder, tokenizer, config, capture: dict):
    """Offline: the cached top-k of the teacher's own tokenization of ``train``'s rows
    (checked like any cache against the teacher's sequences), moved onto the student's
    counted tokens (``align_topk``)."""
    from distill.sft.kd.capture import load_topk

    name = capture["teacher"]
    t_columns, t_report = teacher_examples(train.rows, tokenizer, config, name)
    t_ids, t_lp, _ = load_topk(folder, tokenizer, t_columns, train.rows, t_report)
    return align_topk(train.columns["labels"], train.report.example_rows, t_columns["labels"],
                      t_report.example_rows, t_ids, t_lp, capture["top_k"], name)


def teacher_examples(rows, tokenizer, config, name: str):
    """The teacher's ``build_examples`` (columns, report) of ``rows``: same data settings, the
    teacher's tokenizer and chat template; a DistillError says it was the teacher's."""
    from distill.sft.data import build_examples

    try:
        columns, report = build_examples(rows, tokenizer, config, verbose=False)
    except DistillError as e:
        raise DistillError(f"with the teacher's tokenizer ({name}): {e}") from None
    return columns, report


def pair_examples(student_rows: list[int], teacher_rows: list[int]) -> list[int | None]:
    """For each student sequence, the teacher sequence of the same row and part (step_by_step
    makes two per row, in the same order on both sides); None where the teacher has none."""
    where: dict[tuple[int, int], int] = {}
    seen: dict[int, int] = {}
    for j, row in enumerate(teacher_rows):
        where[row, seen.get(row, 0)] = j
        seen[row] = seen.get(row, 0) + 1
    out, seen = [], {}
    for row in student_rows:
        out.append(where.get((row, seen.get(row, 0))))
        seen[row] = seen.get(row, 0) + 1
    return out


def counted(labels) -> np.ndarray:
    """Positions j whose token counts (labels[j] != -100, j >= 1), predicted from j - 1."""
    return np.flatnonzero(np.asarray(labels)[1:] != -100) + 1


def teacher_columns(student_labels, student_rows: list[int], rows, tokenizer, config,
                    name: str) -> tuple[list, list]:
    """Online: per student sequence, the teacher's input ids up to its last paired token and
    the positions of the teacher's hidden states that predict the paired tokens (empty lists
    where the teacher has no sequence)."""
    t_columns, t_report = teacher_examples(rows, tokenizer, config, name)
    t_ids, t_labels = t_columns["input_ids"], t_columns["labels"]  # read each column once
    pairs = pair_examples(student_rows, t_report.example_rows)
    ids, positions = [], []
    paired = student_total = 0
    for labels, j in zip(student_labels, pairs):
        mine = len(counted(labels))
        student_total += mine
        if j is None:
            ids.append([])
            positions.append([])
            continue
        theirs = counted(t_labels[j])[:mine]
        paired += len(theirs)
        end = int(theirs[-1]) if len(theirs) else 0
        ids.append(list(t_ids[j][:end]))
        positions.append((theirs - 1).tolist())
    _log_pairing(name, pairs, paired, student_total)
    return ids, positions


def align_topk(student_labels, student_rows: list[int], teacher_labels, teacher_rows: list[int],
               ids_column, logprobs_column, k: int, name: str):
    """Offline: the teacher's cached top-k (per-token list columns of its own sequences, from
    ``load_topk``) as per-token columns of the student's sequences: the student's i-th counted
    token gets the teacher's i-th row; ids -1 (log-probs 0) where the teacher has none."""
    import pyarrow as pa

    t_counts = [len(counted(y)) for y in teacher_labels]
    t_start = np.concatenate([[0], np.cumsum(t_counts)]) * k
    t_ids = ids_column.flatten().flatten().to_numpy()
    t_lp = logprobs_column.flatten().flatten().to_numpy(zero_copy_only=False)
    pairs = pair_examples(student_rows, teacher_rows)
    ids, lps, flags = [], [], []
    paired = student_total = 0
    for labels, j in zip(student_labels, pairs):
        positions = counted(labels)
        mine = len(positions)
        student_total += mine
        n = 0 if j is None else min(mine, t_counts[j])
        paired += n
        lo = 0 if j is None else t_start[j]
        ids.append(t_ids[lo:lo + n * k])
        ids.append(np.full((mine - n) * k, -1, dtype=t_ids.dtype))
        lps.append(t_lp[lo:lo + n * k])
        lps.append(np.zeros((mine - n) * k, dtype=t_lp.dtype))
        flag = np.zeros(len(labels), dtype=bool)
        flag[positions] = True
        flags.append(flag)
    _log_pairing(name, pairs, paired, student_total)
    flags = np.concatenate(flags)
    inner = pa.array(np.concatenate([[0], np.cumsum(flags * k)]).astype(np.int32))
    outer = pa.array(np.concatenate([[0], np.cumsum([len(y) for y in student_labels])])
                     .astype(np.int32))
    return tuple(pa.ListArray.from_arrays(outer, pa.ListArray.from_arrays(inner, pa.array(
        np.concatenate(parts)))) for parts in (ids, lps))


def _log_pairing(name: str, pairs: list, paired: int, total: int) -> None:
    missing = sum(j is None for j in pairs)
    log(f"kd: teacher {name} has another tokenizer: uld pairs {paired} of the student's {total} "
        f"counted tokens by completion position (truncated to the shorter); the other "
        f"{total - paired} train on CE only"
        + (f" ({missing} sequences have no teacher sequence: the teacher's tokenization drops "
           "their row)" if missing else ""))


class TeacherSequenceCollator:
    """Wraps the collator: pads the teacher's sequences of the batch (right, 0 under an
    attention mask of 0) and gives, for each student counted token in the order the loss
    selects them, the flat index ``b * L_t + position`` of the teacher hidden state paired with
    it, or -1."""

    def __init__(self, base):
        self.base = base

    def __call__(self, examples: list[dict]) -> dict:
        if TEACHER_IDS not in examples[0]:
            return self.base(examples)
        width = max(1, *(len(e[TEACHER_IDS]) for e in examples))
        ids = torch.zeros((len(examples), width), dtype=torch.long)
        mask = torch.zeros_like(ids)
        index = []
        for b, e in enumerate(examples):
            seq, positions = e[TEACHER_IDS], e[TEACHER_POSITIONS]
            ids[b, :len(seq)] = torch.as_tensor(seq, dtype=torch.long)
            mask[b, :len(seq)] = 1
            mine = len(counted(e["labels"]))
            index += [b * width + p for p in positions] + [-1] * (mine - len(positions))
        batch = self.base([{k: v for k, v in e.items() if k not in TEACHER_COLUMNS}
                           for e in examples])
        batch[TEACHER_IDS], batch[TEACHER_MASK] = ids, mask
        batch[TEACHER_INDEX] = torch.tensor(index, dtype=torch.long)
        return batch
