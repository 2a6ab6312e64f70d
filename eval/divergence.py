"""Logit-level teacher-student divergence on held-out texts: per-token KL(teacher || student),
Jensen-Shannon divergence, top-1 agreement and top-10 overlap, and each model's forward
speed on the same texts (tokens/s, same backend: transformers on this machine)."""

from __future__ import annotations

import time

from distill.errors import DistillError

TEXT_FIELDS = ("text", "completion", "question", "prompt", "content")


def load_texts(path, max_texts: int = 64) -> list[str]:
    """Texts from a .txt (one per line), .jsonl/.json/.csv/.parquet (field ``text``,
    ``completion``, ``question``, ``prompt`` or ``content``) or a dataset folder."""
    from distill.data import load_source

    texts = []
    for row in load_source(str(path), limit=max_texts):
        field = next((f for f in TEXT_FIELDS if isinstance(row.fields.get(f), str)), None)
        if field is None:
            raise DistillError(f"{row.where}: no text field (one of {', '.join(TEXT_FIELDS)})")
        texts.append(row.fields[field])
    return texts


def divergence(teacher: str | None, student: str | None, texts, *, max_texts: int = 64,
               max_length: int = 256, top_k: int = 10) -> dict:
    """Mean per-token divergences of ``student`` from ``teacher`` (model folders or hub ids)
    over ``texts`` (a list, or a path for ``load_texts``), each truncated to ``max_length``
    tokens of the teacher's tokenizer. Models with different vocabularies get a note and no
    numbers."""
    import torch

    from distill.models import load_model_and_tokenizer

    if not teacher or not student:
        return {"note": "a run without a local model path (e.g. an openai backend run)"}
    if not isinstance(texts, list):
        texts = load_texts(texts, max_texts)
    t_lm, t_tok = load_model_and_tokenizer(teacher, device="cpu")
    s_lm, s_tok = load_model_and_tokenizer(student, device="cpu")
    if t_tok.get_vocab() != s_tok.get_vocab():
        return {"note": "different tokenizers: logit divergence needs a shared vocabulary"}
    sums = {"kl": 0.0, "js": 0.0, "top1_agreement": 0.0, "top10_overlap": 0.0}
    tokens, seconds = 0, {"teacher": 0.0, "student": 0.0}
    with torch.inference_mode():
        for text in texts[:max_texts]:
            ids = t_tok(text, return_tensors="pt", truncation=True, max_length=max_length,
                        add_special_tokens=False)["input_ids"]
            if ids.shape[1] == 0:
                continue
            logits = {}
            for name, lm in (("teacher", t_lm), ("student", s_lm)):
                start = time.perf_counter()
                logits[name] = lm(input_ids=ids).logits[0].float()
                seconds[name] += time.perf_counter() - start
            vocab = min(logits["teacher"].shape[-1], logits["student"].shape[-1], len(t_tok))
            for key, value in token_divergence(logits["teacher"][:, :vocab],
                                               logits["student"][:, :vocab], top_k).items():
                sums[key] += value * ids.shape[1]
            tokens += ids.shape[1]
    if not tokens:
        raise DistillError("divergence: the held-out texts hold no tokens")
    return {"tokens": tokens, **{k: v / tokens for k, v in sums.items()},
            "teacher_tokens_per_second": tokens / seconds["teacher"],
            "student_tokens_per_second": tokens / seconds["student"], "top_k": top_k}


def token_divergence(teacher_logits, student_logits, top_k: int = 10) -> dict:
    """Means over positions of [positions, vocab] logits: KL(T||S), JS(T, S) (natural log),
    top-1 agreement, and top-k overlap |topk(T) & topk(S)| / k."""
    lt, ls = teacher_logits.log_softmax(-1), student_logits.log_softmax(-1)
    pt, ps = lt.exp(), ls.exp()
    kl = (pt * (lt - ls)).sum(-1)
    lm = (0.5 * (pt + ps)).clamp_min(1e-30).log()
    js = 0.5 * (pt * (lt - lm)).sum(-1) + 0.5 * (ps * (ls - lm)).sum(-1)
    k = min(top_k, lt.shape[-1])
    tk, sk = lt.topk(k).indices, ls.topk(k).indices
    overlap = (tk.unsqueeze(-1) == sk.unsqueeze(-2)).any(-1).float().sum(-1) / k
    return {"kl": float(kl.mean()), "js": float(js.clamp_min(0).mean()),
            "top1_agreement": float((tk[:, 0] == sk[:, 0]).float().mean()),
            "top10_overlap": float(overlap.mean())}
