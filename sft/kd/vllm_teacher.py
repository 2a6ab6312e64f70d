"""The teacher of ``distill logits capture --backend vllm``: the offline ``vllm.LLM`` engine
scores given token sequences (``prompt_logprobs=K``, one sampled token that is thrown away), a
whole shard per call, and returns the top-k of each counted token as the HF capture does."""

from __future__ import annotations

import numpy as np

from distill import vllm_engine
from distill.errors import DistillError


class VLLMTeacher:
    """A vLLM engine that returns the top-``top_k`` log-probs of the tokens of sequences."""

    def __init__(self, model: str, top_k: int, *, dtype: str = "auto",
                 max_model_len: int | None = None, gpu_memory_utilization: float | None = None):
        import torch
        from vllm import LLM

        on_gpu = torch.cuda.is_available()
        if dtype == "auto" and not on_gpu:  # as the hf capture: float32 on CPU (vllm: bf16)
            dtype = "float32"
        extra = {k: v for k, v in {"max_model_len": max_model_len,
                                   "gpu_memory_utilization": gpu_memory_utilization}.items()
                 if v is not None}
        self.model = model
        self.llm = LLM(model, dtype=dtype, max_logprobs=max(top_k, 20), enforce_eager=not on_gpu,
                       enable_prefix_caching=False, **extra)

    def topk(self, input_ids: list, labels: list, top_k: int, vocab: int):
        """Per sequence: (ids int32 (n, k), log-probs float16 (n, k)) of its n counted tokens
        (``labels[t] != -100``), at temperature 1 over the teacher's vocabulary."""
        from vllm import SamplingParams, TokensPrompt

        params = SamplingParams(max_tokens=1, prompt_logprobs=top_k, temperature=1.0)
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=[int(t) for t in x])
                                     for x in input_ids], params, use_tqdm=False)
        out = []
        for ids, y, o in zip(input_ids, labels, outputs):
            rows = [vllm_engine.top_k(o.prompt_logprobs[t], int(ids[t]), top_k)
                    for t in np.flatnonzero(np.asarray(y) != -100)]
            top_ids = np.asarray([[i for i, _ in r] for r in rows], dtype=np.int32)
            if top_ids.size and top_ids.max() >= vocab:
                raise DistillError(f"{self.model}: vllm ranks id {int(top_ids.max())}, beyond the "
                                   f"shared vocabulary ({vocab}), in a top-{top_k}: capture with "
                                   "--backend hf (it normalizes over the shared vocabulary)")
            out.append((top_ids.reshape(-1, top_k),
                        np.asarray([[lp for _, lp in r] for r in rows],
                                   dtype=np.float16).reshape(-1, top_k)))
        return out

    def close(self) -> None:
        """Stop the engine (and its worker processes) and release its memory."""
        llm, self.llm = getattr(self, "llm", None), None
        vllm_engine.shutdown(llm)
