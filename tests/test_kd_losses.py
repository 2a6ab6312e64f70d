"""The chunked KD losses against a float64 full-softmax reference: values and gradients."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from distill.errors import DistillError
from distill.sft.kd.losses import LOSSES, DenseTeacher, SparseTeacher, kd_loss

N, H_S, H_T, V = 10, 6, 5, 40


def inputs(seed=0, n=N, v_s=V, v_t=V, dtype=torch.float64, sharp=1.0):
    g = torch.Generator().manual_seed(seed)
    hs = torch.randn(n, H_S, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    ws = torch.randn(v_s, H_S, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    ht = (sharp * torch.randn(n, H_T, generator=g, dtype=torch.float64)).to(dtype)
    wt = torch.randn(v_t, H_T, generator=g, dtype=torch.float64).to(dtype)
    labels = torch.randint(0, v_s, (n,), generator=g)
    return hs, ws, DenseTeacher(ht, wt), labels


def divergence(loss, lq, lp, beta):
    """D(p || q) straight from the definitions, on log-probs of one support."""
    p, q = lp.exp(), lq.exp()
    fwd, rev = (p * (lp - lq)).sum(-1), (q * (lq - lp)).sum(-1)
    if loss in ("forward_kl", "topk") or (loss == "jsd" and beta == 0):
        return fwd
    if loss == "reverse_kl" or (loss == "jsd" and beta == 1):
        return rev
    if loss == "jsd":
        m = beta * p + (1 - beta) * q
        return beta * (p * (lp - m.log())).sum(-1) + (1 - beta) * (q * (lq - m.log())).sum(-1)
    if loss == "bidirectional":
        return (1 - beta) * fwd + beta * rev
    return 0.5 * (p - q).abs().sum(-1)


def uld(z, lp):
    """ULD from its definition: L1 between the sorted probability vectors, zero-padded."""
    q, p = z.softmax(-1).sort(-1, descending=True).values, lp.exp().sort(-1, descending=True).values
    width = max(q.shape[-1], p.shape[-1])
    return (F.pad(q, (0, width - q.shape[-1])) - F.pad(p, (0, width - p.shape[-1]))).abs().sum(-1)


def reference(hs, ws, teacher, labels, weights=None, *, loss="forward_kl", temperature=1.0,
              alpha=0.5, beta=0.5, top_k=None, entropy_threshold=None):
    """Full logits in float64, one formula per loss; returns (loss, kd, ce)."""
    s = hs.double() @ ws.double().T
    t = temperature
    if isinstance(teacher, DenseTeacher):
        vocab = min(ws.shape[0], teacher.head.shape[0])
        rows = teacher.head.shape[0] if loss == "uld" else vocab  # uld: each its own vocabulary
        tl = teacher.hidden.double() @ teacher.head[:rows].double().T / t
        idx, lp = (None, tl.log_softmax(-1)) if top_k is None else tl.topk(top_k, -1)[::-1]
        if idx is not None:
            lp = lp.log_softmax(-1)
    else:
        vocab = teacher.vocab_size or ws.shape[0]
        idx, lp = teacher.indices, (teacher.logprobs.double() / t).log_softmax(-1)
    z = s[:, :vocab] / t
    if loss == "uld":
        d = uld(s / t, lp)
    elif idx is None:
        d = divergence(loss, z.log_softmax(-1), lp, beta)
    elif loss in ("forward_kl", "topk"):
        d = (lp.exp() * (lp - z.log_softmax(-1).gather(1, idx))).sum(-1)
    else:
        d = divergence(loss, z.gather(1, idx).log_softmax(-1), lp, beta)
    if entropy_threshold is not None:
        d = d * (-(lp.exp() * lp).sum(-1) > entropy_threshold)
    kd = t * t * d
    ce = F.cross_entropy(s, labels, reduction="none")
    w = torch.ones(len(labels), dtype=torch.float64) if weights is None else weights.double()
    norm = (w > 0).sum()
    return ((w * (alpha * kd + (1 - alpha) * ce)).sum() / norm, (w * kd).sum() / norm,
            (w * ce).sum() / norm)


def grads(out, hs, ws):
    return torch.autograd.grad(out, (hs, ws))


def assert_matches(case, chunk_sizes=(3,), atol=1e-10, **kw):
    hs, ws, teacher, labels = case
    want = reference(hs, ws, teacher, labels, **kw)
    want_grads = grads(want[0], hs, ws)
    if kw.get("alpha") == 1.0:  # pure KD: CE is not computed
        want = (want[0], want[1], torch.zeros((), dtype=torch.float64))
    for chunk in chunk_sizes:
        got = kd_loss(hs, ws, teacher, labels, chunk_size=chunk, **kw)
        for g, w in zip((got.loss, got.kd, got.ce), want):
            torch.testing.assert_close(g.double(), w.detach(), atol=atol, rtol=atol)
        for g, w in zip(grads(got.loss, hs, ws), want_grads):
            torch.testing.assert_close(g.double(), w, atol=atol, rtol=atol)


@pytest.mark.parametrize("loss", [x for x in LOSSES if x != "topk"])
@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_each_loss_matches_the_reference_for_any_chunking(loss, temperature):
    weights = torch.tensor([1.0, 0.0, 2.0, 0.5, 1.0, 1.0, 0.0, 3.0, 1.0, 1.0])
    assert_matches(inputs(), (1, 3, 4, N, N + 5), loss=loss, temperature=temperature, alpha=0.7,
                   beta=0.3, weights=weights)


@pytest.mark.parametrize("loss", LOSSES)
def test_top_k_teacher_matches_the_reference(loss):
    assert_matches(inputs(1), loss=loss, temperature=2.0, top_k=5, beta=0.4)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_jsd_is_trl_gkd_times_t_squared(beta):
    with warnings.catch_warnings():  # TRL warns that the API is experimental
        warnings.simplefilter("ignore")
        from trl.experimental.gkd import GKDTrainer

    hs, ws, teacher, labels = inputs(2)
    for t in (1.0, 2.0):
        got = kd_loss(hs, ws, teacher, labels, loss="jsd", beta=beta, temperature=t, alpha=1.0)
        trl = GKDTrainer.generalized_jsd_loss(hs @ ws.T, teacher.hidden @ teacher.head.T,
                                              beta=beta, temperature=t)
        torch.testing.assert_close(got.loss, t * t * trl)
    assert got.loss > 0


def test_forward_kl_is_hinton_soft_targets_scaled_by_t_squared():
    hs, ws, teacher, labels = inputs(3)
    s, tl = hs @ ws.T, teacher.hidden @ teacher.head.T
    for t in (1.0, 4.0):
        kl = F.kl_div((s / t).log_softmax(-1), (tl / t).log_softmax(-1), log_target=True,
                      reduction="batchmean")
        got = kd_loss(hs, ws, teacher, labels, temperature=t, alpha=1.0)
        torch.testing.assert_close(got.loss, t * t * kl)
        torch.testing.assert_close(got.kd, got.loss.detach())


def test_alpha_mixes_kd_and_hard_label_ce():
    hs, ws, teacher, labels = inputs(4)
    both = kd_loss(hs, ws, teacher, labels, alpha=0.25)
    torch.testing.assert_close(both.loss.detach(), 0.25 * both.kd + 0.75 * both.ce)
    torch.testing.assert_close(both.ce, F.cross_entropy(hs @ ws.T, labels).detach())
    assert both.kd > 0


def test_pure_ce_never_reads_the_teacher():
    hs, ws, teacher, labels = inputs(5)
    broken = DenseTeacher(torch.full_like(teacher.hidden, float("nan")), teacher.head)
    out = kd_loss(hs, ws, broken, labels, alpha=0.0)
    torch.testing.assert_close(out.loss, F.cross_entropy(hs @ ws.T, labels))
    assert out.kd == 0


def test_zero_weight_positions_contribute_nothing():
    hs, ws, teacher, labels = inputs(6)
    weights = torch.tensor([1.0, 0, 1, 1, 0, 1, 1, 1, 1, 0])
    out = kd_loss(hs, ws, teacher, labels, weights, loss="reverse_kl")
    g_hidden, _ = grads(out.loss, hs, ws)
    assert (g_hidden[weights == 0] == 0).all() and (g_hidden[weights > 0] != 0).any()
    other_labels = labels.clone()
    other_labels[weights == 0] = 0
    other = DenseTeacher(teacher.hidden.clone(), teacher.head)
    other.hidden[weights == 0] = 9.0
    again = kd_loss(hs, ws, other, other_labels, weights, loss="reverse_kl")
    torch.testing.assert_close(again.loss, out.loss)
    none = kd_loss(hs, ws, teacher, labels, torch.zeros(N))
    assert none.loss == 0 and all(g.abs().sum() == 0 for g in grads(none.loss, hs, ws))


def test_explicit_normalizer_divides_the_weighted_sum():
    hs, ws, teacher, labels = inputs(7)
    default = kd_loss(hs, ws, teacher, labels)
    by_32 = kd_loss(hs, ws, teacher, labels, normalizer=torch.tensor(32))
    torch.testing.assert_close(by_32.loss, default.loss * N / 32)


def test_entropy_selective_distills_only_uncertain_positions():
    hs, ws, teacher, labels = inputs(8, sharp=1.0)
    teacher.hidden[::2] *= 30.0  # peaked teacher on even positions, entropy near 0
    probs = (teacher.hidden @ teacher.head.T).softmax(-1)
    entropy = -(probs * probs.log()).sum(-1)
    assert (entropy[::2] < 0.5).all() and (entropy[1::2] > 0.5).all()
    kw = {"alpha": 1.0, "entropy_threshold": 0.5}
    assert_matches((hs, ws, teacher, labels), **kw)
    assert_matches((hs, ws, teacher, labels), alpha=0.6, entropy_threshold=0.5, loss="tvd")
    g_hidden, _ = grads(kd_loss(hs, ws, teacher, labels, **kw).loss, hs, ws)
    assert (g_hidden[::2] == 0).all() and (g_hidden[1::2] != 0).all()


@pytest.mark.parametrize("v_t", [V + 8, V - 6])
def test_padded_vocabularies_align_on_the_shared_ids(v_t):
    hs, ws, teacher, labels = inputs(9, v_t=v_t)
    assert_matches((hs, ws, teacher, labels), loss="jsd", temperature=2.0)
    assert_matches((hs, ws, teacher, labels), loss="forward_kl", alpha=1.0)
    if v_t > V:  # the teacher's padding rows do not matter
        padded = DenseTeacher(teacher.hidden, teacher.head.clone())
        padded.head[V:] = 50.0
        torch.testing.assert_close(kd_loss(hs, ws, padded, labels).loss,
                                   kd_loss(hs, ws, teacher, labels).loss)


@pytest.mark.parametrize("loss", LOSSES)
def test_online_top_k_equals_the_cached_top_k(loss):
    hs, ws, teacher, labels = inputs(10, dtype=torch.float32)
    logprobs = (teacher.hidden @ teacher.head.T).log_softmax(-1)
    values, ids = logprobs.topk(6, -1)
    cached = SparseTeacher(ids, values.half())
    weights = torch.tensor([1.0, 2, 0, 1, 1, 1, 1, 1, 0.5, 1])
    kw = {"loss": loss, "temperature": 1.5, "beta": 0.3, "top_k": 6, "entropy_threshold": 0.2,
          "chunk_size": 4}
    online = kd_loss(hs, ws, teacher, labels, weights, **kw)
    offline = kd_loss(hs, ws, cached, labels, weights, **kw)
    torch.testing.assert_close(offline.loss, online.loss, atol=2e-3, rtol=2e-3)  # fp16 cache
    exact = kd_loss(hs, ws, SparseTeacher(ids, values), labels, weights, **kw)
    torch.testing.assert_close(exact.loss, online.loss)
    for a, b in zip(grads(exact.loss, hs, ws), grads(online.loss, hs, ws)):
        torch.testing.assert_close(a, b)


def test_sparse_cache_matches_the_reference_and_can_be_cut_to_fewer_ids():
    hs, ws, teacher, labels = inputs(11)
    values, ids = (teacher.hidden @ teacher.head.T).log_softmax(-1).topk(8, -1)
    assert_matches((hs, ws, SparseTeacher(ids, values), labels),
                   (2, 7), loss="bidirectional", temperature=3.0)
    assert_matches((hs, ws, SparseTeacher(ids, values), labels), loss="tvd", alpha=1.0)
    cut = kd_loss(hs, ws, SparseTeacher(ids, values), labels, loss="topk", top_k=3)
    first3 = kd_loss(hs, ws, SparseTeacher(ids[:, :3], values[:, :3]), labels, loss="topk")
    torch.testing.assert_close(cut.loss, first3.loss)


def test_bfloat16_inputs_compute_in_float32_and_return_bfloat16_grads():
    case = inputs(12, dtype=torch.bfloat16)
    hs, ws, teacher, labels = case
    out = kd_loss(hs, ws, teacher, labels, loss="reverse_kl", temperature=2.0, chunk_size=4)
    assert out.loss.dtype == torch.float32
    got = grads(out.loss, hs, ws)
    assert all(g.dtype == torch.bfloat16 for g in got)
    want = reference(hs, ws, teacher, labels, loss="reverse_kl", temperature=2.0)
    torch.testing.assert_close(out.loss.double(), want[0].detach(), atol=1e-5, rtol=1e-5)
    for g, w in zip(got, grads(want[0], hs, ws)):
        torch.testing.assert_close(g.double(), w.double(), atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("loss", LOSSES)
def test_gradcheck_on_a_tiny_case(loss):
    hs, ws, teacher, labels = inputs(13, n=3, v_s=7, v_t=9)
    teacher = DenseTeacher(teacher.hidden, teacher.head)

    def f(h, w):
        return kd_loss(h, w, teacher, labels, loss=loss, top_k=4, temperature=1.7, alpha=0.6,
                       chunk_size=2).loss

    assert torch.autograd.gradcheck(f, (hs, ws))


def test_bad_options_name_the_allowed_values():
    hs, ws, teacher, labels = inputs()
    with pytest.raises(DistillError, match="forward_kl, reverse_kl"):
        kd_loss(hs, ws, teacher, labels, loss="kl")
    with pytest.raises(DistillError, match="needs top_k"):
        kd_loss(hs, ws, teacher, labels, loss="topk")
    with pytest.raises(DistillError, match="temperature"):
        kd_loss(hs, ws, teacher, labels, temperature=0)
    with pytest.raises(DistillError, match="alpha"):
        kd_loss(hs, ws, teacher, labels, alpha=1.5)
    with pytest.raises(ValueError, match="ids >="):
        kd_loss(hs, ws, SparseTeacher(torch.full((N, 2), V), torch.zeros(N, 2)), labels)


def one_hot_heads(student_probs, teacher_probs):
    """Student and teacher whose logits are the log of the given probabilities (identity
    heads), so the distributions are exactly these."""
    q, p = torch.tensor(student_probs, dtype=torch.float64), torch.tensor(teacher_probs,
                                                                          dtype=torch.float64)
    hs, ws = q.log().requires_grad_(), torch.eye(q.shape[1], dtype=torch.float64).requires_grad_()
    return hs, ws, DenseTeacher(p.log(), torch.eye(p.shape[1], dtype=torch.float64))


def test_uld_is_the_l1_between_sorted_probabilities_by_hand():
    # sorted q = .5 .3 .2 0, sorted p = .6 .25 .1 .05: |.1| + |.05| + |.1| + |.05| = 0.3
    hs, ws, teacher = one_hot_heads([[0.2, 0.5, 0.3]], [[0.1, 0.6, 0.25, 0.05]])
    labels = torch.tensor([1])
    got = kd_loss(hs, ws, teacher, labels, loss="uld", alpha=1.0)
    assert float(got.kd) == pytest.approx(0.3)
    # a smaller teacher vocabulary: sorted p = .7 .3 (0): |.2| + 0 + |.2| = 0.4
    hs, ws, teacher = one_hot_heads([[0.2, 0.5, 0.3]], [[0.3, 0.7]])
    assert float(kd_loss(hs, ws, teacher, labels, loss="uld", alpha=1.0).kd) == \
        pytest.approx(0.4)
    # the teacher's top 1, renormalized (1.0), from a cache of its own ids: |.5| + .3 + .2
    cached = SparseTeacher(torch.tensor([[7, 3]]), torch.tensor([[0.6, 0.25]]).log())
    assert float(kd_loss(hs, ws, cached, labels, loss="uld", alpha=1.0, top_k=1).kd) == \
        pytest.approx(1.0)
    # alpha mixes in the student's CE, -log q[label] = -log 0.5
    mixed = kd_loss(hs, ws, cached, labels, loss="uld", alpha=0.25, top_k=1)
    assert float(mixed.loss.detach()) == pytest.approx(0.25 * 1.0 + 0.75 * math.log(2))


def test_uld_is_zero_when_the_distributions_match_up_to_a_permutation():
    hs, ws, teacher, labels = inputs(14)
    logits = hs.detach() @ ws.detach().T  # the student's own logits, ids shuffled, plus 7
    perm = torch.randperm(V, generator=torch.Generator().manual_seed(0))  # teacher-only tokens
    teacher_logits = torch.cat([logits[:, perm], torch.full((N, 7), -1e4, dtype=logits.dtype)], 1)
    teacher = DenseTeacher(teacher_logits, torch.eye(V + 7, dtype=torch.float64))
    out = kd_loss(hs, ws, teacher, labels, loss="uld", alpha=1.0, temperature=2.0)
    assert float(out.kd) == pytest.approx(0.0, abs=1e-12)
    other = DenseTeacher(teacher_logits.roll(1, 0), teacher.head)  # rows swapped: not a match
    assert float(kd_loss(hs, ws, other, labels, loss="uld", alpha=1.0).kd) > 0.1


def test_uld_gradient_reaches_the_student_only():
    hs, ws, teacher, labels = inputs(15, v_t=V + 13)
    teacher = DenseTeacher(teacher.hidden.clone().requires_grad_(),
                           teacher.head.clone().requires_grad_())
    kd_loss(hs, ws, teacher, labels, loss="uld", alpha=0.5).loss.backward()
    assert teacher.hidden.grad is None and teacher.head.grad is None
    assert hs.grad.abs().sum() > 0 and ws.grad.abs().sum() > 0


def test_uncovered_positions_keep_their_ce_and_lose_their_kd():
    hs, ws, teacher, labels = inputs(16, v_t=V - 9)
    covered = torch.tensor([True, False, True, True, False, True, True, True, False, True])
    got = kd_loss(hs, ws, teacher, labels, loss="uld", alpha=0.6, covered=covered)
    rows = covered.nonzero().squeeze(1)
    kd = kd_loss(hs[rows], ws, DenseTeacher(teacher.hidden[rows], teacher.head), labels[rows],
                 loss="uld", alpha=1.0, normalizer=N).loss
    ce = kd_loss(hs, ws, teacher, labels, alpha=0.0).loss
    torch.testing.assert_close(got.loss, 0.6 * kd + 0.4 * ce)
    torch.testing.assert_close(got.kd, kd.detach())
