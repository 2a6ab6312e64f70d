"""``distill <verb>``: parse arguments and call the same functions a Python user would."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from distill.data import options_of
from distill.errors import DistillError
from distill.flags import (
    Parser,
    add_backend_flags,
    add_data_flags,
    backend_flags_of,
    positional_renamed,
    renamed,
    require,
    take_positionals,
)
from distill.folders import add_overwrite


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="a teacher writes completions for a prompt file x data",
                       description="Generate a dataset of teacher completions. Rerunning the "
                       "same command resumes: rows already in --out are kept.")
    p.add_argument("--prompt", required=True, help="shipped prompt name or path to a YAML file")
    p.add_argument("--data", metavar="PATH", help="the problems: jsonl/json/csv/parquet/txt "
                   "file, dataset folder, or hub id (required)")
    p.add_argument("--out", required=True, metavar="DIR", help="output dataset folder")
    p.add_argument("--teacher", metavar="MODEL", help="HF folder or hub id (default: embedded "
                   "SmolLM2-135M-Instruct)")
    renamed(p, "--source", "--data")
    renamed(p, "--model", "--teacher")
    p.add_argument("--backend", default="auto", choices=["auto", "vllm", "openai", "hf"])
    p.add_argument("--base-url", help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--n", type=int, help="samples per prompt (default: the prompt file's)")
    p.add_argument("--limit", type=int, help="use only the first N rows of --data")
    p.add_argument("--temperature", type=float)
    p.add_argument("--top-p", type=float)
    p.add_argument("--max-tokens", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--logprobs", type=int, default=0, help="keep top-k log-probs per token")
    p.add_argument("--tasks", help="comma-separated subset of the prompt file's task grid")
    p.add_argument("--shots", type=int,
                   help="use only the prompt file's first N few-shot exemplars (default: all)")
    p.add_argument("--shuffle", action="store_true", help="shuffle --data rows (with --seed)")
    add_data_flags(p)
    p.add_argument("--batch-size", type=int, help="prompts per engine call and per shard")
    p.add_argument("--tensor-parallel-size", type=int, help="vllm: GPUs per engine")
    p.add_argument("--concurrency", type=int, help="openai: requests in flight")
    add_backend_flags(p)
    p.add_argument("--regenerate", action="store_true",
                   help="discard the rows in --out (made with other settings, or not in this plan) "
                        "and start over")
    add_overwrite(p)
    p.add_argument("--no-progress", action="store_true")
    _add_executor(p, "engines (default: one per GPU or tensor-parallel group, else per CPU)")
    p.set_defaults(func=_generate)


def _add_executor(p, workers: str) -> None:
    p.add_argument("--executor", default="local", choices=["local", "ray"],
                   help="ray: run on a Ray cluster (pip install 'distill[ray]'); same output")
    p.add_argument("--ray-address", help="Ray cluster, e.g. HEAD_IP:6379 or auto (default: "
                   "RAY_ADDRESS, else the cluster `ray start` began here, else a new local one)")
    p.add_argument("--ray-workers", type=int, help=f"ray: {workers}")


def _generate(args) -> None:
    from distill.datagen import generate

    require(args, "generate", "--data")
    backend = backend_flags_of(args)
    options = backend["backend_options"]
    if args.tensor_parallel_size is not None:
        options["tensor_parallel_size"] = args.tensor_parallel_size
    if args.concurrency is not None:
        options["concurrency"] = args.concurrency
    result = generate(
        args.prompt, args.data, args.out, model=args.teacher, backend=args.backend,
        base_url=args.base_url, n=args.n, limit=args.limit, temperature=args.temperature,
        top_p=args.top_p, max_tokens=args.max_tokens, seed=args.seed, logprobs=args.logprobs,
        tasks=args.tasks.split(",") if args.tasks else None, shuffle=args.shuffle,
        **options_of(args), batch_size=args.batch_size,
        shots=args.shots, regenerate=args.regenerate, overwrite=args.overwrite,
        backend_options=options, engine_args=backend["engine_args"],
        progress=not args.no_progress, executor=args.executor, ray_address=args.ray_address,
        ray_workers=args.ray_workers)
    print(result.summary())


def _add_prompts(sub) -> None:
    p = sub.add_parser("prompts", help="list, show and render prompt files")
    verbs = p.add_subparsers(dest="verb", required=True)
    verbs.add_parser("list", help="the shipped prompt files").set_defaults(func=_prompts_list)
    show = verbs.add_parser("show", help="print a prompt file")
    show.add_argument("name")
    show.set_defaults(func=_prompts_show)
    render = verbs.add_parser("render", help="render a prompt for one row, as chat messages")
    render.add_argument("name")
    render.add_argument("--row", required=True, help='JSON object, e.g. \'{"question": "..."}\'')
    render.add_argument("--task", help="task of the grid (instruction prompts)")
    render.set_defaults(func=_prompts_render)


def _prompts_list(args) -> None:
    from distill.datagen import list_prompts

    for pf in list_prompts():
        print(f"{pf.name:<18} {pf.kind:<12} {pf.description}")


def _prompts_show(args) -> None:
    from distill.datagen import load_prompt

    print(load_prompt(args.name).text, end="")


def _prompts_render(args) -> None:
    from distill.datagen import load_prompt

    pf = load_prompt(args.name)
    try:
        row = json.loads(args.row)
    except json.JSONDecodeError as e:
        raise DistillError(f"--row: not valid JSON: {e.msg}") from None
    if not isinstance(row, dict):
        raise DistillError("--row must be a JSON object")
    for expanded in pf.expand(row, "--row", [args.task] if args.task else None):
        for m in pf.render(expanded, "--row"):
            print(f"[{m['role']}]\n{m['content']}\n")


def _add_filter(sub) -> None:
    p = sub.add_parser("filter", help="filter a generated dataset: keep, drop with reasons, report",
                       description="Run filter stages over --data; write OUT/kept, "
                       "OUT/dropped, OUT/report.md, report.json and funnel.png.")
    p.add_argument("--data", metavar="PATH", help="the data to filter, e.g. a generate output "
                   "(any form docs/dataset-format.md lists; required)")
    p.add_argument("--out", metavar="DIR", help="output folder (required)")
    positional_renamed(p, "in_dir", "--data")
    positional_renamed(p, "out_dir", "--out")
    p.add_argument("--config", help="filter YAML file or preset (cot, pot, instruction, "
                   "rejection-sampling); default: the preset for the input's prompt kind")
    p.add_argument("--stages", help="comma-separated stages to run, in order, e.g. "
                   "parse,verify,execute,vote,dedupe,quality,decontaminate")
    add_data_flags(p)
    add_overwrite(p)
    _add_executor(p, "tasks at a time per step (default: the cluster's CPUs)")
    p.set_defaults(func=_filter)


def _filter(args) -> None:
    from distill.filters.pipeline import run_filter

    require(args, "filter", "--data", "--out")
    result = run_filter(args.data, args.out, config=args.config,
                        stages=args.stages.split(",") if args.stages else None,
                        executor=args.executor, ray_address=args.ray_address,
                        ray_workers=args.ray_workers, data_options=options_of(args),
                        overwrite=args.overwrite)
    print(f"{result.rows_in} rows in, {result.kept} kept, {result.dropped} dropped "
          f"-> {result.out}/kept, {result.out}/dropped, {result.out}/report.md")
    for s in result.stages:
        top = ", ".join(f"{r} ({c})" for r, c in list(s["reasons"].items())[:3])
        print(f"  {s['stage']:<14} {s['seen']:>7} seen {s['dropped']:>7} dropped  {top}")


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="run a recipe: evolve, generate, filter, publish, train, eval",
                       description="Run the stages a recipe declares, each in its own folder "
                       "under the run folder; a rerun skips finished stages and resumes the rest.")
    p.add_argument("recipe", help="recipe YAML file (see recipes/)")
    p.add_argument("--out", help="run folder (default: the recipe's 'out', else runs/NAME)")
    p.add_argument("--from", dest="from_stage", help="rerun from this stage on")
    p.add_argument("--until", dest="until_stage", help="stop after this stage")
    p.add_argument("--sweep", action="append", metavar="KEY=V1,V2",
                   help="run one variant per value of a recipe key (e.g. "
                   "train.num_train_epochs=1,3; repeatable; each key varies alone against the "
                   "first values); variants share the stages they do not change; writes sweep.md")
    p.set_defaults(func=_run)


def _run(args) -> None:
    from distill.recipe import run_recipe

    summary = run_recipe(args.recipe, args.out, from_stage=args.from_stage,
                         until_stage=args.until_stage, sweep=args.sweep)
    print(Path(summary["out"], summary.get("report", "summary.md")).read_text(), end="")


def _add_check(sub) -> None:
    p = sub.add_parser("check", help="find rows that repeat an id in a dataset folder",
                       description="Count the rows of a dataset folder whose id another row "
                       "already has (left by two writers at once); --repair rewrites the shards "
                       "holding them without the repeats, keeping each id's first row.")
    p.add_argument("folder", metavar="DIR", help="dataset folder (data/part-*.parquet)")
    p.add_argument("--repair", action="store_true", help="remove the repeated rows")
    p.set_defaults(func=_check)


def _check(args) -> int:
    from distill import io
    from distill.folders import lock

    folder = Path(args.folder)
    if not io.shard_paths(folder):
        raise DistillError(f"{folder}: not a dataset folder (no data/part-*.parquet)")
    with lock(folder, "check"):
        repeated = io.duplicate_ids(folder)
        extra = sum(repeated.values()) - len(repeated)
        if not repeated:
            print(f"{folder}: no repeated ids")
            return 0
        if not args.repair:
            print(f"{folder}: {extra} rows repeat the id of another row ({len(repeated)} ids); "
                  f"run `distill check {folder} --repair` to keep the first row of each")
            return 1
        removed = io.drop_duplicates(folder)
        manifest = io.read_manifest(folder)
        if manifest and "rows" in manifest:
            io.write_manifest(folder, {**manifest, "rows": len(io.read_ids(folder))})
        print(f"{folder}: removed {removed} rows that repeated an id; each id keeps its first row")
        return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="distill", description="Distill reasoning into small models: generate, filter, "
        "publish, train, evaluate.")
    parser.add_argument("--version", action="version", version=f"distill {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_generate(sub)
    _add_filter(sub)
    _add_run(sub)
    _add_check(sub)
    _add_prompts(sub)
    # Each stage adds its own verbs; imported here so ``import distill`` stays light.
    from distill.eval.cli import register as add_eval
    from distill.publish.cli import register as add_publish
    from distill.sft.cli import register as add_train
    from distill.sft.kd.capture_cli import register as add_logits
    from distill.sft.student.cli import register as add_student

    add_publish(sub)
    add_train(sub)
    add_logits(sub)
    add_student(sub)
    add_eval(sub)
    return parser


def _version() -> str:
    from distill import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    take_positionals(args)
    try:
        code = args.func(args)  # None, or the exit code of a verb that reports a finding
    except DistillError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished shards are kept; rerun the same command to resume",
              file=sys.stderr)
        return 130
    finally:
        _leave_process_group()
    return code or 0


def _leave_process_group() -> None:
    """Under ``accelerate launch``: leave the process group before exit; left to the
    interpreter's teardown, its threads now and then abort a finished run ("terminate called
    without an active exception")."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
