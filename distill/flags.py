"""The one CLI grammar's building blocks (see docs/cli.md): parsers that take no abbreviated
flags, and old spellings that keep working for one release with a one-line notice."""

from __future__ import annotations

import argparse

from distill.errors import DistillError
from distill.log import log

REMOVED_IN = "0.3"


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that refuses abbreviations (``--learning_rat`` is not
    ``--learning_rate``); its sub-commands are ``Parser`` too."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def add_subparsers(self, **kwargs):
        kwargs.setdefault("parser_class", Parser)
        return super().add_subparsers(**kwargs)


def deprecated(old: str, new: str) -> None:
    """Tell, on one stderr line, that ``old`` is going away in favour of ``new``."""
    log(f"distill: {old} is deprecated and will be removed in {REMOVED_IN}; use {new}")


class _Renamed(argparse.Action):
    def __init__(self, option_strings, dest, new, **kwargs):
        self.new = new
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        deprecated(option_string, self.new)
        setattr(namespace, self.dest, True if self.nargs == 0 else values)


def renamed(parser: argparse.ArgumentParser, old: str, new: str, **kwargs) -> None:
    """Accept the old flag ``old`` as the flag ``new`` already added to ``parser`` (hidden
    from help; using it prints the notice). ``kwargs``: ``type``, or ``nargs=0`` for a
    switch."""
    action = next(a for a in parser._actions if new in a.option_strings)
    parser.add_argument(old, dest=action.dest, action=_Renamed, new=new, **kwargs)


def positional_renamed(parser: argparse.ArgumentParser, name: str, new: str) -> None:
    """An old optional positional argument, hidden from help; ``take_positionals`` moves
    its value to the flag ``new``."""
    parser.add_argument(name, nargs="?", help=argparse.SUPPRESS)
    parser.set_defaults(**{f"_positional_{name}": new})


def take_positionals(args: argparse.Namespace) -> None:
    """Move the values of old positionals (``positional_renamed``) to their flags, with the
    notice; an error when both spellings are given."""
    for key, new in [(k, v) for k, v in vars(args).items() if k.startswith("_positional_")]:
        name = key.removeprefix("_positional_")
        value, dest = getattr(args, name), new.lstrip("-").replace("-", "_")
        if value is not None:
            if getattr(args, dest, None) is not None:
                raise SystemExit(f"distill: error: give {new} once (the positional {name.upper()}"
                                 f" is the old spelling of {new})")
            deprecated(f"the positional {name.upper()}", new)
            setattr(args, dest, value)
        delattr(args, name)
        delattr(args, key)


def require(args: argparse.Namespace, command: str, *flags: str, hint: str = "") -> None:
    """One error naming the ``flags`` that ``command`` needs and did not get. For flags with an
    old spelling, where argparse's ``required`` would not count the old spelling."""
    missing = [f for f in flags if getattr(args, f.lstrip("-").replace("-", "_"), None) is None]
    if missing:
        raise DistillError(f"distill {command} needs {' and '.join(missing)}{hint}")


def add_data_flags(parser: argparse.ArgumentParser, *names: str) -> None:
    """``--split``, ``--subset``, ``--revision`` and ``--field`` (or only ``names`` of them):
    how ``--data`` is read, the same in every command (the fields of
    ``distill.data.DataOptions``)."""
    from dataclasses import fields

    from distill.data import DataOptions

    for f in fields(DataOptions):
        if names and f.name not in names:
            continue
        if f.name == "field":
            parser.add_argument("--field", type=_field_spec, action="append", default=[],
                                metavar="TARGET=SOURCE_FIELD", help=f.metadata["help"])
        else:
            parser.add_argument(f"--{f.name}", default=f.default, help=f.metadata["help"])


def _field_spec(text: str) -> str:
    from distill.data import parse_fields

    try:
        parse_fields([text])
    except DistillError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def add_backend_flags(parser: argparse.ArgumentParser) -> None:
    """The options of the generation backend a command builds: vLLM's engine arguments, and
    the OpenAI client's key, timeout and retries; ``backend_flags_of`` reads them back."""
    parser.add_argument("--engine-arg", action="append", default=[], type=_engine_arg,
                        metavar="KEY=VALUE", help="vllm: one of vLLM's EngineArgs fields, "
                        "typed as vLLM types it (repeatable), e.g. max_model_len=4096, "
                        "quantization=awq, enforce_eager=true, hf_overrides='{...}'")
    parser.add_argument("--api-key-env", metavar="NAME", help="openai: the environment "
                        "variable holding the API key (default: none; the key is EMPTY, as "
                        "vllm serve without --api-key takes)")
    parser.add_argument("--request-timeout", type=float, metavar="SECONDS",
                        help="openai: seconds a request may take (default 600)")
    parser.add_argument("--max-retries", type=int, help="openai: retries of a request that "
                        "failed with 408/409/429/5xx or a lost connection (default 5)")


def backend_flags_of(args: argparse.Namespace) -> dict:
    """``backend_options`` and ``engine_args`` (the keyword arguments of ``generate`` and
    ``evaluate``) from ``add_backend_flags``' flags."""
    options = {key: value for key, value in (
        ("api_key_env", args.api_key_env), ("timeout", args.request_timeout),
        ("max_retries", args.max_retries)) if value is not None}
    return {"backend_options": options, "engine_args": dict(args.engine_arg) or None}


def _engine_arg(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip().replace("-", "_"), value
