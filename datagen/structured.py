"""Structured outputs: a prompt file's ``output`` constraint, ``{json_schema: {...}}``,
``{regex: "..."}`` or ``{choice: [...]}``. Backends constrain decoding to it (vLLM's
structured outputs, OpenAI's ``response_format``, xgrammar for transformers); ``parse`` reads
a completion back into the row's ``output`` and ``output_valid`` columns."""

from __future__ import annotations

import json
import re

from distill.errors import DistillError

KINDS = ("json_schema", "regex", "choice")


def check_output(spec, where: str) -> dict:
    """``spec`` if it is one valid constraint, else one line naming ``where`` and the key."""
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in KINDS:
        raise DistillError(f"{where}: must be a mapping with one key of {', '.join(KINDS)}, "
                           f"got {spec!r}")
    kind, value = next(iter(spec.items()))
    if kind == "json_schema":
        from jsonschema import Draft202012Validator, SchemaError

        if not isinstance(value, dict):
            raise DistillError(f"{where}.json_schema: must be a mapping (a JSON schema)")
        try:
            Draft202012Validator.check_schema(value)
        except SchemaError as e:
            raise DistillError(f"{where}.json_schema: not a valid JSON schema: "
                               f"{e.message}") from None
    elif kind == "regex":
        if not isinstance(value, str) or not value:
            raise DistillError(f"{where}.regex: must be a non-empty string")
        try:
            re.compile(value)
        except re.error as e:
            raise DistillError(f"{where}.regex: not a valid regex: {e}") from None
    elif (not isinstance(value, list) or not value
          or not all(isinstance(c, str) and c for c in value)):
        raise DistillError(f"{where}.choice: must be a non-empty list of non-empty strings")
    return spec


def parse(spec: dict, text: str) -> tuple[str | None, bool]:
    """A completion as the row's (``output``, ``output_valid``): for json_schema the parsed
    value as JSON (None where it does not parse) and whether it matches the schema; for regex
    and choice the text, and whether it matches (the whole text) or is one of the choices."""
    kind, value = next(iter(spec.items()))
    if kind == "json_schema":
        from jsonschema import Draft202012Validator

        try:
            parsed = json.loads(text, strict=False)  # xgrammar lets control characters in
        except ValueError:
            return None, False
        valid = Draft202012Validator(value).is_valid(parsed)
        return json.dumps(parsed, ensure_ascii=False), valid
    if kind == "regex":
        return text, re.fullmatch(value, text) is not None
    return text, text in value


def structured_fields(spec: dict) -> dict:
    """vLLM's structured outputs fields for a constraint (``StructuredOutputsParams``, or the
    ``structured_outputs`` of a ``vllm serve`` request)."""
    kind, value = next(iter(spec.items()))
    return {"json" if kind == "json_schema" else kind: value}


def vllm_params(spec: dict):
    """vLLM's ``StructuredOutputsParams`` for a constraint."""
    from vllm.sampling_params import StructuredOutputsParams

    return StructuredOutputsParams(**structured_fields(spec))


def hf_processor(spec: dict, tokenizer, vocab_size: int):
    """An xgrammar logits processor for transformers' ``generate`` (one use per call); one
    line when xgrammar is not installed."""
    try:
        import xgrammar as xgr
        from xgrammar.contrib.hf import LogitsProcessor
    except ImportError:
        raise DistillError("structured outputs (the prompt file's output) on --backend hf "
                           "need xgrammar: pip install xgrammar, or use --backend vllm") from None
    kind, value = next(iter(spec.items()))
    compiler = xgr.GrammarCompiler(xgr.TokenizerInfo.from_huggingface(tokenizer,
                                                                      vocab_size=vocab_size))
    if kind == "json_schema":
        grammar = compiler.compile_json_schema(json.dumps(value), any_whitespace=False)
    elif kind == "regex":
        grammar = compiler.compile_regex(value)
    else:
        grammar = compiler.compile_regex("|".join(re.escape(c) for c in value))
    return LogitsProcessor(grammar)
