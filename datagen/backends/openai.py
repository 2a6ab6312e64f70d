"""OpenAI-compatible backend: chat completions from ``vllm serve`` or any other provider,
through the ``openai`` client.

Requests run concurrently (a thread pool, at most ``concurrency`` in flight); the client
retries 408, 409, 429, 5xx, timeouts and dropped connections with exponential backoff,
honoring ``Retry-After``. vLLM-only fields go in ``extra_body``: top-k token ids
(``logprobs > 0``) need vLLM's ``return_tokens_as_token_ids``, and a regex or choice
constraint (``Sampling.output``) its ``structured_outputs``.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import openai

from distill.datagen.backends import Backend, Completion, Request, Sampling
from distill.datagen.structured import structured_fields
from distill.errors import DistillError

RETRIED = (408, 409, 429)  # and 5xx: the statuses the client retries


class OpenAIBackend(Backend):
    name = "openai"

    def __init__(self, model: str, *, base_url: str, api_key: str | None = None,
                 concurrency: int = 16, timeout: float = 600, max_retries: int = 5,
                 batch_size: int = 64):
        """``api_key``: None sends "EMPTY" (``vllm serve`` without ``--api-key``)."""
        self.model, self.batch_size, self.concurrency = model, batch_size, concurrency
        self.base_url, self.timeout, self.max_retries = base_url.rstrip("/"), timeout, max_retries
        self.client = openai.OpenAI(base_url=self.base_url, api_key=api_key or "EMPTY",
                                    timeout=timeout, max_retries=max_retries)
        self.vllm = self._check_server()

    def _check_server(self) -> bool:
        """Fail fast if the server is unreachable or does not serve ``model``; True for vLLM."""
        wait = min(self.timeout, 30)
        try:
            cards = self.client.with_options(max_retries=0, timeout=wait).models.list().data
        except openai.NotFoundError:
            return False  # no model list to check against
        except openai.APIConnectionError as e:
            raise DistillError(f"cannot reach OpenAI-compatible server at {self.base_url}: "
                               f"{_cause(e, wait)}") from None
        except openai.APIStatusError as e:
            raise DistillError(f"GET {self.base_url}/models: {_status(e)}") from None
        served = [c.id for c in cards]
        if served and self.model not in served:
            raise DistillError(f"{self.base_url} does not serve model {self.model!r}; "
                               f"it serves: {', '.join(served)}")
        return any(c.owned_by == "vllm" for c in cards)

    def generate(self, requests: list[Request], sampling: Sampling) -> list[list[Completion]]:
        with ThreadPoolExecutor(self.concurrency) as pool:
            futures = [pool.submit(self._one, r, sampling) for r in requests]
            try:
                return [f.result() for f in futures]
            finally:
                for f in futures:
                    f.cancel()

    def _one(self, req: Request, sampling: Sampling) -> list[Completion]:
        url = f"{self.base_url}/chat/completions"
        try:
            data = self.client.chat.completions.create(**self._body(req, sampling)).to_dict()
        except openai.APIConnectionError as e:
            raise DistillError(f"POST {url}: gave up after {self.max_retries + 1} attempts: "
                               f"{_cause(e, self.timeout)}") from None
        except openai.APIStatusError as e:
            if e.status_code in RETRIED or e.status_code >= 500:
                raise DistillError(f"POST {url}: gave up after {self.max_retries + 1} attempts: "
                                   f"{_status(e)}") from None
            hint = " (does --base-url end in /v1?)" if e.status_code == 404 else ""
            raise DistillError(f"POST {url}: {_status(e)}{hint}") from None
        return self._parse(data, req, sampling)

    def _body(self, req: Request, sampling: Sampling) -> dict:
        """Keyword arguments of ``chat.completions.create``: the OpenAI fields, and vLLM's
        own in ``extra_body``."""
        # Greedy samples are identical and vLLM rejects n > 1 with temperature 0: ask once.
        n = 1 if sampling.temperature == 0 else req.n
        body = {"model": self.model, "messages": req.messages, "n": n, "seed": req.seed,
                "temperature": sampling.temperature, "top_p": sampling.top_p,
                "max_tokens": req.max_tokens or sampling.max_tokens}
        extra = {}
        if sampling.stop:
            body["stop"] = sampling.stop
        if self.vllm:
            extra["return_token_ids"] = True  # exact per-choice token counts
        if sampling.logprobs:
            # vLLM lists the sampled token first, then the top-k: ask one more, sort, cut.
            body.update(logprobs=True, top_logprobs=sampling.logprobs + 1)
            extra["return_tokens_as_token_ids"] = True
        if sampling.output:
            self._constrain(sampling.output, body, extra)
        if extra:
            body["extra_body"] = extra
        return body

    def _constrain(self, output: dict, body: dict, extra: dict) -> None:
        """A JSON schema as OpenAI's ``response_format``; a regex or choice as vLLM's
        ``structured_outputs`` (other servers have no such field)."""
        kind, value = next(iter(output.items()))
        if kind == "json_schema":
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "output", "schema": value, "strict": True}}
        elif self.vllm:
            extra["structured_outputs"] = structured_fields(output)
        else:
            raise DistillError(f"{self.base_url} is not a vLLM server: an output {kind} "
                               "constraint needs vLLM's structured_outputs (only json_schema "
                               "works on any OpenAI-compatible server)")

    def _parse(self, data: dict, req: Request, sampling: Sampling) -> list[Completion]:
        choices = sorted(data.get("choices") or [], key=lambda c: c.get("index", 0))
        if sampling.temperature == 0 and len(choices) == 1:
            choices *= req.n
        if len(choices) != req.n:
            raise DistillError(f"{self.base_url} returned {len(choices)} choices for n={req.n}; "
                               "does the server support n > 1?")
        usage = data.get("usage") or {}
        out = [Completion(c["message"].get("content") or "", c.get("finish_reason") or "stop",
                          usage.get("prompt_tokens", 0), 0) for c in choices]
        # Tokens: exact from vLLM's token_ids or logprobs, else usage (all n) split by text length.
        total, chars = usage.get("completion_tokens", 0), sum(len(c.text) for c in out)
        for c, choice in zip(out, choices):
            content = (choice.get("logprobs") or {}).get("content")
            ids = choice.get("token_ids")
            c.tokens = len(ids) if ids is not None else len(content) if content is not None \
                else round(total * len(c.text) / chars) if chars else total // len(out)
            if sampling.logprobs:
                self._top(c, content or [], sampling.logprobs)
        return out

    def _top(self, c: Completion, content: list[dict], k: int) -> None:
        c.top_ids, c.top_logprobs, c.token_ids = [], [], []
        for step in content:
            top = sorted(step.get("top_logprobs") or [], key=lambda t: -t["logprob"])[:k]
            if not all(t["token"].startswith("token_id:") for t in [step, *top]):
                raise DistillError(f"{self.base_url} returned token strings, not ids: top-k "
                                   "ids (--logprobs) need a vLLM server")
            c.token_ids.append(int(step["token"][9:]))
            c.top_ids.append([int(t["token"][9:]) for t in top])
            c.top_logprobs.append([t["logprob"] for t in top])

    def close(self) -> None:
        self.client.close()


def _cause(e: openai.APIConnectionError, timeout: float) -> str:
    """Why a connection failed, in a few words: "connection refused", "timed out after 5s"."""
    if isinstance(e, openai.APITimeoutError):
        return f"timed out after {timeout:g}s"
    cause = e.__cause__ or e
    text = re.sub(r"^\[Errno -?\d+\] ", "", (str(cause) or type(cause).__name__).splitlines()[0])
    return text[:1].lower() + text[1:]


def _status(e: openai.APIStatusError) -> str:
    """``HTTP 400: <the server's message>``."""
    body = e.body
    if isinstance(body, dict):
        message = body.get("message") or body
    else:
        message = body or e.response.text.strip()[:500] or e.response.reason_phrase
    return f"HTTP {e.status_code}: {message}"
