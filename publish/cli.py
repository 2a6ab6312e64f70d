"""The ``distill publish`` and ``distill show`` parsers; ``distill.cli`` calls ``register``."""

from __future__ import annotations

from distill.data import options_of
from distill.flags import add_data_flags, positional_renamed, renamed, require
from distill.folders import add_overwrite
from distill.publish.formats import FORMATS


def register(sub) -> None:
    p = sub.add_parser("publish", help="make a hub-ready dataset folder: splits, card, plots",
                       description="Write OUT: data/{split}-*.parquet, README.md (a dataset "
                       "card with the lineage, funnel, lengths and samples), funnel.png, "
                       "lengths.png, manifest.json. --data is a filter output (its kept/ is "
                       "published), a dataset folder or any data docs/dataset-format.md lists.")
    p.add_argument("--data", metavar="PATH", help="a filter output, a dataset folder, a "
                   "published folder, files or a hub id (required)")
    p.add_argument("--out", metavar="DIR", help="output folder (required)")
    positional_renamed(p, "in_dir", "--data")
    renamed(p, "--to", "--out")
    p.add_argument("--test-size", type=float, help="held-out problems (source_id): a fraction "
                   "in (0, 1) or a count; samples of one problem never straddle splits")
    p.add_argument("--split-column", help="a row column or source field whose value names the "
                   "split (e.g. split), instead of --test-size")
    p.add_argument("--format", default="messages", choices=FORMATS,
                   help="columns for trainers (default: messages)")
    p.add_argument("--seed", type=int, default=0, help="seed of the test-problem choice")
    p.add_argument("--license", default="other", help="license id for the card (default: other)")
    p.add_argument("--language", default="en", help="comma-separated language codes")
    p.add_argument("--name", help="dataset title in the card (default: the folder or repo name)")
    p.add_argument("--samples", type=int, default=3, help="samples shown in the card")
    p.add_argument("--no-metadata", action="store_true",
                   help="only the format's columns (no id, source_id, gold, answer, ...)")
    p.add_argument("--to-hub", metavar="REPO_ID", help="then push to this hub dataset repo "
                   "(needs a token: HF_TOKEN or `hf auth login`)")
    p.add_argument("--private", action="store_true", help="with --to-hub: a private repo")
    add_data_flags(p)
    add_overwrite(p)
    p.set_defaults(func=_publish)

    s = sub.add_parser("show", help="summarize a dataset folder; --html writes a browsable page",
                       description="Print rows, columns, the filter funnel, lengths and a few "
                       "samples of --data (a filter output, a dataset folder or a published "
                       "folder). --html FILE writes one self-contained page.")
    s.add_argument("--data", metavar="PATH", help="a filter output, a dataset folder, a "
                   "published folder (its --split), files or a hub id (required)")
    positional_renamed(s, "dir", "--data")
    s.add_argument("--samples", type=int, default=3, help="samples to print")
    s.add_argument("--html", metavar="FILE", help="write a self-contained HTML page")
    s.add_argument("--max-rows", type=int, default=1000, help="rows embedded in the page")
    add_data_flags(s)
    s.set_defaults(func=_show)


def _publish(args) -> None:
    from distill.publish.publish import publish

    require(args, "publish", "--data", "--out")
    result = publish(args.data, args.out, test_size=args.test_size,
                     split_column=args.split_column, format=args.format, seed=args.seed,
                     license=args.license,
                     language=[x.strip() for x in args.language.split(",") if x.strip()],
                     name=args.name, samples=args.samples, metadata=not args.no_metadata,
                     to_hub=args.to_hub, private=args.private, data_options=options_of(args),
                     overwrite=args.overwrite)
    print(result.summary())


def _show(args) -> None:
    from distill.publish.page import write_html
    from distill.publish.show import summary

    require(args, "show", "--data")
    options = options_of(args)
    print(summary(args.data, samples=args.samples, options=options))
    if args.html:
        print(f"wrote {write_html(args.data, args.html, max_rows=args.max_rows, options=options)}")
