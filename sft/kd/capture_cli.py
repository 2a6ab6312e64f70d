"""``distill logits capture``: parse, build the training run's data settings, call
``capture_logits``."""

from __future__ import annotations

from distill.errors import DistillError
from distill.flags import add_data_flags, renamed
from distill.folders import add_overwrite
from distill.sft.cli import PassThroughParser
from distill.sft.kd.teacher import TEACHER_DTYPES


def register(sub) -> None:
    p = sub.add_parser("logits", help="offline teacher logits for distill train kd")
    verbs = p.add_subparsers(dest="verb", required=True, parser_class=PassThroughParser)
    c = verbs.add_parser(
        "capture", allow_abbrev=False, help="store the teacher's top-k log-probs per token",
        description="Run the teacher over a dataset folder, tokenized exactly as distill train "
        "kd will (same tokenizer, max_length, objective, weights: pass the training run's "
        "--config or --name value settings), and store the top-k ids (int32) and log-probs "
        "(float16) of every counted token: 6*k bytes per token before compression. Train from "
        "it with distill train kd --offline-logits OUT. Rerunning resumes. The teacher runs "
        "through transformers (--backend hf) or the vLLM engine (--backend vllm).",
        epilog="example: distill logits capture --teacher Qwen/Qwen2.5-7B-Instruct --student "
        "Qwen/Qwen2.5-0.5B-Instruct --data runs/x/kept --out runs/x/logits --top-k 64")
    c.add_argument("--teacher", required=True, help="teacher model (HF folder or hub id)")
    c.add_argument("--data", required=True, help="the training data (any form distill train "
                   "--data takes)")
    c.add_argument("--out", required=True, help="output folder (a dataset of top-k columns)")
    c.add_argument("--top-k", type=int, required=True, help="log-probs kept per token")
    c.add_argument("--student", help="the student to train: its tokenizer builds the sequences "
                   "and its vocabulary bounds the shared one (default: the teacher's tokenizer)")
    c.add_argument("--config", help="the training recipe YAML (its data settings are used)")
    c.add_argument("--backend", choices=("hf", "vllm"), default="hf", help="how the teacher "
                   "runs: hf (transformers forward passes, batched) or vllm (the offline engine's "
                   "prompt log-probs, a shard of sequences per call)")
    c.add_argument("--batch-size", type=int, default=8, help="sequences per teacher forward "
                   "(hf)")
    c.add_argument("--teacher-dtype", default="auto", choices=TEACHER_DTYPES,
                   help="dtype the teacher is loaded in ('auto': its checkpoint's)")
    c.add_argument("--teacher-device", help="teacher device, e.g. cuda:0 (default: cpu; hf)")
    renamed(c, "--dtype", "--teacher-dtype")
    renamed(c, "--device", "--teacher-device")
    c.add_argument("--restart", action="store_true", help="replace an existing capture in --out")
    add_data_flags(c)
    add_overwrite(c)
    c.set_defaults(func=_capture)


def _capture(args) -> None:
    from dataclasses import fields

    from distill.data import options_of
    from distill.sft.data import read_data

    read_data(args.data, options_of(args))  # fail fast, before the models load
    from distill.sft.config import DistillSFTConfig, build_config, load_train_config
    from distill.sft.kd.capture import capture_logits
    from distill.sft.kd.config import DistillKDConfig

    if args.batch_size < 1:
        raise DistillError(f"--batch-size must be >= 1, got {args.batch_size}")
    known = {f.name for f in fields(DistillSFTConfig)}
    recipe = {k: v for k, v in load_train_config(args.config, DistillKDConfig).items() if k in known}
    config = build_config(recipe, args.argv, output_dir=args.out)
    result = capture_logits(args.teacher, args.data, args.out, args.top_k, student=args.student,
                            config=config, batch_size=args.batch_size, dtype=args.teacher_dtype,
                            device=args.teacher_device, restart=args.restart,
                            data_options=options_of(args), overwrite=args.overwrite,
                            backend=args.backend)
    print(result.summary())
