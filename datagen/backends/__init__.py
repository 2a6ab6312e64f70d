"""Generation backends behind one interface: a batch of chat prompts + sampling in,
n completions per prompt out, each with its finish reason and token counts.

- ``vllm``: the offline ``vllm.LLM`` engine, one call per batch.
- ``openai``: any OpenAI-compatible server (``vllm serve`` and others).
- ``hf``: transformers ``generate``, batched with left padding.
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass, field


@dataclass
class Sampling:
    """Sampling settings shared by every backend. ``temperature=0`` is greedy."""

    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 512
    n: int = 1
    stop: list[str] = field(default_factory=list)
    seed: int = 0
    logprobs: int = 0  # top-k log-probs per generated token (0: none)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Request:
    """One prompt: its chat messages, how many samples, and its own seed (so a row does not
    depend on which batch it fell into, where the backend allows)."""

    messages: list[dict]
    n: int
    seed: int


@dataclass
class Completion:
    text: str
    finish_reason: str  # "stop" or "length"
    prompt_tokens: int
    tokens: int
    top_ids: list[list[int]] | None = None
    top_logprobs: list[list[float]] | None = None


class Backend:
    """Base class: subclasses set ``name`` and ``model`` and implement ``generate``."""

    name = "base"
    model = ""
    batch_size = 64  # prompts per call (and per shard)

    def generate(self, requests: list[Request], sampling: Sampling) -> list[list[Completion]]:
        raise NotImplementedError

    def close(self) -> None:
        pass


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
    from distill.errors import DistillError
    raise DistillError(f"unknown backend {name!r}; choose auto, vllm, openai or hf")


def backend_options_for(backend: str, base_url: str | None, batch_size: int | None,
                        extra: dict | None) -> dict:
    """Constructor options for a backend from the common flags, checking they fit it."""
    from distill.errors import DistillError

    options = dict(extra or {})
    if base_url:
        if backend != "openai":
            raise DistillError("--base-url is for --backend openai")
        options["base_url"] = base_url
    elif backend == "openai" and "base_url" not in options:
        raise DistillError("--backend openai needs --base-url (e.g. http://127.0.0.1:8000/v1)")
    if batch_size:
        options["batch_size"] = batch_size
    return options
