"""``distill student design|init`` and ``distill analyze temperatures|compression``: parse,
then call ``distill.sft.student.design`` / ``distill.sft.student.analysis``."""

from __future__ import annotations

import argparse

from distill.flags import renamed
from distill.folders import add_overwrite

SUFFIXES = {"k": 1e3, "m": 1e6, "b": 1e9}


def _count(text: str) -> int:
    """``50000000``, ``50M``, ``1.5B``, ``800k``."""
    t = text.strip().lower().replace("_", "").replace(",", "")
    try:
        return int(float(t[:-1]) * SUFFIXES[t[-1]]) if t[-1:] in SUFFIXES else int(float(t))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count like 50000000, 50M or 1.5B, got "
                                         f"{text!r}") from None


def _list_of(kind):
    """A parser of comma-separated ``kind`` values."""
    def parse(text: str) -> list:
        try:
            return [kind(x) for x in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__} values, "
                                             f"got {text!r}") from None
    return parse


def register(sub) -> None:
    p = sub.add_parser("student", help="design a student config; initialize it from a teacher")
    verbs = p.add_subparsers(dest="verb", required=True)
    d = verbs.add_parser(
        "design", help="propose a smaller config of the teacher's architecture",
        description="Propose a student config for a size target and print teacher vs student "
        "with exact parameter counts (checked against the model built on the meta device).",
        epilog="example: distill student design --teacher runs/teacher --params 50M "
        "--keep balanced --out runs/student-config")
    d.add_argument("--teacher", help="teacher model folder, its config.json, or hub id "
                   "(default: the embedded SmolLM2-135M-Instruct)")
    size = d.add_mutually_exclusive_group(required=True)
    size.add_argument("--ratio", type=float, help="teacher parameters / student parameters")
    size.add_argument("--params", type=_count, help="student parameters, e.g. 50M")
    d.add_argument("--keep", default="balanced", choices=["depth", "width", "balanced"],
                   help="depth: keep the layer count, shrink width; width: keep width, drop "
                   "layers; balanced: shrink both by one factor (default)")
    d.add_argument("--multiple-of", type=int, default=64,
                   help="round the intermediate size to a multiple of this (default 64)")
    d.add_argument("--out", help="write the student's config.json (with design.md and "
                   "design.json) here")
    add_overwrite(d)
    d.set_defaults(func=_design)

    i = verbs.add_parser(
        "init", help="build a student from the teacher's weights",
        description="Copy the teacher's embeddings, a selection of its blocks, final norm and "
        "LM head into a student of --config, truncating tensors where the student is smaller; "
        "write the model, the teacher's tokenizer and init_report.md/json (which tensor came "
        "from where).",
        epilog="example: distill student init --teacher runs/teacher --config "
        "runs/student-config --out runs/student-init")
    i.add_argument("--teacher", help="teacher model folder or hub id (default: the embedded "
                   "SmolLM2-135M-Instruct)")
    i.add_argument("--config", required=True, help="student config: a folder with config.json "
                   "(e.g. from `distill student design --out`) or the file")
    i.add_argument("--out", required=True, help="output model folder")
    i.add_argument("--layers", type=_list_of(int), help="teacher block for each student block, e.g. "
                   "0,4,8,11 (default: spread evenly from first to last)")
    i.add_argument("--seed", type=int, default=0, help="seed of the fresh tensors")
    add_overwrite(i)
    i.set_defaults(func=_init)

    a = sub.add_parser("analyze", help="teacher temperature profile; compression table")
    verbs = a.add_subparsers(dest="verb", required=True)
    t = verbs.add_parser(
        "temperatures", help="the teacher's next-token distribution at several temperatures",
        description="Entropy, effective support and top-1/5/10 mass of the teacher's "
        "next-token distributions on some texts, at each temperature: to pick a KD temperature.")
    t.add_argument("--teacher", help="teacher (default: the embedded SmolLM2-135M-Instruct)")
    renamed(t, "--model", "--teacher")
    t.add_argument("--texts", required=True, help=".txt (one text per line), jsonl/parquet with "
                   "a text or completion field, or a dataset folder")
    t.add_argument("--temperatures", type=_list_of(float), default=[0.5, 1.0, 2.0, 4.0, 8.0],
                   help="comma-separated (default 0.5,1,2,4,8)")
    t.add_argument("--max-texts", type=int, default=64)
    t.add_argument("--max-length", type=int, default=256, help="tokens per text")
    t.add_argument("--out", help="write temperatures.md and temperatures.json here")
    add_overwrite(t)
    t.set_defaults(func=_temperatures)

    c = verbs.add_parser(
        "compression", help="params, accuracy, retention and speed-up of eval runs",
        description="A compression table from `distill eval` output folders: the teacher's run "
        "(--teacher, else the first) and its students.")
    c.add_argument("runs", nargs="+", metavar="RUN_DIR")
    c.add_argument("--teacher", help="the teacher's eval run (default: the first RUN_DIR)")
    c.add_argument("--out", help="write compression.md and compression.json here")
    add_overwrite(c)
    c.set_defaults(func=_compression)


def _design(args) -> None:
    from distill.sft.student.design import design_student

    design = design_student(args.teacher, ratio=args.ratio, params=args.params, keep=args.keep,
                            multiple_of=args.multiple_of)
    print(design.table(), end="")
    if args.out:
        print(f"-> {design.save(args.out, overwrite=args.overwrite)}")


def _init(args) -> None:
    from distill.sft.student.design import init_student

    print(init_student(args.teacher, args.config, args.out, layers=args.layers,
                       seed=args.seed, overwrite=args.overwrite).summary())


def _temperatures(args) -> None:
    from distill.sft.student.analysis import (
        temperature_profile,
        temperatures_markdown,
        write_analysis,
    )

    profile = temperature_profile(args.teacher, args.texts, temperatures=args.temperatures,
                                  max_texts=args.max_texts, max_length=args.max_length)
    text = temperatures_markdown(profile)
    print(text, end="")
    if args.out:
        md = write_analysis(args.out, "temperatures", profile, text,
                            inputs=[args.texts, args.teacher], overwrite=args.overwrite)
        print(f"-> {md}")


def _compression(args) -> None:
    from distill.sft.student.analysis import compression_markdown, compression_table, write_analysis

    table = compression_table(args.runs, teacher=args.teacher)
    text = compression_markdown(table)
    print(text, end="")
    if args.out:
        md = write_analysis(args.out, "compression", table, text,
                            inputs=[*args.runs, args.teacher], overwrite=args.overwrite)
        print(f"-> {md}")

