"""Span-weighted token losses, as per-token multipliers of the fused LM head's log-probs.

TRL's ``SFTTrainer`` reduces the per-token negative log-likelihood as
``sum(-log_probs) / D``, where ``D`` is the number of counted tokens (of the whole
gradient-accumulation batch, on all ranks, when Trainer passes ``num_items_in_batch``), then
lets Trainer and DDP average. Multiplying ``log_probs`` by ``scale`` keeps that machinery and
gives:

* ``tokens``: ``scale = w[span]``, so loss = ``sum(w_t * nll_t) / D``: weighted, normalized
  per counted token (tokens whose weight is 0 are not counted: their labels are -100).
* ``spans``: ``scale = w[c] * D / (n_c * G)``, so each micro-batch contributes
  ``sum_c w[c] * mean_{t in c} nll_t`` (the seed's ReasoningDistillationLoss; distilling
  step-by-step's ``(1 - alpha) * label + alpha * rationale``), averaged over the
  accumulation steps and ranks (``G`` undoes what TRL and Trainer would otherwise scale).
"""

from __future__ import annotations

import torch

NUM_SPANS = 3  # prompt, reasoning, answer


def weight_table(reasoning: float, answer: float) -> torch.Tensor:
    return torch.tensor([0.0, float(reasoning), float(answer)])


def token_scale(span_ids: torch.Tensor, label_mask: torch.Tensor, weights: torch.Tensor,
                normalization: str, denominator=None, group: int = 1) -> torch.Tensor:
    """Multipliers for ``log_probs`` (same shape as ``span_ids``, already shifted to the
    labels). ``denominator`` is TRL's ``D`` (``num_items_in_batch``, or the batch's counted
    tokens when None); ``group`` the accumulation steps x ranks that ``D`` spans."""
    weights = weights.to(device=span_ids.device, dtype=torch.float32)
    if normalization == "tokens":
        return weights[span_ids]
    if normalization != "spans":
        raise ValueError(f"unknown loss normalization {normalization!r}")
    if denominator is None:
        denominator = label_mask.sum()
    one_hot = torch.nn.functional.one_hot(span_ids, NUM_SPANS) * label_mask.unsqueeze(-1)
    counts = one_hot.flatten(0, -2).sum(0).float()  # tokens per span in this micro-batch
    per_span = torch.where(counts > 0, weights / counts.clamp(min=1), torch.zeros_like(weights))
    d = torch.as_tensor(denominator, device=span_ids.device, dtype=torch.float32)
    return per_span[span_ids] * d / group


def span_sums(log_probs: torch.Tensor, span_ids: torch.Tensor,
              label_mask: torch.Tensor) -> torch.Tensor:
    """[nll sum, tokens] of the reasoning and answer spans: a (2, 2) tensor, no gradient."""
    with torch.no_grad():
        out = []
        for span in (1, 2):
            mask = (span_ids == span) & label_mask
            out.append(torch.stack([-(log_probs.float() * mask).sum(), mask.sum().float()]))
        return torch.stack(out)
