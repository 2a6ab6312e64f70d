"""``distill eval`` and ``distill eval compare``: parse, then call ``evaluate`` / ``compare``.

``compare`` is an optional sub-verb of ``eval``: without it, ``eval`` evaluates one model.
``compare`` takes its runs as positionals (``RUN_DIR...``), not as ``--data``: it reads several
finished runs, and a list of folders is what positionals are for."""

from __future__ import annotations

from distill.data import options_of
from distill.flags import add_backend_flags, add_data_flags, backend_flags_of, renamed, require
from distill.folders import add_overwrite


def register(sub) -> None:
    p = sub.add_parser(
        "eval", help="evaluate a model on a task (accuracy, pass@k, maj@k); or compare runs",
        usage="distill eval --data BENCHMARK|DATA --out DIR [--model M] [--prompt NAME] "
        "[--n N] [--limit N] [--backend ...] [options]\n       distill eval compare "
        "RUN_DIR... --out DIR [--teacher RUN_DIR] [--texts FILE]",
        description="Evaluate a model on a math task and write OUT/metrics.json and the "
        "per-item dataset (OUT/data/*.parquet). Rerunning resumes. `distill eval compare "
        "RUN_DIR... --out DIR` compares finished runs.")
    p.add_argument("--model", help="HF folder, hub id, `distill train` output folder, or the "
                   "served model name with --backend openai (default: embedded "
                   "SmolLM2-135M-Instruct)")
    p.add_argument("--data", metavar="BENCHMARK|DATA", help="a benchmark (gsm8k, svamp, "
                   "asdiv, mawps), or data with question and answer columns: a jsonl/json/csv/"
                   "parquet file, a folder (distill dataset, published, save_to_disk), a glob "
                   "or a hub id (map other columns with --field question=COL)")
    p.add_argument("--out", help="output folder")
    renamed(p, "--task", "--data")
    p.add_argument("--prompt", help="prompt file name or path: gsm8k-cot (default), "
                   "gsm8k-cot-8shot, gsm8k-pot (programs run in the sandbox), gsm8k-tir "
                   "(reasoning with Python, run as it goes), ...")
    p.add_argument("--shots", type=int,
                   help="use only the prompt file's first N few-shot exemplars (default: all)")
    p.add_argument("--n", type=int, default=1,
                   help="samples per item for pass@k and maj@k (default 1: greedy only)")
    p.add_argument("--limit", type=int, help="evaluate only the first N items")
    p.add_argument("--backend", default="auto", choices=["auto", "vllm", "openai", "hf"])
    p.add_argument("--base-url", help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--max-tokens", type=int, help="default: the prompt file's")
    p.add_argument("--temperature", type=float,
                   help="sampling temperature of the n samples (greedy is always 0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, help="prompts per engine call")
    add_backend_flags(p)
    p.add_argument("--params", type=int, help="parameter count, when it cannot be read "
                   "from the model (e.g. an openai backend)")
    p.add_argument("--regenerate", action="store_true",
                   help="discard generations made with other settings and start over")
    add_overwrite(p)
    p.add_argument("--no-progress", action="store_true")
    add_data_flags(p)
    p.set_defaults(split=None)  # test for a benchmark, the reader's train for other data
    next(a for a in p._actions if a.dest == "split").help += (
        " Default: test for a benchmark, train for other data.")
    p.set_defaults(func=_eval)

    verbs = p.add_subparsers(dest="eval_verb", metavar="compare")
    c = verbs.add_parser("compare", help="compare eval runs: tables and plots",
                         description="Compare `distill eval` output folders: OUT/compare.md, "
                         "compare.html, compare.json and PNG plots.")
    c.add_argument("runs", nargs="+", metavar="RUN_DIR")
    c.add_argument("--out", dest="compare_out", required=True, help="report folder")
    c.add_argument("--teacher", help="the reference run (default: the first RUN_DIR); "
                   "retention and agreement of the others are relative to it")
    c.add_argument("--texts", help="held-out texts (.txt, one per line, or jsonl with a text "
                   "field) for logit divergence (KL, JS, top-10) between the runs' models")
    c.add_argument("--max-texts", type=int, default=64)
    c.add_argument("--max-length", type=int, default=256, help="tokens per held-out text")
    c.add_argument("--bootstrap", type=int, default=10_000, help="bootstrap resamples")
    add_overwrite(c, verb=True)
    c.set_defaults(func=_compare)


def _eval(args) -> None:
    from distill.eval.run import evaluate

    require(args, "eval", "--data", "--out",
            hint=" (or the verb compare: distill eval compare RUN_DIR... --out DIR)")
    result = evaluate(args.model, args.data, args.out, prompt=args.prompt, n=args.n,
                      limit=args.limit, backend=args.backend, base_url=args.base_url,
                      max_tokens=args.max_tokens, temperature=args.temperature, seed=args.seed,
                      batch_size=args.batch_size, params=args.params,
                      shots=args.shots, regenerate=args.regenerate, progress=not args.no_progress,
                      overwrite=args.overwrite, **options_of(args), **backend_flags_of(args))
    print(result.summary())


def _compare(args) -> None:
    from distill.datagen.backends import check_number
    from distill.eval.compare import compare

    for name, value in (("max_texts", args.max_texts), ("max_length", args.max_length),
                        ("bootstrap", args.bootstrap)):
        check_number(name, value, 1)
    result = compare(args.runs, args.compare_out, teacher=args.teacher, texts=args.texts,
                     max_texts=args.max_texts, max_length=args.max_length,
                     bootstrap=args.bootstrap, overwrite=args.overwrite)
    for r in result["runs"]:
        lo, hi = r["accuracy_ci"]
        line = f"{r['run']:<24} accuracy {r['accuracy']:.3f} [{lo:.3f}, {hi:.3f}]"
        if r.get("retention") is not None:
            rlo, rhi = r["retention_ci"]
            line += f"  retention {r['retention']:.3f} [{rlo:.3f}, {rhi:.3f}]"
        print(line)
    print(f"-> {args.compare_out}/compare.md, compare.html, "
          + ", ".join(p.rsplit("/", 1)[-1] for p in result["plots"]))
