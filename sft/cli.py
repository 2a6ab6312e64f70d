"""``distill train sft``: parse, build a ``DistillSFTConfig``, call ``train_sft``.

Besides its own flags the verb takes any ``SFTConfig`` / ``TrainingArguments`` field as
``--name value`` (``--help-config`` lists them); trl is imported only when the verb runs."""

from __future__ import annotations

import argparse

from distill.errors import DistillError


class PassThroughParser(argparse.ArgumentParser):
    """Keeps the arguments it does not know in ``trl_args`` instead of failing on them."""

    def parse_known_args(self, args=None, namespace=None):
        namespace, extra = super().parse_known_args(args, namespace)
        namespace.trl_args = list(getattr(namespace, "trl_args", None) or []) + extra
        return namespace, []


def register(sub) -> None:
    p = sub.add_parser("train", help="train a student on a distilled dataset")
    verbs = p.add_subparsers(dest="verb", required=True, parser_class=PassThroughParser)
    s = verbs.add_parser(
        "sft", allow_abbrev=False, help="supervised fine-tuning with TRL, span-weighted loss",
        description="Fine-tune a student on a dataset folder (messages + completion [+ "
        "answer_span]) with TRL's SFTTrainer. Prompt tokens never count; reasoning and answer "
        "tokens are weighted apart. Any SFTConfig/TrainingArguments field works as "
        "--name value (see --help-config). Rerunning the same command resumes from the last "
        "checkpoint in --out.",
        epilog="example: distill train sft --data runs/filtered/kept --out runs/student "
        "--answer-weight 2 --max_steps 200 --learning_rate 1e-4")
    _add_inputs(s)
    s.set_defaults(func=_train_sft)
    k = verbs.add_parser(
        "kd", allow_abbrev=False, help="logit distillation: match the teacher's token "
        "distributions (online teacher or offline top-k logits)",
        description="Distill a teacher's next-token distributions into a student on a dataset "
        "folder, with train sft's masks, span weights and recipes: per counted token, loss = "
        "alpha * KD + (1 - alpha) * CE, chunked so no (tokens, vocabulary) logits are built. "
        "The teacher runs frozen next to the student (--teacher), or its top-k log-probs come "
        "from distill logits capture (--offline-logits). Teacher and student must share a "
        "tokenizer (padded vocabulary sizes may differ). Any DistillKDConfig/SFTConfig field "
        "works as --name value (see --help-config).",
        epilog="example: distill train kd --model student --teacher teacher --data runs/x/kept "
        "--out runs/kd --loss forward_kl --temperature 2 --alpha 0.5 --max_steps 200")
    _add_inputs(k)
    k.add_argument("--teacher", help="teacher model (HF folder or hub id), run online")
    k.add_argument("--teachers", help="several online teachers, comma-separated: distill the "
                   "mixture of their distributions (one tokenizer)")
    k.add_argument("--teacher-aggregation", choices=["average", "fixed", "learned"],
                   help="mixing weights of --teachers (average)")
    k.add_argument("--teacher-weights", help="weights of --teachers for 'fixed', e.g. 0.7,0.3")
    k.add_argument("--offline-logits", help="folder from distill logits capture for --data")
    k.add_argument("--loss", help="forward_kl (default), reverse_kl, jsd, bidirectional, tvd, "
                   "topk")
    k.add_argument("--temperature", type=float, help="softmax temperature of the KD term (1)")
    k.add_argument("--alpha", type=float, help="share of the KD term; 1 - alpha is CE (0.5)")
    k.add_argument("--top-k", type=int, help="use the teacher's k most likely tokens only")
    k.add_argument("--feature-layers", help="hidden-state transfer pairs STUDENT:TEACHER, e.g. "
                   "'0:3,1:7' (default with --feature-weight: uniform)")
    k.add_argument("--feature-weight", type=float, help="weight of the hidden-state term (0)")
    k.add_argument("--attention-layers", help="attention transfer pairs STUDENT:TEACHER "
                   "(default with --attention-weight: uniform); runs eager attention")
    k.add_argument("--attention-weight", type=float, help="weight of the attention term (0)")
    k.add_argument("--self-distill-decay", type=float, help="no teacher: distill from the "
                   "student's moving average with this decay, e.g. 0.999")
    k.set_defaults(func=_train_kd)
    g = verbs.add_parser(
        "gkd", allow_abbrev=False, help="generalized KD (TRL GKDTrainer): the student learns "
        "from the teacher on its own samples",
        description="On-policy distillation with TRL's GKDTrainer (experimental in TRL): each "
        "step, with probability lmbda the student samples completions for the batch's prompts, "
        "else (with --seq-kd) the teacher does, else the dataset's completions are used; the "
        "loss is the generalized Jensen-Shannon divergence (beta) between teacher and student "
        "on the completion tokens. Any GKDConfig/SFTConfig field works as --name value.",
        epilog="example: distill train gkd --model student --teacher teacher --data runs/x/kept "
        "--out runs/gkd --lmbda 0.5 --beta 0.5 --max_new_tokens 256 --max_steps 200")
    _add_inputs(g)
    g.add_argument("--teacher", help="teacher model (HF folder or hub id)")
    g.add_argument("--lmbda", type=float, help="share of steps on student samples (0.5)")
    g.add_argument("--beta", type=float, help="JSD interpolation: 0 forward KL, 1 reverse (0.5)")
    g.add_argument("--seq-kd", action="store_true", default=None,
                   help="off-policy steps train on teacher samples")
    g.add_argument("--temperature", type=float, help="sampling temperature (0.9)")
    g.add_argument("--max-new-tokens", type=int, help="tokens per sampled completion (128)")
    g.set_defaults(func=_train_gkd)


def _add_inputs(s) -> None:
    """The flags every train verb shares."""
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


def _train_sft(args) -> None:
    _train(args, "sft")


def _train_kd(args) -> None:
    _train(args, "kd", teacher=args.teacher, teachers=args.teachers,
           teacher_aggregation=args.teacher_aggregation, teacher_weights=args.teacher_weights,
           offline_logits=args.offline_logits, loss=args.loss,
           temperature=args.temperature, alpha=args.alpha, top_k=args.top_k,
           feature_layers=args.feature_layers, feature_weight=args.feature_weight,
           attention_layers=args.attention_layers, attention_weight=args.attention_weight,
           self_distill_decay=args.self_distill_decay)


def _train_gkd(args) -> None:
    _train(args, "gkd", teacher_model_name_or_path=args.teacher, lmbda=args.lmbda,
           beta=args.beta, seq_kd=args.seq_kd, temperature=args.temperature,
           max_new_tokens=args.max_new_tokens)


def _train(args, name: str, **overrides) -> None:
    from distill.sft.data import resolve_data_dir

    for folder in (args.data, args.eval_data):
        if folder is not None and not args.help_config:
            resolve_data_dir(folder)  # fail fast, before trl's slow import
    from distill.sft.config import build_config, config_help, load_train_config
    from distill.sft.methods import method

    config_class, train = method(name)
    if args.help_config:
        print(config_help(config_class))
        return
    recipe = load_train_config(args.config, config_class)
    model = args.model or recipe.get("model")
    data = args.data or recipe.get("data")
    out = args.out or recipe.get("out")
    eval_data = args.eval_data or recipe.get("eval_data")
    if not data or not out:
        raise DistillError(f"distill train {name} needs --data and --out (or data/out in "
                           "--config)")
    config = build_config(recipe, args.trl_args, config_class=config_class, output_dir=out,
                          reasoning_weight=args.reasoning_weight,
                          answer_weight=args.answer_weight, use_lora=args.lora,
                          restart=args.restart, **overrides)
    result = train(model, data, out, config, eval_data=eval_data)
    from accelerate import PartialState

    if PartialState().is_main_process:  # one summary under accelerate launch / torchrun
        print(result.summary())
