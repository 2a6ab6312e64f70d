"""Feature (FitNets) and attention transfer, against reference computations, on real tiny
Llamas: a teacher (2 blocks, hidden 64, 2 heads) and a narrower student sharing its tokenizer."""

import copy
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from distill.errors import DistillError
from distill.sft.kd.features import (
    FeatureDistillation,
    align_heads,
    attention_loss,
    linear_cka,
    parse_layer_map,
    require_eager,
    uniform_layers,
    use_eager,
)


@pytest.fixture(scope="module")
def pair(tiny_model):
    """Eager teacher and student (hidden 32, 1 head of 32, 3 blocks), a padded batch."""
    teacher = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation="eager")
    torch.manual_seed(1)
    config = LlamaConfig(vocab_size=teacher.config.vocab_size, hidden_size=32,
                         intermediate_size=64, num_hidden_layers=3, num_attention_heads=1,
                         num_key_value_heads=1, attn_implementation="eager")
    student = LlamaForCausalLM(config)
    ids = torch.randint(5, 300, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 5:] = 0  # right padding
    return teacher, student, ids, mask


def forward(model, ids, mask):
    return model(input_ids=ids, attention_mask=mask, output_hidden_states=True,
                 output_attentions=True)


def test_uniform_layers_and_explicit_maps():
    assert uniform_layers(30, 10) == [0, 3, 6, 10, 13, 16, 19, 23, 26, 29]
    assert uniform_layers(4, 4) == [0, 1, 2, 3]
    assert uniform_layers(5, 1) == [4]
    assert parse_layer_map(None, 3, 2) == {0: 0, 1: 0, 2: 1} == parse_layer_map("uniform", 3, 2)
    assert parse_layer_map("0:1, 2:0", 3, 2) == {0: 1, 2: 0}
    for bad, match in [("0:5", "out of range"), ("0-1", "STUDENT:TEACHER"),
                       ("0:1,0:0", "mapped twice")]:
        with pytest.raises(DistillError, match=match):
            parse_layer_map(bad, 3, 2, "--feature-layers")


@pytest.mark.parametrize("loss", ["mse", "cosine"])
def test_feature_loss_matches_a_reference(pair, loss):
    teacher, student, ids, mask = pair
    with torch.no_grad():
        t_out, s_out = forward(teacher, ids, mask), forward(student, ids, mask)
    fd = FeatureDistillation({0: 0, 2: 1}, 32, 64, loss=loss)
    got = fd(s_out.hidden_states, t_out.hidden_states, mask.bool())
    per_layer = []
    for s, t in ((0, 0), (2, 1)):
        proj = fd.projector.maps[str(s)]
        values = []
        for b in range(2):
            for i in range(7):
                if not mask[b, i]:
                    continue
                hs = proj(s_out.hidden_states[s + 1][b, i])
                ht = t_out.hidden_states[t + 1][b, i]
                values.append(((hs - ht) ** 2).mean() if loss == "mse" else
                              1 - torch.dot(hs, ht) / (hs.norm() * ht.norm()))
        per_layer.append(sum(values) / len(values))
    assert got.item() == pytest.approx(float(sum(per_layer).detach() / 2), rel=1e-5)


@pytest.mark.parametrize("projector", ["linear", "mlp"])
def test_gradients_flow_into_projections_and_student_only(pair, projector):
    teacher, student, ids, mask = pair
    fd = FeatureDistillation({1: 1}, 32, 64, projector=projector)
    with torch.no_grad():
        t_out = forward(teacher, ids, mask)
    student.zero_grad()
    fd(forward(student, ids, mask).hidden_states, t_out.hidden_states, mask.bool()).backward()
    assert fd.projector.maps["1"] is not None and len(list(fd.parameters())) >= 2
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in fd.parameters())
    assert student.model.layers[1].mlp.down_proj.weight.grad.abs().sum() > 0
    assert student.model.layers[2].mlp.down_proj.weight.grad is None  # after the mapped block
    assert all(p.grad is None for p in teacher.parameters())


def test_equal_sizes_need_no_projection():
    fd = FeatureDistillation({0: 0}, 64, 64)
    assert list(fd.parameters()) == []
    h = (torch.zeros(1, 3, 64), torch.randn(1, 3, 64))
    assert fd(h, h).item() == 0.0
    with pytest.raises(DistillError, match="projector"):
        FeatureDistillation({0: 0}, 32, 64, projector="conv")


def gram_cka(x, y):
    """CKA from the centered Gram matrices: HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))."""
    n = x.shape[0]
    h = torch.eye(n, dtype=torch.float64) - 1.0 / n
    k, m = h @ (x @ x.T) @ h, h @ (y @ y.T) @ h
    return (k * m).sum() / torch.sqrt((k * k).sum() * (m * m).sum())


def test_linear_cka_identity_invariances_and_reference():
    torch.manual_seed(0)
    x = torch.randn(2, 40, 16, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(16, 16, dtype=torch.float64))
    assert linear_cka(x, x).item() == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, x @ q).item() == pytest.approx(1.0, abs=1e-10)
    assert linear_cka(x, 3.5 * x @ q + 2.0).item() == pytest.approx(1.0, abs=1e-10)
    y = torch.randn(2, 40, 24, dtype=torch.float64)
    assert linear_cka(x, y).item() == pytest.approx(gram_cka(x.reshape(80, 16),
                                                             y.reshape(80, 24)).item(), rel=1e-9)
    assert linear_cka(x, y).item() < 0.5
    mask = torch.zeros(2, 40, dtype=torch.bool)
    mask[:, :30] = True
    assert linear_cka(x, y, mask).item() == pytest.approx(
        gram_cka(x[:, :30].reshape(60, 16), y[:, :30].reshape(60, 24)).item(), rel=1e-9)


def test_cka_of_mapped_layers(pair):
    teacher, _, ids, mask = pair
    with torch.no_grad():
        t_out = forward(teacher, ids, mask)
    fd = FeatureDistillation({0: 0, 1: 1}, 64, 64)
    same = fd.cka(t_out.hidden_states, t_out.hidden_states, mask.bool())
    assert same == pytest.approx({"0:0": 1.0, "1:1": 1.0})


def test_align_heads():
    a = torch.rand(2, 6, 4, 4)
    s, t = align_heads(torch.rand(2, 2, 4, 4), a)  # teacher 6 -> 2 groups of 3
    assert torch.allclose(t[:, 1], a[:, 3:6].mean(1))
    s, t = align_heads(torch.rand(2, 12, 4, 4), a)  # student 12: each teacher head twice
    assert torch.equal(t[:, 2], a[:, 1]) and torch.equal(t[:, 3], a[:, 1])
    st = torch.rand(2, 4, 4, 4)
    s, t = align_heads(st, a)  # 4 vs 6: both into gcd = 2 groups
    assert s.shape[1] == t.shape[1] == 2
    assert torch.allclose(s[:, 0], st[:, :2].mean(1)) and torch.allclose(t[:, 0], a[:, :3].mean(1))


@pytest.mark.parametrize("loss", ["kl", "mse"])
def test_attention_loss_matches_a_reference(pair, loss):
    teacher, student, ids, mask = pair
    with torch.no_grad():
        t_out, s_out = forward(teacher, ids, mask), forward(student, ids, mask)
    assert len(t_out.attentions) == 2 and t_out.attentions[0].shape == (2, 2, 7, 7)
    got = attention_loss(s_out.attentions, t_out.attentions, {0: 0, 2: 1}, mask.bool(), loss)
    per_layer = []
    for s, t in ((0, 0), (2, 1)):
        a_t = t_out.attentions[t].mean(1)  # the teacher's 2 heads averaged for 1 student head
        a_s = s_out.attentions[s][:, 0]
        rows = []
        for b in range(2):
            for q in range(7):
                if not mask[b, q]:
                    continue
                p, r = a_t[b, q], a_s[b, q]
                if loss == "kl":
                    rows.append(sum(p[k] * math.log(p[k] / r[k]) for k in range(7) if p[k] > 0))
                else:
                    rows.append(((p - r) ** 2).mean())
        per_layer.append(sum(rows) / len(rows))
    assert got.item() == pytest.approx(float(sum(per_layer) / 2), rel=1e-4)
    assert attention_loss(t_out.attentions, t_out.attentions, {0: 0, 1: 1}, mask.bool(),
                          loss).item() == pytest.approx(0.0, abs=1e-6)


def test_attention_needs_eager(tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model)  # sdpa by default
    with pytest.raises(DistillError, match="only eager attention returns.*'sdpa'"):
        require_eager(model, "student")
    out = model(input_ids=torch.tensor([[5, 6, 7]]), output_attentions=True)
    with pytest.raises(DistillError, match="got no attention maps"):
        attention_loss(out.attentions, out.attentions, {0: 0})
    use_eager(model, "student")
    out = model(input_ids=torch.tensor([[5, 6, 7]]), output_attentions=True)
    assert len(out.attentions) == 2 and out.attentions[0].shape == (1, 2, 3, 3)


def test_feature_and_attention_terms_train_a_student(pair):
    """A few optimizer steps on both terms lower both (projector trained with the student)."""
    teacher, _, ids, mask = pair
    teacher = copy.deepcopy(teacher)
    with torch.no_grad():  # sharper attention than a random model's near-uniform maps
        for layer in teacher.model.layers:
            layer.self_attn.q_proj.weight.mul_(30)
    torch.manual_seed(2)
    student = LlamaForCausalLM(LlamaConfig(
        vocab_size=teacher.config.vocab_size, hidden_size=32, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=1, num_key_value_heads=1,
        attn_implementation="eager"))
    layer_map = parse_layer_map(None, 2, 2)
    fd = FeatureDistillation(layer_map, 32, 64, loss="cosine")
    opt = torch.optim.AdamW([*student.parameters(), *fd.parameters()], lr=1e-2)
    with torch.no_grad():
        t_out = forward(teacher, ids, mask)
    history = []
    for _ in range(15):
        s_out = forward(student, ids, mask)
        f = fd(s_out.hidden_states, t_out.hidden_states, mask.bool())
        a = attention_loss(s_out.attentions, t_out.attentions, layer_map, mask.bool())
        opt.zero_grad()
        (f + a).backward()
        opt.step()
        history.append((f.item(), a.item()))
    assert history[-1][0] < 0.5 * history[0][0] and history[-1][1] < 0.5 * history[0][1]
