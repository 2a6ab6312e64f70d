"""The teacher of logit distillation: its tokenizer checked against the student's, its
vocabulary aligned, the model loaded frozen.

Logit distillation compares next-token distributions id by id, so teacher and student must
share one tokenizer (the same token -> id map); only ``--loss uld`` (sorted probabilities, see
``distill.sft.kd.cross``) distills across tokenizers. Checkpoints of one family often pad their
embedding matrices to different sizes (Qwen2.5: 151,936 rows for small models, 152,064 for
large): the distributions are compared on the shared rows, the first ``min(V_s, V_t)``, which
hold every real token."""

from __future__ import annotations

from distill.errors import DistillError
from distill.log import log

TEACHER_DTYPES = ("auto", "float32", "bfloat16", "float16")
SEQUENCE_ROUTE = ("distill at the sequence level instead: generate completions with the "
                  "teacher (distill generate), then train the student on them with "
                  "distill train sft")
# Config fields of architectures whose logits are not plain ``hidden @ head.T``.
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "output_multiplier",
                    "lm_head_multiplier", "logits_scaling")


def load_tokenizer(path: str, who: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise DistillError(f"cannot load the {who}'s tokenizer {path!r}: "
                           f"{str(e).splitlines()[0]}") from None


def check_same_tokenizer(student, teacher, student_name: str, teacher_name: str) -> None:
    """DistillError unless both tokenizers map every token to the same id."""
    vs, vt = student.get_vocab(), teacher.get_vocab()
    if vs == vt:
        return
    differ = sorted(set(vs.items()) ^ set(vt.items()), key=lambda kv: (kv[1], kv[0]))
    seen, examples = set(), []
    for token, _ in differ:
        if token not in seen and len(examples) < 3:
            seen.add(token)
            examples.append(f"{token!r}: student {vs.get(token)}, teacher {vt.get(token)}")
    raise DistillError(
        f"the teacher {teacher_name} and the student {student_name} use different tokenizers "
        f"({len(vt)} vs {len(vs)} tokens; e.g. {'; '.join(examples)}). This loss compares "
        f"next-token distributions id by id, so it needs one tokenizer: train with --loss uld "
        f"(sorted probabilities, no shared ids), or {SEQUENCE_ROUTE}")


def vocab_rows(model_or_config) -> int:
    """Rows of the LM head: the model's (padded) vocabulary size."""
    config = getattr(model_or_config, "config", model_or_config)
    return int(config.get_text_config().vocab_size)


def shared_vocab(student_rows: int, teacher_rows: int, tokenizer, teacher_name: str) -> int:
    """The rows both heads have; every token of the tokenizer must be among them."""
    shared = min(student_rows, teacher_rows)
    if shared < len(tokenizer):
        raise DistillError(f"the student ({student_rows} vocabulary rows) and the teacher "
                           f"{teacher_name} ({teacher_rows}) share {shared} rows, fewer than the "
                           f"tokenizer's {len(tokenizer)} tokens")
    if student_rows != teacher_rows:
        log(f"kd: vocabularies padded to {student_rows} (student) and {teacher_rows} (teacher) "
             f"rows: distributions are compared on the first {shared}")
    return shared


def check_plain_head(model, who: str) -> None:
    """DistillError if the model's logits are not ``hidden @ head.T`` (softcapping, scaling,
    a bias): the chunked online loss builds logits that way."""
    text = model.config.get_text_config()
    odd = [name for name in LOGIT_TRANSFORMS if getattr(text, name, None) not in (None, 1, 1.0)]
    if model.get_output_embeddings().bias is not None:
        odd.append("an LM head bias")
    if odd:
        raise DistillError(f"the {who}'s logits use {', '.join(odd)}, which the online KD loss "
                           "does not reproduce; capture the teacher offline (distill logits "
                           "capture) or pick another model")


def load_teacher(path: str, dtype: str = "auto", device=None):
    """The teacher, frozen in eval mode, in its own dtype on ``device``."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype if dtype == "auto" else getattr(torch, dtype))
    except (OSError, ValueError) as e:
        raise DistillError(f"cannot load the teacher {path!r}: {str(e).splitlines()[0]}") from None
    if device is not None:
        model.to(device)
    model.eval()
    model.requires_grad_(False)
    return model

