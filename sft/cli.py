"""``distill train sft|kd|onpolicy`` (``gkd``: its old name): parse the method's config
fields and the run's inputs (``TrainInputs``), then call its train function
(``distill.sft.methods``). Every flag is a field of those dataclasses; trl is imported only
when a verb runs, so ``distill`` starts fast."""

from __future__ import annotations

import argparse
from functools import partial

VERBS = {
    "sft": {
        "help": "supervised fine-tuning with TRL, span-weighted loss",
        "description": "Fine-tune a student on a dataset folder (messages + completion [+ "
        "answer_span]) with TRL's SFTTrainer. Prompt tokens never count; reasoning and answer "
        "tokens are weighted apart. Every DistillSFTConfig field (SFTConfig, "
        "TrainingArguments, distill's) is a flag. Rerunning the same command resumes from the "
        "last checkpoint in --out.",
        "epilog": "example: distill train sft --data runs/filtered/kept --out runs/student "
        "--answer-weight 2 --max_steps 200 --learning_rate 1e-4"},
    "kd": {
        "help": "logit distillation: match the teacher's token distributions (online teacher or "
        "offline top-k logits)",
        "description": "Distill a teacher's next-token distributions into a student on a dataset "
        "folder, with train sft's masks, span weights and recipes: per counted token, loss = "
        "alpha * KD + (1 - alpha) * CE, chunked so no (tokens, vocabulary) logits are built. "
        "The teacher runs frozen next to the student (--teacher), or its top-k log-probs come "
        "from distill logits capture (--offline-logits). Teacher and student must share a "
        "tokenizer (padded vocabulary sizes may differ). Every DistillKDConfig field is a flag.",
        "epilog": "example: distill train kd --student student --teacher teacher --data "
        "runs/x/kept --out runs/kd --loss forward_kl --kd-temperature 2 --alpha 0.5 "
        "--max_steps 200"},
    "onpolicy": {
        "help": "on-policy distillation (TRL DistillationTrainer): the student learns from the "
        "teacher on its own samples",
        "description": "On-policy distillation with TRL's DistillationTrainer: each step, with "
        "probability lmbda the student samples completions for the batch's prompts "
        "(transformers, or vLLM with --use-vllm / --vllm-server-url), else (with --seq-kd) "
        "the teacher does, else the dataset's completions are used; the loss is the "
        "generalized Jensen-Shannon divergence (beta: 0 forward KL, 1 reverse KL) between "
        "teacher and student on the completion tokens. The teacher is --teacher MODEL or "
        "--teacher-server-url URL (vllm serve). Every DistillOnPolicyConfig field "
        "(DistillationConfig, distill's) is a flag; --temperature is the sampling temperature.",
        "epilog": "example: distill train onpolicy --student student --teacher teacher --data "
        "runs/x/kept --out runs/onpolicy --lmbda 0.5 --beta 0.5 --max-completion-length 256 "
        "--max_steps 200"},
    "gkd": {
        "help": "old name of train onpolicy (runs it)",
        "description": "The old name of distill train onpolicy: same flags, runs it."},
}
HELP = {"-h", "--help", "--help-config"}


class PassThroughParser(argparse.ArgumentParser):
    """Keeps the arguments it does not know in ``argv`` instead of failing on them: the verb
    parses them itself."""

    def parse_known_args(self, args=None, namespace=None):
        namespace, extra = super().parse_known_args(args, namespace)
        namespace.argv = list(getattr(namespace, "argv", None) or []) + extra
        return namespace, []


def register(sub) -> None:
    p = sub.add_parser("train", help="train a student on a distilled dataset")
    verbs = p.add_subparsers(dest="verb", required=True, parser_class=PassThroughParser)
    for name, text in VERBS.items():
        verb = verbs.add_parser(name, add_help=False, allow_abbrev=False, **text)
        verb.set_defaults(func=partial(_train, verb))


def _train(verb: argparse.ArgumentParser, args) -> None:
    from distill.data import options_of
    from distill.sft.data import read_data
    from distill.sft.train import read_inputs

    if not HELP & set(args.argv):
        first = read_inputs(args.argv)
        for data in (first.data, first.eval_data):
            if data is not None:
                read_data(data, options_of(first))  # fail fast, before trl's slow import
    from distill.sft.config import parse_train_args
    from distill.sft.methods import method

    config_class, train = method(args.verb)
    inputs, config = parse_train_args(config_class, args.argv, prog=verb.prog,
                                      description=verb.description, epilog=verb.epilog)
    result = train(inputs.student, inputs.data, inputs.out, config, eval_data=inputs.eval_data,
                   data_options=options_of(inputs))
    from accelerate import PartialState

    if PartialState().is_main_process:  # one summary under accelerate launch / torchrun
        print(result.summary())
