"""Generation backends behind one interface: a batch of chat prompts + sampling in,
n completions per prompt out, each with its finish reason and token counts.

- ``vllm``: the offline ``vllm.LLM`` engine, one call per batch.
- ``openai``: any OpenAI-compatible server (``vllm serve`` and others).
- ``hf``: transformers ``generate``, batched with left padding.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from distill.errors import DistillError


def check_number(name: str, value, minimum: float | None, *, integer: bool = True,
                 above: bool = False, flag: bool = True) -> None:
    """Stop with one line naming option ``name`` (and its ``--flag`` where ``flag``) unless
    ``value`` is a number (an integer where ``integer``) >= ``minimum`` (> where ``above``;
    None: any); None passes: the option was not given."""
    if value is None:
        return
    what = f"{name} (--{name.replace('_', '-')})" if flag else name
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise DistillError(f"{what} must be {'an integer' if integer else 'a number'}, "
                           f"got {value!r}")
    if minimum is not None and (value < minimum or above and value == minimum):
        raise DistillError(f"{what} must be {'>' if above else '>='} {minimum}, got {value}")


@dataclass
class Sampling:
    """Sampling settings shared by every backend. ``temperature=0`` is greedy. Checked when
    made: a bad value stops the run before any model loads or any file is written."""

    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 512
    n: int = 1
    stop: list[str] = field(default_factory=list)
    seed: int = 0
    logprobs: int = 0  # top-k log-probs per generated token (0: none)
    output: dict | None = None  # a structured output constraint (distill.datagen.structured)

    def __post_init__(self):
        check_number("temperature", self.temperature, 0, integer=False)
        check_number("top_p", self.top_p, 0, integer=False, above=True)
        if self.top_p > 1:
            raise DistillError(f"top_p (--top-p) must be in (0, 1], got {self.top_p}")
        check_number("max_tokens", self.max_tokens, 1)
        check_number("n", self.n, 1)
        check_number("seed", self.seed, None)
        check_number("logprobs", self.logprobs, 0)
        if not isinstance(self.stop, list) or not all(isinstance(s, str) for s in self.stop):
            raise DistillError(f"stop must be a list of strings, got {self.stop!r}")
        if self.output is not None:
            from distill.datagen.structured import check_output

            self.output = check_output(self.output, "output")

    def to_dict(self) -> dict:
        """The settings; ``output`` only where there is a constraint."""
        d = asdict(self)
        if d["output"] is None:
            del d["output"]
        return d


@dataclass
class Request:
    """One prompt: its chat messages, how many samples, and its own seed (so a row does not
    depend on which batch it fell into, where the backend allows). ``continue_final``: the
    last message is a partial assistant message to go on from, not a turn to answer.
    ``max_tokens``: this request's token budget, below the sampling's (None: the sampling's)."""

    messages: list[dict]
    n: int
    seed: int
    continue_final: bool = False
    max_tokens: int | None = None


@dataclass
class Completion:
    text: str
    finish_reason: str  # "stop" or "length"
    prompt_tokens: int
    tokens: int
    top_ids: list[list[int]] | None = None
    top_logprobs: list[list[float]] | None = None
    token_ids: list[int] | None = None  # the sampled ids, kept with top_ids


class Backend:
    """Base class: subclasses set ``name`` and ``model`` and implement ``generate``."""

    name = "base"
    model = ""
    batch_size = 64  # prompts per call (and per shard)

    def generate(self, requests: list[Request], sampling: Sampling) -> list[list[Completion]]:
        raise NotImplementedError

    def prompt_limit(self) -> PromptLimit | None:
        """What a prompt must fit in; None where the backend does not know it."""
        return None

    def close(self) -> None:
        pass


@dataclass
class PromptLimit:
    """A model's context length in tokens (``context``, read from ``source``), and the
    tokenizer and chat template that count a prompt's tokens as the backend will."""

    tokenizer: Any
    context: int
    source: str
    chat_template: str | None = None

    def too_long(self, messages: list[dict], continue_final: bool = False) -> int | None:
        """The prompt's token count when it leaves no room for a generated token, else None;
        ``continue_final``: the prompt goes on from its last (assistant) message."""
        text = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=not continue_final,
            continue_final_message=continue_final, tokenize=False,
            chat_template=self.chat_template)
        if len(text.encode()) + 16 < self.context:  # a token is at least one byte: it fits
            return None
        tokens = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return tokens if tokens >= self.context else None


def context_length(config) -> tuple[int, str] | None:
    """A transformers config's context length and the field it comes from (times a RoPE
    scaling factor, which only makes the check more lenient); None where it has none."""
    config = getattr(config, "text_config", None) or config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            factor = (getattr(config, "rope_scaling", None) or {}).get("factor") or 1
            return int(value * max(factor, 1)), f"{name} in its config.json"
    return None


def prompt_limit(backend: str, model: str | None, options: dict) -> PromptLimit | None:
    """The prompt limit of the model a backend by name would load (None: the embedded
    default), from its tokenizer and config alone (no weights load); None for openai, or
    where the config names no length."""
    if backend == "openai":
        return None
    from transformers import AutoConfig, AutoTokenizer

    from distill.chat import CHATML
    from distill.models import resolve_model

    model = resolve_model(model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model)
        config = AutoConfig.from_pretrained(model)
    except (OSError, ValueError) as e:
        raise DistillError(f"cannot load model {model!r}: {str(e).splitlines()[0]}") from None
    template = None if getattr(tokenizer, "chat_template", None) else CHATML
    if options.get("max_model_len"):
        return PromptLimit(tokenizer, options["max_model_len"], "max_model_len", template)
    found = context_length(config)
    return PromptLimit(tokenizer, *found, template) if found else None


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def get_backend(name: str, model: str, **options) -> Backend:
    """Build a backend by name; ``auto`` is vllm when importable, else hf."""
    if name == "auto":
        name = "vllm" if vllm_available() else "hf"
    if name == "hf":
        from distill.datagen.backends.hf import HFBackend
        return HFBackend(model, **options)
    if name == "vllm":
        from distill.datagen.backends.vllm import VLLMBackend
        return VLLMBackend(model, **options)
    if name == "openai":
        from distill.datagen.backends.openai import OpenAIBackend
        return OpenAIBackend(model, **options)
    raise DistillError(f"unknown backend {name!r}; choose auto, vllm, openai or hf")


# The YAML keys of the command-line flags, for refusals of settings read from a file.
KEYS = {"--backend": "backend:", "--base-url": "base_url", "--engine-arg": "engine_args",
        "--teacher": "model",
        "--tensor-parallel-size": "tensor_parallel_size", "--concurrency": "concurrency",
        "--timeout": "timeout", "--max-retries": "max_retries", "--api-key-env": "api_key_env"}


def backend_options_for(backend: str, base_url: str | None, batch_size: int | None,
                        extra: dict | None, engine_args: dict | None = None,
                        keys: bool = False) -> dict:
    """Constructor options for a backend from the common flags, checking they fit it;
    ``engine_args`` (vLLM's ``EngineArgs`` fields) are checked and typed here, before any
    model loads. ``keys``: the settings came from a YAML file, and a refusal names its keys
    (``engine_args``), not the flags (``--engine-arg``)."""
    try:
        return _options_for(backend, base_url, batch_size, extra, engine_args)
    except DistillError as e:
        if not keys:
            raise
        raise DistillError(re.sub("|".join(KEYS), lambda m: KEYS[m.group()], str(e))) from None


def _options_for(backend, base_url, batch_size, extra, engine_args) -> dict:
    options = dict(extra or {})
    if base_url:
        if backend != "openai":
            raise DistillError("--base-url is for --backend openai")
        options["base_url"] = base_url
    elif backend == "openai" and "base_url" not in options:
        raise DistillError("--backend openai needs --base-url (e.g. http://127.0.0.1:8000/v1)")
    if batch_size is not None:
        options["batch_size"] = batch_size
    engine = ("vllm" if vllm_available() else "hf") if backend == "auto" else backend
    for name in ("batch_size", "tensor_parallel_size", "concurrency"):
        check_number(name, options.get(name), 1)
    check_number("timeout", options.get("timeout"), 0, integer=False, above=True)
    check_number("max_retries", options.get("max_retries"), 0)
    only = {"--tensor-parallel-size": ("vllm", "tensor_parallel_size" in options),
            "--concurrency": ("openai", "concurrency" in options),
            "--timeout": ("openai", "timeout" in options),
            "--max-retries": ("openai", "max_retries" in options),
            "--api-key-env": ("openai", "api_key_env" in options),
            "--engine-arg": ("vllm", bool(engine_args))}
    for flag, (needs, given) in only.items():
        if given and engine != needs:
            raise DistillError(f"{flag} is for --backend {needs}, not {engine}")
    if "api_key_env" in options:
        name = options.pop("api_key_env")
        if not os.environ.get(name):
            raise DistillError(f"--api-key-env {name}: the environment variable {name} is "
                               "not set")
        options["api_key"] = os.environ[name]
    if engine_args:
        from distill.datagen.backends.vllm import engine_options

        options.update(engine_options(engine_args))
    return options
