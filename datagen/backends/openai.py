"""OpenAI-compatible backend: ``POST /chat/completions`` for ``vllm serve`` and other servers.

Requests run concurrently (asyncio, at most ``concurrency`` in flight); each is retried with
exponential backoff and jitter on 429, 5xx, timeouts and connection errors, honoring
``Retry-After``. Top-k token ids (``logprobs > 0``) need vLLM's ``return_tokens_as_token_ids``.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
from concurrent.futures import ThreadPoolExecutor

import httpx

from distill.datagen.backends import Backend, Completion, Request, Sampling
from distill.errors import DistillError


class OpenAIBackend(Backend):
    name = "openai"

    def __init__(self, model: str, *, base_url: str, api_key: str | None = None,
                 concurrency: int = 16, timeout: float = 600, max_retries: int = 5,
                 batch_size: int = 64, backoff: float = 1.0):
        self.model, self.batch_size, self.concurrency = model, batch_size, concurrency
        self.base_url, self.timeout = base_url.rstrip("/"), timeout
        self.max_retries, self.backoff = max_retries, backoff
        key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self.headers = {"Authorization": f"Bearer {key}"}
        self.vllm = self._check_server()

    def _check_server(self) -> bool:
        """Fail fast if the server is unreachable or does not serve ``model``; True for vLLM."""
        url = f"{self.base_url}/models"
        try:
            resp = httpx.get(url, headers=self.headers, timeout=min(self.timeout, 30))
        except httpx.TransportError as e:
            raise DistillError(f"cannot reach OpenAI-compatible server at {self.base_url}: "
                               f"{_cause(e, min(self.timeout, 30))}") from None
        if resp.status_code == 404:
            return False  # no model list to check against
        if resp.status_code != 200:
            raise DistillError(f"GET {url}: HTTP {resp.status_code}: {_message(resp)}")
        try:
            cards = resp.json()["data"]
            served = [c["id"] for c in cards]
        except (ValueError, KeyError, TypeError):
            raise DistillError(f"GET {url}: not an OpenAI model list; does --base-url end "
                               "in /v1?") from None
        if served and self.model not in served:
            raise DistillError(f"{self.base_url} does not serve model {self.model!r}; "
                               f"it serves: {', '.join(served)}")
        return any(c.get("owned_by") == "vllm" for c in cards)

    def generate(self, requests: list[Request], sampling: Sampling) -> list[list[Completion]]:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self._all(requests, sampling))
        with ThreadPoolExecutor(1) as pool:  # called from inside an event loop (notebooks)
            return pool.submit(asyncio.run, self._all(requests, sampling)).result()

    async def _all(self, requests: list[Request], sampling: Sampling) -> list[list[Completion]]:
        gate = asyncio.Semaphore(self.concurrency)
        limits = httpx.Limits(max_connections=self.concurrency)
        async with httpx.AsyncClient(headers=self.headers, timeout=self.timeout,
                                     limits=limits) as client:
            async def one(req: Request) -> list[Completion]:
                async with gate:
                    return self._parse(await self._post(client, self._body(req, sampling)),
                                       req, sampling)
            tasks = [asyncio.create_task(one(r)) for r in requests]
            try:
                return await asyncio.gather(*tasks)
            finally:
                for task in tasks:
                    task.cancel()

    def _body(self, req: Request, sampling: Sampling) -> dict:
        # Greedy samples are identical and vLLM rejects n > 1 with temperature 0: ask once.
        n = 1 if sampling.temperature == 0 else req.n
        body = {"model": self.model, "messages": req.messages, "n": n, "seed": req.seed,
                "temperature": sampling.temperature, "top_p": sampling.top_p,
                "max_tokens": sampling.max_tokens}
        if sampling.stop:
            body["stop"] = sampling.stop
        if self.vllm:
            body["return_token_ids"] = True  # exact per-choice token counts
        if sampling.logprobs:
            # vLLM lists the sampled token first, then the top-k: ask one more, sort, cut.
            body.update(logprobs=True, top_logprobs=sampling.logprobs + 1,
                        return_tokens_as_token_ids=True)
        return body

    async def _post(self, client: httpx.AsyncClient, body: dict) -> dict:
        url = f"{self.base_url}/chat/completions"
        for attempt in range(self.max_retries + 1):
            delay = min(self.backoff * 2 ** attempt, 60) * (0.5 + random.random())
            try:
                resp = await client.post(url, json=body)
            except httpx.TransportError as e:
                error = _cause(e, self.timeout)
            else:
                if resp.status_code == 200:
                    return resp.json()
                error = f"HTTP {resp.status_code}: {_message(resp)}"
                if resp.status_code != 429 and resp.status_code < 500:
                    hint = " (does --base-url end in /v1?)" if resp.status_code == 404 else ""
                    raise DistillError(f"POST {url}: {error}{hint}")
                delay = _retry_after(resp, delay)
            if attempt < self.max_retries:
                await asyncio.sleep(delay)
        raise DistillError(f"POST {url}: gave up after {self.max_retries + 1} attempts: {error}")

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


def _cause(e: httpx.TransportError, timeout: float) -> str:
    if isinstance(e, httpx.TimeoutException):
        return f"timed out after {timeout:g}s"
    text = re.sub(r"^\[Errno -?\d+\] ", "", (str(e) or type(e).__name__).splitlines()[0])
    return text[:1].lower() + text[1:]


def _message(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text.strip()[:500] or resp.reason_phrase
    error = body.get("error", body) if isinstance(body, dict) else body
    return str(error.get("message") or error) if isinstance(error, dict) else str(error)


def _retry_after(resp: httpx.Response, default: float) -> float:
    try:
        return max(0.0, float(resp.headers["retry-after"]))
    except (KeyError, ValueError):
        return default
