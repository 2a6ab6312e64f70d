"""Multi-teacher aggregation: the mixture of the teachers' tempered distributions."""

import pytest
import torch

from distill.errors import DistillError
from distill.sft.multi_teacher import TeacherMixture


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
