"""What every use of the offline ``vllm.LLM`` engine shares: reading one position's top-k
log-probs, and stopping the engine. Used by generation (``distill.datagen.backends.vllm``) and
by the vLLM logits capture (``distill.sft.kd.vllm_teacher``)."""

from __future__ import annotations

import gc


def top_k(position: dict, token: int, k: int) -> list[tuple[int, float]]:
    """The k best (id, log-prob) of one position's vLLM logprobs, best first. vLLM adds the
    sampled or scored ``token`` when it is outside the top k: it goes."""
    top = [(t, lp.logprob) for t, lp in position.items() if not (len(position) > k and t == token)]
    return sorted(top, key=lambda x: -x[1])[:k]


def shutdown(llm) -> None:
    """Stop an engine (and its worker processes) and release its memory."""
    if llm is None:
        return
    llm.llm_engine.engine_core.shutdown()
    del llm
    from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

    cleanup_dist_env_and_memory()
    gc.collect()
