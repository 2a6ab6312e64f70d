"""Multi-teacher aggregation: the mixture of the teachers' tempered distributions."""

import pytest
import torch

from distill.errors import DistillError
from distill.sft.kd.multi_teacher import TeacherMixture


@pytest.fixture
def logits():
    torch.manual_seed(0)
    return [torch.randn(2, 5, 11) * s for s in (1.0, 3.0, 0.5)]


def reference(logits, weights, temperature):
    probs = sum(w * torch.softmax(z / temperature, -1) for w, z in zip(weights, logits))
    return probs.log()


def test_average_and_fixed_weights_match_the_mixture(logits):
    got = TeacherMixture(3)(logits, temperature=2.0)
    assert torch.allclose(got, reference(logits, [1 / 3] * 3, 2.0), atol=1e-6)
    assert torch.allclose(got.exp().sum(-1), torch.ones(2, 5))
    fixed = TeacherMixture(3, "fixed", [2.0, 1.0, 1.0])
    assert torch.allclose(fixed.weights(), torch.tensor([0.5, 0.25, 0.25]))
    assert torch.allclose(fixed(logits), reference(logits, [0.5, 0.25, 0.25], 1.0), atol=1e-6)
    only_first = TeacherMixture(3, "fixed", [1.0, 0.0, 0.0])(logits)
    assert torch.allclose(only_first, logits[0].log_softmax(-1), atol=1e-6)


def test_learned_weights_are_softmax_normalized_and_trained(logits):
    mix = TeacherMixture(3, "learned")
    assert [p.shape for p in mix.parameters()] == [(3,)]
    assert torch.allclose(mix.weights(), torch.full((3,), 1 / 3))
    # a student that predicts teacher 1's distribution: KL(mixture || student) is lowest when
    # the mixture puts its weight on teacher 1, so the weights move there
    student_logp = logits[1].log_softmax(-1)
    opt = torch.optim.SGD(mix.parameters(), lr=1.0)
    for _ in range(50):
        target = mix(logits)
        loss = (target.exp() * (target - student_logp)).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    w = mix.weights().detach()
    assert w.sum().item() == pytest.approx(1.0) and w.argmax().item() == 1 and w[1] > 0.6
    assert torch.allclose(mix(logits), reference(logits, w, 1.0), atol=1e-5)


def test_bad_inputs(logits):
    with pytest.raises(DistillError, match="one tokenizer"):
        TeacherMixture(2)([logits[0], torch.randn(2, 5, 12)])
    with pytest.raises(DistillError, match="expected logits of 3 teachers"):
        TeacherMixture(3)(logits[:2])
    with pytest.raises(DistillError, match="need 3 non-negative"):
        TeacherMixture(3, "fixed", [1.0, -1.0, 1.0])
    with pytest.raises(DistillError, match="go with aggregation 'fixed'"):
        TeacherMixture(3, "average", [1.0, 1.0, 1.0])
    with pytest.raises(DistillError, match="must be one of"):
        TeacherMixture(3, "adaptive")


# --- the chunked KD loss against a mixture of teachers (distill.sft.kd.losses.MixtureTeacher)

def mixture_reference(hidden, head, t_hidden, t_heads, theta, labels, loss, temperature, alpha,
                      beta=0.5):
    """Float64 full-softmax loss: alpha * T^2 * D(mixture_T, student_T) + (1 - alpha) * CE."""
    logits = hidden @ head.T
    q = (logits / temperature).log_softmax(-1)
    w = theta.softmax(0)
    p = sum(wi * (h @ hd.T / temperature).softmax(-1) for wi, h, hd in zip(w, t_hidden, t_heads))
    log_p = p.log()
    if loss == "forward_kl":
        d = (p * (log_p - q)).sum(-1)
    elif loss == "reverse_kl":
        d = (q.exp() * (q - log_p)).sum(-1)
    elif loss == "jsd":
        m = beta * p + (1 - beta) * q.exp()
        d = beta * (p * (log_p - m.log())).sum(-1) + (1 - beta) * (q.exp() * (q - m.log())).sum(-1)
    else:
        d = 0.5 * (p - q.exp()).abs().sum(-1)
    ce = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    return (alpha * temperature ** 2 * d + (1 - alpha) * ce).mean()


@pytest.mark.parametrize("loss", ["forward_kl", "reverse_kl", "jsd", "tvd"])
def test_mixture_loss_and_gradients_match_a_float64_reference(loss):
    from distill.sft.kd.losses import DenseTeacher, MixtureTeacher, kd_loss

    torch.manual_seed(1)
    n, h, v = 13, 6, 17
    hidden, head = torch.randn(n, h), torch.randn(v, h)
    t_hidden = [torch.randn(n, h) * 2, torch.randn(n, h)]
    t_heads = [torch.randn(v, h), torch.randn(v + 3, h)]  # padded rows: only the first v count
    theta = torch.tensor([0.3, -0.4])
    labels = torch.randint(0, v, (n,))
    leaves = [x.clone().requires_grad_() for x in (hidden, head, theta)]
    mix = MixtureTeacher([DenseTeacher(a, b) for a, b in zip(t_hidden, t_heads)],
                         leaves[2].softmax(0))
    got = kd_loss(leaves[0], leaves[1], mix, labels, loss=loss, temperature=2.0, alpha=0.7,
                  chunk_size=5)  # 5 does not divide 13
    got.loss.backward()
    ref_leaves = [x.double().requires_grad_() for x in (hidden, head, theta)]
    ref = mixture_reference(*ref_leaves[:2], [x.double() for x in t_hidden],
                            [x[:v].double() for x in t_heads], ref_leaves[2], labels, loss, 2.0,
                            0.7)
    ref.backward()
    assert got.loss.item() == pytest.approx(ref.item(), rel=1e-5)
    for mine, theirs in zip(leaves, ref_leaves):
        assert torch.allclose(mine.grad.double(), theirs.grad, rtol=1e-4, atol=1e-6)
    assert theta.abs().sum() > 0 and leaves[2].grad.abs().sum() > 1e-4  # the weights learn


def test_a_one_teacher_mixture_is_that_teacher():
    from distill.sft.kd.losses import DenseTeacher, MixtureTeacher, kd_loss

    torch.manual_seed(2)
    n, h, v = 11, 5, 13
    hidden, head, t_h, t_w = torch.randn(n, h), torch.randn(v, h), torch.randn(n, h), \
        torch.randn(v, h)
    labels = torch.randint(0, v, (n,))
    for kwargs in ({"loss": "jsd"}, {"loss": "forward_kl", "top_k": 4},
                   {"loss": "reverse_kl", "entropy_threshold": 1.0}):
        outs = []
        for teacher in (DenseTeacher(t_h, t_w), MixtureTeacher([DenseTeacher(t_h, t_w)],
                                                               torch.ones(1))):
            x = hidden.clone().requires_grad_()
            out = kd_loss(x, head, teacher, labels, temperature=1.5, chunk_size=4, **kwargs)
            out.loss.backward()
            outs.append((out.loss, x.grad))
        assert torch.allclose(outs[0][0], outs[1][0], atol=1e-6), kwargs
        assert torch.allclose(outs[0][1], outs[1][1], atol=1e-6), kwargs


def test_learned_mixture_weights_refuse_top_k():
    from distill.sft.kd.losses import DenseTeacher, MixtureTeacher, kd_loss

    theta = torch.zeros(2, requires_grad=True)
    t = DenseTeacher(torch.randn(3, 4), torch.randn(7, 4))
    with pytest.raises(DistillError, match="learned teacher weights"):
        kd_loss(torch.randn(3, 4), torch.randn(7, 4), MixtureTeacher([t, t], theta.softmax(0)),
                torch.tensor([1, 2, 3]), loss="topk", top_k=2)


# --- distill train kd --teachers: the trainer runs every teacher and distills their mixture

@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    from kd_models import toy_pair

    return toy_pair(tmp_path_factory.mktemp("multi"), n_train=32)


def logged(out, key):
    import json

    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return [h[key] for h in history if key in h]


def test_fixed_weights_one_and_zero_train_like_that_single_teacher(pair, tmp_path):
    from kd_models import KD_ARGS

    from distill.sft.kd.train import train_kd

    data, _, student, teacher = pair
    args = {**KD_ARGS, "max_steps": 2, "alpha": 0.9}
    train_kd(str(student), data, tmp_path / "one", teacher=str(teacher), **args)
    train_kd(str(student), data, tmp_path / "mix", teachers=f"{teacher},{student}",
             teacher_aggregation="fixed", teacher_weights="1,0", **args)
    assert logged(tmp_path / "mix", "kd") == pytest.approx(logged(tmp_path / "one", "kd"),
                                                            rel=1e-4)
    assert logged(tmp_path / "mix", "teacher_weight_1") == [0.0, 0.0]
    assert "fixed 1,0 (normalized)" in (tmp_path / "mix" / "README.md").read_text()


def test_cli_average_and_learned_weights(pair, tmp_path):
    import json

    from kd_models import KD_ARGS

    from distill.cli import main

    data, _, student, teacher = pair
    flags = [f"--{k}={v}" for k, v in KD_ARGS.items()] + ["--max_steps=3", "--alpha=1"]
    common = ["train", "kd", "--student", str(student), "--data", str(data), "--teachers",
              f"{student},{teacher}", *flags]
    assert main([*common, "--out", str(tmp_path / "avg")]) == 0
    assert logged(tmp_path / "avg", "teacher_weight_0") == [0.5] * 3
    saved = json.loads((tmp_path / "avg" / "teacher_weights.json").read_text())
    assert saved["aggregation"] == "average" and saved["weights"] == [0.5, 0.5]
    assert (tmp_path / "avg" / "model.safetensors").exists()
    assert main([*common, "--out", str(tmp_path / "learned"), "--teacher-aggregation",
                 "learned"]) == 0
    # teacher 0 is the student itself: the KD loss falls by weighting it up
    w0 = logged(tmp_path / "learned", "teacher_weight_0")
    assert w0[0] == 0.5 and w0[-1] > w0[0]
    saved = json.loads((tmp_path / "learned" / "teacher_weights.json").read_text())
    assert saved["teachers"] == [str(student), str(teacher)]
    assert sum(saved["weights"]) == pytest.approx(1.0) and saved["weights"][0] > 0.5
    assert torch.allclose(torch.tensor(saved["logits"]).softmax(0),
                          torch.tensor(saved["weights"]))
    card = (tmp_path / "learned" / "README.md").read_text()
    assert "online mixture of" in card and "learned" in card


def test_teachers_are_checked(pair, tmp_path):
    from kd_models import KD_ARGS
    from tiny import build_tiny_model

    from distill.sft.config import build_config
    from distill.sft.kd.config import DistillKDConfig
    from distill.sft.kd.train import train_kd

    data, _, student, teacher = pair
    other = build_tiny_model(tmp_path / "other")  # a tokenizer trained on another corpus
    with pytest.raises(DistillError, match=f"teacher {other} and the student .* different "
                       "tokenizers"):
        train_kd(str(student), data, tmp_path / "kd", teachers=f"{teacher},{other}", **KD_ARGS)
    for fields, message in [({"teachers": "a"}, "at least two models"),
                            ({"teachers": "a,b", "teacher": "c"}, "exactly one teacher"),
                            ({"teachers": "a,b", "teacher_aggregation": "fixed"},
                             "go with aggregation 'fixed'"),
                            ({"teachers": "a,b", "teacher_aggregation": "fixed",
                              "teacher_weights": "1,x"}, "comma-separated numbers"),
                            ({"teacher": "a", "teacher_weights": "1,1"}, "go with --teachers"),
                            ({"teachers": "a,b", "teacher_aggregation": "learned",
                              "loss": "topk", "top_k": 2}, "does not support loss 'topk'")]:
        with pytest.raises(DistillError, match=message):
            build_config(config_class=DistillKDConfig, output_dir=str(tmp_path), **fields)
