"""Generation past one model call: tool-integrated reasoning (the model writes a ```python
block, generation stops where it closes, the block runs in the sandbox, its output is appended
and the same assistant message goes on; ``distill.tools`` has the format) and follow-up turns
(each a user message rendered from the row and the assistant's outputs so far).

Batched by rounds: each round sends every sample still waiting on the model in one backend
call (two where some continue an assistant message and some start one), runs the code blocks
that round produced at once on a thread pool, and drops the samples that finished: a round
waits for its slowest program (at most ``TOOL_TIMEOUT``), never for one program after
another, and a finished sample costs nothing more.

``max_tokens`` is the budget of a whole turn: each call of a turn asks for what is left of it.
A sample whose next prompt (a follow-up turn, or its trace after a tool's output) leaves the
model's context no room for a token ends there, with finish_reason ``length``.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from distill import tools
from distill.datagen.backends import Backend, Completion, PromptLimit, Request, Sampling
from distill.datagen.prompts import PromptFile
from distill.errors import DistillError
from distill.log import log
from distill.sandbox import run_program

TOOL_TIMEOUT = 5.0  # seconds per program, as the execute filter
TOOL_MEMORY_MB = 512
MAX_OUTPUT_CHARS = 1000  # what the model sees of a program's output


def chained(pf: PromptFile) -> bool:
    """Whether a prompt file asks for more than one call per sample (turns or tools)."""
    return bool(pf.turns or pf.tools)


@dataclass
class Trace(Completion):
    """A completion made of several calls: ``messages`` is the conversation before it (the
    prompt and every earlier turn), ``tool_calls`` the programs it ran ({code, output, error})."""

    messages: list[dict] = field(default_factory=list)
    tool_calls: list[dict] = field(default_factory=list)


@dataclass
class _Sample:
    fields: dict
    messages: list[dict]
    seed: int
    text: str = ""  # the assistant message being written
    outputs: list[str] = field(default_factory=list)  # finished assistant turns
    tool_calls: list[dict] = field(default_factory=list)
    prompt_tokens: int = 0
    tokens: int = 0
    turn_tokens: int = 0
    calls: int = 0
    finish: str | None = None  # set when done

    def request(self, max_tokens: int) -> Request:
        """The next call: a new turn, or the assistant message going on; ``max_tokens``: the
        turn's budget, of which the call gets what is left."""
        left = max_tokens - self.turn_tokens
        if not self.text:
            return Request(self.messages, 1, self.seed, max_tokens=left)
        return Request(self.messages + [{"role": "assistant", "content": self.text}], 1,
                       self.seed, continue_final=True, max_tokens=left)


def generate(engine: Backend, requests: list[Request], sampling: Sampling, pf: PromptFile,
             rows: list[dict]) -> list[list[Completion]]:
    """``engine.generate`` for a batch of requests, each sample followed through the prompt
    file's turns and tool calls; ``rows`` are the requests' source fields (for the turns)."""
    if not chained(pf):
        return engine.generate(requests, sampling)
    if pf.tools and engine.name == "openai":
        raise DistillError("tool-integrated prompts (tools: in the prompt file) run on the vllm "
                           "and hf backends; --backend openai cannot continue a message yet")
    stop = sampling.stop + [tools.CODE_END] if pf.tools else sampling.stop
    call = replace(sampling, n=1, stop=stop)
    first = engine.generate(requests, replace(call, n=sampling.n))
    samples = [[_Sample(row, list(r.messages), _seed(r.seed, k)) for k in range(len(done))]
               for r, row, done in zip(requests, rows, first)]
    flat = [s for group in samples for s in group]
    firsts = [c for done in first for c in done]
    for s, c in zip(flat, firsts):
        s.prompt_tokens = c.prompt_tokens
    _advance(pf, sampling, list(zip(flat, firsts)))
    limit = engine.prompt_limit()
    while waiting := _fitting([s for s in flat if s.finish is None], limit, sampling.max_tokens):
        results = []
        for go_on in (False, True):  # vllm renders a batch one way: new or continued
            group = [s for s in waiting if bool(s.text) == go_on]
            if group:
                done = engine.generate([s.request(sampling.max_tokens) for s in group], call)
                results += [(s, c[0]) for s, c in zip(group, done)]
        _advance(pf, sampling, results)
    return [[_trace(s) for s in group] for group in samples]


def _advance(pf: PromptFile, sampling: Sampling, results: list[tuple[_Sample, Completion]]):
    """Append each call's text; run the code blocks it closed (all at once); start the next
    turn or finish the samples that are done."""
    programs = []
    for s, c in results:
        s.text += c.text
        s.tokens += c.tokens
        s.turn_tokens += c.tokens
        s.seed = _seed(s.seed, 1)
        code = tools.open_code(s.text) if pf.tools and c.finish_reason == "stop" else None
        budget = s.turn_tokens < sampling.max_tokens
        if code is not None:
            s.text += tools.CODE_END
            if budget and s.calls < pf.max_tool_calls:
                s.calls += 1
                programs.append((s, code))
                continue
        # out of tokens or tool calls (the last block stays unrun): the turn is cut short
        cut = code is not None or c.finish_reason == "length" or not budget
        if len(s.outputs) < len(pf.turns):
            s.outputs.append(s.text)
            follow = pf.follow_up(len(s.outputs) - 1, s.fields, s.outputs)
            s.messages += [{"role": "assistant", "content": s.text},
                           {"role": "user", "content": follow}]
            s.text, s.turn_tokens = "", 0
        else:
            s.finish = "length" if cut else "stop"
    if programs:
        with ThreadPoolExecutor(min(len(programs), 8)) as pool:
            for (s, code), call in zip(programs, pool.map(_run, [c for _, c in programs])):
                s.tool_calls.append(call)
                s.text += tools.output_block(call["error"] or call["output"])


def _fitting(samples: list[_Sample], limit: PromptLimit | None,
             max_tokens: int) -> list[_Sample]:
    """The samples whose next prompt fits the model's context (``limit``; None: unknown) with
    room for a token; the others end with finish_reason length (a follow-up turn that does not
    fit is taken back: the row ends at the answer before it), and one line says so."""
    if limit is None:
        return samples
    fit, over = [], []
    for s in samples:
        request = s.request(max_tokens)
        tokens = limit.too_long(request.messages, continue_final=request.continue_final)
        if tokens is None:
            fit.append(s)
            continue
        over.append(tokens)
        s.finish = "length"
        if not s.text:
            s.text, s.messages = s.outputs.pop(), s.messages[:-2]
    if over:
        log(f"generate: {len(over)} samples outgrew the model's context ({limit.context}, "
            f"{limit.source}) at a follow-up turn or after a tool's output (next prompt: up to "
            f"{max(over)} tokens); their rows end there, with finish_reason length")
    return fit


def _run(code: str) -> dict:
    """Run one program in the sandbox: {code, output (stdout), error (the error's last line,
    or None when it ran cleanly)}, each cut to ``MAX_OUTPUT_CHARS``."""
    result = run_program(code, timeout=TOOL_TIMEOUT, cpu_seconds=int(TOOL_TIMEOUT),
                         memory_mb=TOOL_MEMORY_MB)
    error = None
    if result.timed_out or result.killed_reason:
        error = f"the program was stopped: {result.killed_reason or 'timeout'}"
    elif result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        error = lines[-1] if lines else f"exit status {result.returncode}"
    return {"code": code, "output": _cut(result.stdout.rstrip("\n")),
            "error": None if error is None else _cut(error)}


def _cut(text: str) -> str:
    text = text.replace("```", "'''")  # a fence inside the output would end its block
    return text if len(text) <= MAX_OUTPUT_CHARS else text[:MAX_OUTPUT_CHARS] + " ...(cut)"


def _trace(s: _Sample) -> Trace:
    return Trace(s.text, s.finish, s.prompt_tokens, s.tokens, messages=s.messages,
                 tool_calls=s.tool_calls)


def _seed(seed: int, k: int) -> int:
    digest = hashlib.sha256(f"{seed}\x00{k}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF
