"""``distill train sft``: parse, build a ``DistillSFTConfig``, call ``train_sft``.

Besides its own flags the verb takes any ``SFTConfig`` / ``TrainingArguments`` field as
``--name value`` (``--help-config`` lists them); trl is imported only when the verb runs."""

from __future__ import annotations

import argparse

from distill.errors import DistillError


class _PassThroughParser(argparse.ArgumentParser):
    """Keeps the arguments it does not know in ``trl_args`` instead of failing on them."""

    def parse_known_args(self, args=None, namespace=None):
        namespace, extra = super().parse_known_args(args, namespace)
        namespace.trl_args = list(getattr(namespace, "trl_args", None) or []) + extra
        return namespace, []


def register(sub) -> None:
    p = sub.add_parser("train", help="train a student on a distilled dataset")
    verbs = p.add_subparsers(dest="verb", required=True, parser_class=_PassThroughParser)
    s = verbs.add_parser(
        "sft", allow_abbrev=False, help="supervised fine-tuning with TRL, span-weighted loss",
        description="Fine-tune a student on a dataset folder (messages + completion [+ "
        "answer_span]) with TRL's SFTTrainer. Prompt tokens never count; reasoning and answer "
        "tokens are weighted apart. Any SFTConfig/TrainingArguments field works as "
        "--name value (see --help-config). Rerunning the same command resumes from the last "
        "checkpoint in --out.",
        epilog="example: distill train sft --data runs/filtered/kept --out runs/student "
        "--answer-weight 2 --max_steps 200 --learning_rate 1e-4")
    s.add_argument("--model", help="student: HF folder or hub id (default: the embedded "
                   "SmolLM2-135M-Instruct)")
    s.add_argument("--data", help="dataset folder, or a distill filter output (uses kept/)")
    s.add_argument("--out", help="output folder: checkpoints, the student, README.md card")
    s.add_argument("--config", help="recipe YAML: config fields, plus model/data/out/eval_data")
    s.add_argument("--eval-data", help="dataset folder to evaluate on")
    s.add_argument("--reasoning-weight", type=float, help="weight of reasoning tokens (1)")
    s.add_argument("--answer-weight", type=float, help="weight of answer tokens (1)")
    s.add_argument("--lora", action="store_true", default=None, help="train a LoRA adapter")
    s.add_argument("--restart", action="store_true", default=None,
                   help="delete checkpoints in --out and start over")
    s.add_argument("--help-config", action="store_true",
                   help="list every config field (SFTConfig, TrainingArguments, distill's)")
    s.set_defaults(func=_train_sft)


def _train_sft(args) -> None:
    from distill.sft.data import resolve_data_dir

    for folder in (args.data, args.eval_data):
        if folder is not None and not args.help_config:
            resolve_data_dir(folder)  # fail fast, before trl's slow import
    from distill.sft.config import build_config, config_help, load_recipe

    if args.help_config:
        print(config_help())
        return
    recipe = load_recipe(args.config)
    model = args.model or recipe.get("model")
    data = args.data or recipe.get("data")
    out = args.out or recipe.get("out")
    eval_data = args.eval_data or recipe.get("eval_data")
    if not data or not out:
        raise DistillError("distill train sft needs --data and --out (or data/out in --config)")
    config = build_config(recipe, args.trl_args, output_dir=out,
                          reasoning_weight=args.reasoning_weight,
                          answer_weight=args.answer_weight, use_lora=args.lora,
                          restart=args.restart)
    from distill.sft.train import train_sft

    print(train_sft(model, data, out, config, eval_data=eval_data).summary())
