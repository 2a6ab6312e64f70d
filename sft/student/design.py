"""Student design and initialization from a teacher.

``design_student`` proposes a smaller config of the teacher's architecture for a size target:
width shrinks by whole attention heads (the teacher's head_dim and hidden-per-head are kept,
so the hidden size stays divisible by the heads), key/value heads keep the teacher's GQA group
size as closely as a divisor of the heads allows, the intermediate size keeps the teacher's
ratio to the hidden size (rounded to a multiple). Its parameter count is computed from the
shapes and checked against ``sum(p.numel())`` of the model built on the meta device.

``init_student`` builds that student from the teacher's weights: embeddings, a selection of
teacher blocks, final norm and LM head are copied, truncated to the student's shape where it
is smaller (leading rows/columns: whole heads, since head_dim is kept), or left freshly
initialized, and a report says which tensor came from where.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from distill.errors import DistillError
from distill.folders import claim
from distill.models import count_parameters, resolve_model
from distill.sft.kd.features import uniform_layers

KEEP = ("depth", "width", "balanced")
DESIGN_KIND, INIT_KIND = "student-design", "student-init"  # what their folders' markers say
# Per family: which attention projections have biases (a config field, True or False) and
# whether q/k get a per-head RMSNorm. Others are refused rather than miscounted.
FAMILIES = {
    "llama": {"qkv_bias": "attention_bias", "o_bias": "attention_bias", "mlp_bias": "mlp_bias",
              "qk_norm": False},
    "mistral": {"qkv_bias": False, "o_bias": False, "mlp_bias": False, "qk_norm": False},
    "qwen2": {"qkv_bias": True, "o_bias": False, "mlp_bias": False, "qk_norm": False},
    "qwen3": {"qkv_bias": "attention_bias", "o_bias": "attention_bias", "mlp_bias": False,
              "qk_norm": True},
}
SHAPE_FIELDS = ("num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads",
                "head_dim", "intermediate_size", "vocab_size", "tie_word_embeddings")


def load_model_config(source):
    """A transformers config from a model folder, a ``config.json`` file, a hub id, a config
    object, or None (the embedded default teacher)."""
    from transformers import AutoConfig, PretrainedConfig

    if isinstance(source, PretrainedConfig):
        return source
    path = resolve_model(None if source is None else str(source))
    try:
        return AutoConfig.from_pretrained(path)
    except (OSError, ValueError, KeyError) as e:
        raise DistillError(f"{source}: not a model config ({str(e).splitlines()[0]})") from None


def _family(config) -> dict:
    family = FAMILIES.get(config.model_type)
    if family is None:
        raise DistillError(f"student design supports {', '.join(FAMILIES)} models; "
                           f"got model_type {config.model_type!r}")
    return family


def _flag(config, value) -> bool:
    return bool(getattr(config, value, False)) if isinstance(value, str) else value


def head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def estimate_parameters(config) -> int:
    """Parameters of a decoder of ``config``'s family, from its shapes alone (tied embeddings
    counted once); ``distill.models.count_parameters`` builds the model to count them."""
    fam = _family(config)
    h, v, i = config.hidden_size, config.vocab_size, config.intermediate_size
    q = config.num_attention_heads * head_dim(config)
    kv = (config.num_key_value_heads or config.num_attention_heads) * head_dim(config)
    attn = h * q + 2 * h * kv + q * h
    attn += (q + 2 * kv) * _flag(config, fam["qkv_bias"]) + h * _flag(config, fam["o_bias"])
    attn += 2 * head_dim(config) * fam["qk_norm"]
    mlp = 3 * h * i + (2 * i + h) * _flag(config, fam["mlp_bias"])
    layer = attn + mlp + 2 * h  # two RMSNorms
    embed = v * h * (1 if config.tie_word_embeddings else 2)
    return embed + config.num_hidden_layers * layer + h  # + final norm



@dataclass
class StudentDesign:
    teacher: object  # transformers config
    student: object
    teacher_params: int
    student_params: int
    target_params: int
    keep: str
    notes: list[str] = field(default_factory=list)

    def table(self) -> str:
        """Teacher vs student, as a markdown table."""
        rows = [(name, getattr(self.teacher, name, None), getattr(self.student, name, None))
                for name in SHAPE_FIELDS]
        rows.append(("parameters", f"{self.teacher_params:,}", f"{self.student_params:,}"))
        lines = ["| | teacher | student |", "|---|---:|---:|"]
        lines += [f"| {n} | {t} | {s} |" for n, t, s in rows]
        off = self.student_params / self.target_params - 1
        lines += ["", (f"target {self.target_params:,} parameters (keep {self.keep}); student "
                  f"{self.student_params:,} ({off:+.1%}), {self.compression:.2f}x smaller than "
                  "the teacher; count checked against the model built on the meta device.")]
        return "\n".join(lines + self.notes) + "\n"

    @property
    def compression(self) -> float:
        return self.teacher_params / self.student_params

    def save(self, out: str | Path, overwrite: bool = False) -> Path:
        """Write the student's ``config.json``, ``design.md`` and ``design.json`` (the
        parameter counts) to folder ``out``, which it claims (see ``distill.folders``)."""
        out = Path(out)
        with claim(out, "student design", DESIGN_KIND, marker="design.json",
                   overwrite=overwrite):
            self.student.save_pretrained(out)
            (out / "design.md").write_text(self.table())
            (out / "design.json").write_text(json.dumps(
                {"kind": DESIGN_KIND, "keep": self.keep, "target_params": self.target_params,
                 "student_params": self.student_params,
                 "teacher_params": self.teacher_params}, indent=2) + "\n")
        return out / "config.json"


def design_student(teacher, *, ratio: float | None = None, params: int | None = None,
                   keep: str = "balanced", multiple_of: int = 64) -> StudentDesign:
    """A student config of ``teacher``'s family (config source: see ``load_model_config``) with about
    ``teacher_params / ratio`` or ``params`` parameters. ``keep``: ``depth`` keeps the layer
    count and shrinks width, ``width`` keeps width and drops layers, ``balanced`` shrinks both
    by the same factor. The candidate nearest the target (in log scale) wins."""
    if (ratio is None) == (params is None):
        raise DistillError("student design needs exactly one of --ratio and --params")
    if keep not in KEEP:
        raise DistillError(f"--keep must be one of {', '.join(KEEP)}, got {keep!r}")
    if multiple_of < 1:
        raise DistillError(f"--multiple-of must be >= 1, got {multiple_of}")
    config = load_model_config(teacher)
    teacher_params = estimate_parameters(config)
    if ratio is not None and ratio < 1:
        raise DistillError(f"--ratio is teacher size / student size and must be >= 1, got {ratio}")
    target = int(teacher_params / ratio) if ratio is not None else int(params)
    if target < 1 or target > teacher_params:
        raise DistillError(f"--params must be between 1 and the teacher's {teacher_params:,}, "
                           f"got {target:,}")
    heads, layers = config.num_attention_heads, config.num_hidden_layers
    if config.hidden_size % heads:
        raise DistillError(f"teacher hidden_size {config.hidden_size} is not divisible by its "
                           f"{heads} attention heads")
    shapes = set()
    for n in range(1, heads + 1):
        if keep in ("depth", "balanced"):
            shapes.add((n, layers if keep == "depth" else max(1, round(layers * n / heads))))
    for n_layers in range(1, layers + 1):
        if keep in ("width", "balanced"):
            shapes.add((heads if keep == "width" else max(1, round(heads * n_layers / layers)),
                        n_layers))
    candidates = [_shrink(config, n, n_layers, multiple_of) for n, n_layers in sorted(shapes)]
    best = min(candidates, key=lambda c: (abs(math.log(estimate_parameters(c) / target)),
                                          -c.num_hidden_layers, -c.hidden_size))
    counted, built = estimate_parameters(best), count_parameters(best)
    if counted != built:
        raise DistillError(f"parameter count {counted:,} differs from the built model's "
                           f"{built:,} ({best.model_type}): this family's layout is not the one "
                           "student design assumes")
    notes = []
    if abs(counted / target - 1) > 0.1:
        notes.append(f"\nnote: the nearest student keeping {keep} is {counted / target - 1:+.0%} "
                     "off the target; another --keep may get closer.")
    return StudentDesign(config, best, teacher_params, counted, target, keep, notes)


def _shrink(config, n_heads: int, n_layers: int, multiple_of: int):
    """``config`` with ``n_heads`` heads (hidden = n_heads x the teacher's hidden per head) and
    ``n_layers`` blocks."""
    heads = config.num_attention_heads
    kv_teacher = config.num_key_value_heads or heads
    hidden = n_heads * (config.hidden_size // heads)
    want_kv = n_heads * kv_teacher / heads
    kv = min((d for d in range(1, n_heads + 1) if n_heads % d == 0),
             key=lambda d: (abs(d - want_kv), -d))
    if hidden == config.hidden_size:
        inter = config.intermediate_size
    else:
        inter = max(multiple_of, round(config.intermediate_size * hidden / config.hidden_size
                                       / multiple_of) * multiple_of)
    data = config.to_dict()
    data.update(num_attention_heads=n_heads, num_key_value_heads=kv, hidden_size=hidden,
                head_dim=head_dim(config), intermediate_size=inter, num_hidden_layers=n_layers)
    if isinstance(data.get("layer_types"), list):
        data["layer_types"] = [data["layer_types"][j]
                               for j in uniform_layers(config.num_hidden_layers, n_layers)]
    data.pop("_name_or_path", None)
    return type(config).from_dict(data)


# --- init from the teacher ---------------------------------------------------------------

LAYER_KEY = re.compile(r"(\.layers\.)(\d+)(\.)")


@dataclass
class InitReport:
    out: Path
    teacher: str
    layers: list[int]  # teacher block of each student block
    tensors: list[dict]  # {tensor, status, source, shape, source_shape}

    def counts(self) -> dict[str, int]:
        out = {"copied": 0, "truncated": 0, "fresh": 0, "tied": 0}
        for t in self.tensors:
            out[t["status"]] += 1
        return out

    def summary(self) -> str:
        c = self.counts()
        return (f"{self.out}: student from {self.teacher}, teacher blocks {self.layers}; "
                f"{c['copied']} tensors copied, {c['truncated']} truncated, {c['fresh']} fresh"
                + (f", {c['tied']} tied" if c["tied"] else "")
                + f" (report: {self.out / 'init_report.md'})")

    def markdown(self) -> str:
        lines = ["# Student initialized from the teacher", "",
                 f"teacher: `{self.teacher}`", "student block -> teacher block: "
                 + ", ".join(f"{i}->{t}" for i, t in enumerate(self.layers)), "",
                 "| tensor | status | from | shape | teacher shape |", "|---|---|---|---|---|"]
        lines += [f"| `{t['tensor']}` | {t['status']} | {t['source'] or '-'} | "
                  f"{t['shape']} | {t['source_shape'] or '-'} |" for t in self.tensors]
        return "\n".join(lines) + "\n"


def init_student(teacher, config, out: str | Path, *, layers: list[int] | None = None,
                 seed: int = 0, overwrite: bool = False) -> InitReport:
    """Build the student of ``config`` (a config source, see ``load_model_config``) from
    ``teacher``'s weights (a model folder or hub id; None: the embedded default) and write it,
    the teacher's tokenizer, ``init_report.json`` and ``init_report.md`` to ``out`` (claimed:
    see ``distill.folders``). ``layers``: the teacher block each student block starts from
    (default: uniform)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    teacher_path = resolve_model(None if teacher is None else str(teacher))
    t_config, s_config = load_model_config(teacher_path), load_model_config(config)
    if t_config.model_type != s_config.model_type:
        raise DistillError(f"student config is a {s_config.model_type!r} model, the teacher a "
                           f"{t_config.model_type!r} one: init copies tensors by name")
    if t_config.vocab_size != s_config.vocab_size:
        raise DistillError(f"student vocab_size {s_config.vocab_size} differs from the "
                           f"teacher's {t_config.vocab_size}: the student uses its tokenizer")
    n_t, n_s = t_config.num_hidden_layers, s_config.num_hidden_layers
    if layers is None:
        layers = uniform_layers(n_t, n_s)
    if len(layers) != n_s or not all(0 <= t < n_t for t in layers):
        raise DistillError(f"--layers needs {n_s} teacher blocks (one per student block), each "
                           f"in 0-{n_t - 1}; got {layers}")
    t_model = AutoModelForCausalLM.from_pretrained(teacher_path, dtype="auto")
    t_state = t_model.state_dict()
    torch.manual_seed(seed)
    student = AutoModelForCausalLM.from_config(s_config, dtype=t_model.dtype)
    s_state = student.state_dict()
    s_embed, s_tied = _embedding_names(student)
    t_embed, t_tied = _embedding_names(t_model)
    entries = []
    with torch.no_grad():
        for name, tensor in s_state.items():
            if name == s_tied:
                entries.append(_entry(name, "tied", s_embed, tensor))
                continue
            source = LAYER_KEY.sub(lambda m: f"{m[1]}{layers[int(m[2])]}{m[3]}", name)
            if source == t_tied:  # an untied student head from a tied teacher: its embedding
                source = t_embed
            source = source if source in t_state else None
            status = "fresh"
            if source is not None:
                src = t_state[source]
                if src.shape == tensor.shape:
                    tensor.copy_(src)
                    status = "copied"
                elif src.dim() == tensor.dim() and all(
                        s <= t for s, t in zip(tensor.shape, src.shape)):
                    tensor.copy_(src[tuple(slice(0, s) for s in tensor.shape)])
                    status = "truncated"
            entries.append(_entry(name, status, source if status != "fresh" else None, tensor,
                                  t_state[source].shape if status != "fresh" else None))
    out = Path(out)
    with claim(out, "student init", INIT_KIND, marker="init_report.json",
               inputs=[teacher_path, config if isinstance(config, (str, Path)) else None],
               overwrite=overwrite):
        student.save_pretrained(out)
        AutoTokenizer.from_pretrained(teacher_path).save_pretrained(out)
        if t_model.generation_config is not None:
            t_model.generation_config.save_pretrained(out)
        report = InitReport(out, str(teacher_path), list(layers), entries)
        (out / "init_report.json").write_text(json.dumps(
            {"kind": INIT_KIND, "teacher": report.teacher, "layers": report.layers,
             "counts": report.counts(), "tensors": entries}, indent=2) + "\n")
        (out / "init_report.md").write_text(report.markdown())
    return report


def _entry(name, status, source, tensor, source_shape=None) -> dict:
    return {"tensor": name, "status": status, "source": source, "shape": list(tensor.shape),
            "source_shape": list(source_shape) if source_shape is not None else None}


def _embedding_names(model) -> tuple[str, str | None]:
    """Names of the input-embedding weight and, when it is the same tensor, of the output one."""
    names = {id(m): n for n, m in model.named_modules()}
    embed = model.get_input_embeddings()
    head = model.get_output_embeddings()
    tied = head is not None and head.weight is embed.weight
    return names[id(embed)] + ".weight", names[id(head)] + ".weight" if tied else None
