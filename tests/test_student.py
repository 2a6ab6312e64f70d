"""``distill student design|init``: configs whose counted parameters are the built model's,
and students whose tensors are exactly the teacher's ones the report names."""

import json

import pytest
import torch
from tiny import build_tiny_model
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from distill.cli import main
from distill.errors import DistillError
from distill.models import count_parameters
from distill.sft.student.design import design_student, estimate_parameters, init_student

# SmolLM2-135M(-Instruct)'s shape, as its config.json states it.
SMOLLM2 = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 576,
           "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
           "num_key_value_heads": 3, "head_dim": 64, "vocab_size": 49152,
           "max_position_embeddings": 8192, "tie_word_embeddings": True,
           "rms_norm_eps": 1e-5, "rope_parameters": {"rope_theta": 100000.0,
                                                     "rope_type": "default"}}


def meta_numel(config) -> int:
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    path = tmp_path_factory.mktemp("smollm2") / "config.json"
    path.write_text(json.dumps(SMOLLM2))
    return path


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("teacher"), hidden=128, layers=4, heads=4)


@pytest.mark.parametrize("keep", ["depth", "width", "balanced"])
@pytest.mark.parametrize("size", [{"ratio": 2.0}, {"ratio": 4.0}, {"params": 50_000_000}])
def test_design_on_smollm2_counts_the_built_model(smollm2, keep, size):
    d = design_student(str(smollm2), keep=keep, **size)
    s, t = d.student, d.teacher
    assert d.teacher_params == estimate_parameters(t) == meta_numel(t)
    assert d.student_params == meta_numel(s)
    target = 134_515_008 / size["ratio"] if "ratio" in size else size["params"]
    assert d.target_params == pytest.approx(target, abs=1)
    assert abs(d.student_params / target - 1) < 0.1
    assert s.hidden_size % s.num_attention_heads == 0
    assert s.num_attention_heads % s.num_key_value_heads == 0
    assert s.head_dim == 64 and s.vocab_size == 49152 and s.tie_word_embeddings
    assert s.intermediate_size % 64 == 0
    if keep == "depth":
        assert s.num_hidden_layers == 30 and s.hidden_size < 576
    elif keep == "width":
        assert (s.hidden_size, s.intermediate_size, s.num_key_value_heads) == (576, 1536, 3)
        assert s.num_hidden_layers < 30
    else:
        assert s.num_hidden_layers < 30 and s.hidden_size < 576
    assert f"| parameters | 134,515,008 | {d.student_params:,} |" in d.table()


@pytest.mark.parametrize("model_type,extra", [
    ("llama", {"attention_bias": True, "mlp_bias": True, "tie_word_embeddings": False}),
    ("mistral", {"head_dim": 16}),
    ("qwen2", {}),
    ("qwen3", {"head_dim": 24, "attention_bias": True}),
])
def test_parameter_count_per_family(model_type, extra):
    config = AutoConfig.for_model(model_type, vocab_size=300, hidden_size=96,
                                  intermediate_size=200, num_hidden_layers=3,
                                  num_attention_heads=6, num_key_value_heads=2, **extra)
    assert estimate_parameters(config) == meta_numel(config) == count_parameters(config)
    d = design_student(config, ratio=2, multiple_of=16)
    assert d.student_params == meta_numel(d.student)
    assert d.student.model_type == model_type


def test_design_refuses_bad_requests(smollm2):
    with pytest.raises(DistillError, match="exactly one of --ratio and --params"):
        design_student(str(smollm2), ratio=2, params=10)
    with pytest.raises(DistillError, match="--ratio"):
        design_student(str(smollm2), ratio=0.5)
    with pytest.raises(DistillError, match="--params"):
        design_student(str(smollm2), params=10**12)
    with pytest.raises(DistillError, match="model_type 'gpt2'"):
        design_student(AutoConfig.for_model("gpt2"), ratio=2)
    with pytest.raises(DistillError, match="not a model config"):
        design_student(str(smollm2.parent / "missing"), ratio=2)


def test_design_cli_writes_a_loadable_config(smollm2, tmp_path, capsys):
    out = tmp_path / "design"
    assert main(["student", "design", "--teacher", str(smollm2), "--params", "50M",
                 "--keep", "depth", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    config = AutoConfig.from_pretrained(out)
    assert f"{meta_numel(config):,}" in printed and "| num_hidden_layers | 30 | 30 |" in printed
    assert (out / "design.md").read_text() in printed
    assert main(["student", "design", "--teacher", str(smollm2), "--ratio", "0.5"]) == 2


def _check_report(report, student, teacher):
    """Every student tensor is listed once, and is exactly what its entry says."""
    s_state, t_state = student.state_dict(), teacher.state_dict()
    assert sorted(e["tensor"] for e in report.tensors) == sorted(s_state)
    for e in report.tensors:
        tensor = s_state[e["tensor"]]
        assert list(tensor.shape) == e["shape"]
        if e["status"] == "copied":
            assert torch.equal(tensor, t_state[e["source"]])
        elif e["status"] == "truncated":
            src = t_state[e["source"]]
            assert list(src.shape) == e["source_shape"] and src.shape != tensor.shape
            assert torch.equal(tensor, src[tuple(slice(0, n) for n in tensor.shape)])
        elif e["status"] == "tied":
            assert torch.equal(tensor, s_state[e["source"]])
        else:
            assert e["status"] == "fresh" and e["source"] is None


def test_init_copies_and_truncates_exactly_what_it_reports(teacher, tmp_path):
    design = design_student(str(teacher), ratio=2, keep="balanced", multiple_of=16)
    design.save(tmp_path / "design")
    report = init_student(str(teacher), tmp_path / "design", tmp_path / "student")
    student = AutoModelForCausalLM.from_pretrained(tmp_path / "student")
    t_model = AutoModelForCausalLM.from_pretrained(teacher)
    assert sum(p.numel() for p in student.parameters()) == design.student_params
    _check_report(report, student, t_model)
    # uniform: first and last teacher blocks, in order, none twice
    assert report.layers[0] == 0 and report.layers[-1] == 3
    assert report.layers == sorted(set(report.layers))
    assert len(report.layers) == student.config.num_hidden_layers
    assert report.counts()["truncated"] > 0 and report.counts()["tied"] == 1
    saved = json.loads((tmp_path / "student" / "init_report.json").read_text())
    assert saved["tensors"] == report.tensors and saved["layers"] == report.layers
    assert "| `model.norm.weight` | truncated |" in (tmp_path / "student" / "init_report.md") \
        .read_text()
    tok = AutoTokenizer.from_pretrained(tmp_path / "student")
    assert tok.get_vocab() == AutoTokenizer.from_pretrained(teacher).get_vocab()
    ids = tok("The answer is 14.", return_tensors="pt")["input_ids"]
    assert torch.isfinite(student(input_ids=ids).logits).all()


def test_init_of_the_teachers_own_shape_is_the_teacher(teacher, tmp_path):
    report = init_student(str(teacher), teacher, tmp_path / "same")
    assert report.layers == [0, 1, 2, 3]
    assert report.counts() == {"copied": len(report.tensors) - 1, "truncated": 0, "fresh": 0,
                               "tied": 1}
    student = AutoModelForCausalLM.from_pretrained(tmp_path / "same")
    t_model = AutoModelForCausalLM.from_pretrained(teacher)
    ids = torch.tensor([[5, 17, 3, 99, 42]])
    assert torch.equal(student(input_ids=ids).logits, t_model(input_ids=ids).logits)


def test_init_given_layers_fresh_tensors_and_untied_head(teacher, tmp_path):
    config = AutoConfig.from_pretrained(teacher)
    config.num_hidden_layers, config.attention_bias = 2, True
    config.tie_word_embeddings = False
    config.save_pretrained(tmp_path / "cfg")
    report = init_student(str(teacher), tmp_path / "cfg" / "config.json", tmp_path / "s",
                          layers=[3, 1])
    by_name = {e["tensor"]: e for e in report.tensors}
    assert by_name["model.layers.0.self_attn.q_proj.weight"]["source"] == \
        "model.layers.3.self_attn.q_proj.weight"
    assert by_name["model.layers.1.mlp.up_proj.weight"]["source"] == \
        "model.layers.1.mlp.up_proj.weight"
    assert by_name["model.layers.0.self_attn.q_proj.bias"]["status"] == "fresh"
    assert by_name["lm_head.weight"]["source"] == "model.embed_tokens.weight"
    student = AutoModelForCausalLM.from_pretrained(tmp_path / "s")
    _check_report(report, student, AutoModelForCausalLM.from_pretrained(teacher))
    assert student.lm_head.weight is not student.model.embed_tokens.weight


def test_init_refuses_mismatches(teacher, tmp_path):
    config = AutoConfig.from_pretrained(teacher)
    config.num_hidden_layers = 2
    config.save_pretrained(tmp_path / "two")
    with pytest.raises(DistillError, match="--layers needs 2 teacher blocks"):
        init_student(str(teacher), tmp_path / "two", tmp_path / "x", layers=[0, 1, 2])
    with pytest.raises(DistillError, match="each in 0-3"):
        init_student(str(teacher), tmp_path / "two", tmp_path / "x", layers=[0, 4])
    config.vocab_size = 500
    config.save_pretrained(tmp_path / "vocab")
    with pytest.raises(DistillError, match="vocab_size 500"):
        init_student(str(teacher), tmp_path / "vocab", tmp_path / "x")


def test_init_cli(teacher, tmp_path, capsys):
    assert main(["student", "design", "--teacher", str(teacher), "--ratio", "3",
                 "--multiple-of", "16", "--out", str(tmp_path / "cfg")]) == 0
    assert main(["student", "init", "--teacher", str(teacher), "--config", str(tmp_path / "cfg"),
                 "--out", str(tmp_path / "student")]) == 0
    assert "tensors copied" in capsys.readouterr().out
    assert (tmp_path / "student" / "model.safetensors").exists()
