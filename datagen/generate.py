"""The generate job: prompt file x source rows x n samples -> a dataset folder.

``generate`` makes the plan (``distill.datagen.plan``: the rows, their ids, what the folder
already holds) and runs it here (``distill.datagen.local``) or on a Ray cluster
(``distill.datagen.ray``); either way the rows, shards, manifest and resume are the same.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from distill import io
from distill.datagen.backends import Backend, backend_options_for, check_number, prompt_limit
from distill.datagen.local import run_engine, run_local
from distill.datagen.plan import Sink, make_plan, row_schema
from distill.errors import DistillError
from distill.folders import claim


@dataclass
class GenerateResult:
    out: Path
    rows_total: int
    rows_reused: int
    rows_written: int
    tokens: int
    seconds: float
    finish_reasons: dict[str, int]
    duplicates_skipped: int

    def summary(self) -> str:
        rate = self.rows_written / self.seconds if self.seconds else 0.0
        tps = self.tokens / self.seconds if self.seconds else 0.0
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(self.finish_reasons.items())) or "-"
        lines = [(f"{self.out}: {self.rows_total} rows ({self.rows_reused} reused, "
                  f"{self.rows_written} generated in {self.seconds:.1f}s: "
                  f"{rate:.2f} rows/s, {tps:.1f} tokens/s)"), f"finish reasons: {reasons}"]
        if self.duplicates_skipped:
            lines.append(f"skipped {self.duplicates_skipped} duplicate source rows")
        return "\n".join(lines)


def generate(prompt: str, source: str, out: str, *, model: str | None = None,
             backend: str | Backend = "auto", base_url: str | None = None,
             n: int | None = None, limit: int | None = None, temperature: float | None = None,
             top_p: float | None = None, max_tokens: int | None = None,
             seed: int | None = None, logprobs: int = 0, fields: dict[str, str] | None = None,
             tasks: list[str] | None = None, shuffle: bool = False, split: str = "train",
             subset: str | None = None, revision: str | None = None,
             batch_size: int | None = None,
             shots: int | None = None, regenerate: bool = False, overwrite: bool = False,
             cache: bool = False, backend_options: dict | None = None, engine_args: dict | None = None,
             progress: bool = True,
             executor: str = "local", ray_address: str | None = None,
             ray_workers: int | None = None) -> GenerateResult:
    """Generate completions for every source row with a prompt file; see ``distill generate``.
    ``shots`` keeps only the prompt file's first few-shot exemplars. ``executor="ray"`` runs
    the engines as a Ray Data actor pool (``ray_workers`` of them) on the cluster at
    ``ray_address``; the rows, shards, manifest and resume are the local path's.
    ``engine_args``: vLLM's ``EngineArgs`` fields for the vllm backend (``--engine-arg``).
    ``out`` must be new, empty or a generate output (``overwrite``: move what else it holds
    aside), and one generate at a time writes it (``distill.folders.claim``). Rows in ``out``
    outside this plan stop the run (the next stage would read them), unless ``out`` is a
    ``cache`` its readers pick their rows from by id (eval's generations)."""
    start = time.perf_counter()
    if executor not in ("local", "ray"):
        raise DistillError(f"executor must be local or ray, not {executor!r}")
    if executor == "ray" and isinstance(backend, Backend):
        raise DistillError("executor ray builds one engine per worker: pass a backend name")
    if backend == "openai" and not model:
        raise DistillError("--backend openai needs --teacher: the model name the server serves")
    check_number("ray_workers", ray_workers, 1)
    if isinstance(backend, Backend):
        check_number("batch_size", batch_size, 1)
        context = backend.prompt_limit
    else:
        options = backend_options_for(backend, base_url, batch_size, backend_options,
                                      engine_args)
        context = partial(prompt_limit, backend, model, options)
    with claim(out, "generate", "generate", inputs=[source], overwrite=overwrite):
        plan = make_plan(prompt, source, out, model=model, n=n, limit=limit,
                         temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed,
                         logprobs=logprobs, fields=fields, tasks=tasks, shuffle=shuffle,
                         split=split, subset=subset, revision=revision, shots=shots,
                         regenerate=regenerate, cache=cache, context=context)
        manifest = plan.manifest
        schema = row_schema(plan.sampling.logprobs > 0, output=plan.pf.output is not None,
                            tools=bool(plan.pf.tools))
        sink = Sink(plan.out, schema, plan.total - plan.reused, progress)
        try:
            if plan.pending and isinstance(backend, Backend):
                run_engine(backend, plan, sink)
                manifest["backend"] = backend.name
            elif plan.pending:
                if executor == "ray":
                    from distill.datagen.ray.generate import run_on_ray

                    manifest["backend"] = run_on_ray(plan, sink, backend, model, options,
                                                     ray_address, ray_workers)
                else:
                    manifest["backend"] = run_local(plan, sink, backend, model, options)
        finally:
            sink.close()
        manifest.update(status="complete", finished=io.now(), rows=len(io.read_ids(plan.out)))
        io.write_manifest(plan.out, manifest)
        return GenerateResult(plan.out, plan.total, plan.reused, sink.written, sink.tokens,
                              time.perf_counter() - start, dict(sink.reasons), plan.duplicates)
