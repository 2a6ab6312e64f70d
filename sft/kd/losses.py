"""Logit-distillation losses, chunked over tokens (Liger-Kernel's approach, in plain torch).

``kd_loss`` takes the student's final hidden states at the N counted positions and its LM head,
and a teacher: online (``DenseTeacher``: hidden states and head, logits made chunk by chunk)
or offline (``SparseTeacher``: top-k log-probs from a cache). Per position t it computes

    loss = sum_t w_t * (alpha * kd_t + (1 - alpha) * ce_t) / normalizer

where ``ce_t`` is the hard-label cross-entropy at temperature 1 and ``kd_t = T^2 * D(p_T, q_T)``
a divergence between the temperature-softened teacher p and student q (Hinton's T^2 keeps the
gradient scale independent of T). The divergences (``LOSSES``):

* ``forward_kl``: KL(p || q), Hinton's soft-target loss up to the teacher-entropy constant.
* ``reverse_kl``: KL(q || p), mode-seeking (MiniLLM).
* ``jsd``: generalized Jensen-Shannon of GKD, ``beta * KL(p || m) + (1 - beta) * KL(q || m)``
  with ``m = beta * p + (1 - beta) * q``; beta = 0 is forward KL, beta = 1 reverse KL. This is
  TRL's ``GKDTrainer.generalized_jsd_loss`` times T^2 (equal at T = 1).
* ``bidirectional``: ``(1 - beta) * KL(p || q) + beta * KL(q || p)``.
* ``tvd``: total variation, ``0.5 * sum |p - q|`` (times T^2 like the others).
* ``topk``: forward KL against the teacher renormalized over its top k tokens.
* ``uld``: Universal Logit Distillation (Boizard et al. 2024), for a teacher with another
  tokenizer: ``sum_i |q_(i) - p_(i)|`` over the probabilities sorted in decreasing order, the
  shorter vector padded with zeros (Wasserstein-1 between the two distributions under a cost
  of 1 between any two distinct tokens, up to the order of the vocabularies). It reads no ids:
  the student's whole vocabulary against the teacher's whole head, or its top k; 0 when the
  two distributions are a permutation of each other.

Support. For ``uld``, each side's own vocabulary (the student's V_s logits, the teacher's V_t
rows or its top k), compared by rank, never by id. Otherwise: with a dense teacher both
distributions live on the shared vocabulary, the first ``min(V_s, V_t)`` ids (checkpoints of
one tokenizer family differ only by padding rows, e.g. 151,936 vs 152,064); CE always uses all
student logits. A top-k teacher (``SparseTeacher``, or a dense one with ``top_k``) is
``softmax(logprobs / T)`` over its k ids. ``forward_kl`` and ``topk`` then compare it with the
student's log-softmax over the shared vocabulary (for a cache: ``SparseTeacher.vocab_size``,
default all student logits) at those ids; the other divergences compare it with the student
renormalized over the same k ids. A dense teacher with ``top_k`` gives the same loss as the
``SparseTeacher`` cached from its top-k log-probs.

Positions without a teacher (``covered``, e.g. the student tokens past the end of a shorter
teacher sequence in cross-tokenizer KD): kd_t is 0 there, CE counts.

Entropy-selective KD (``entropy_threshold``): kd_t counts only where the entropy (nats) of the
teacher distribution in use (at T, after any top-k) exceeds the threshold; CE counts everywhere.

Memory: an autograd Function walks the tokens in chunks of ``chunk_size``; per chunk it makes
the logits, the loss, and the gradients for the chunk's hidden states and (accumulated) the
head, so no (N, V) tensor exists and backward only scales the stored gradients. The chunks
share four (chunk_size, V_s) buffers, filled in place, so later chunks neither allocate nor
touch fresh memory (bench/kd_loss.py: at V = 151,936 and 2,048 tokens, under a quarter of the
naive formula's peak memory, and faster). Computation is in float32 (float64 inputs stay
float64); gradients come back in the inputs' dtypes. A term
whose weight is 0 (alpha = 0 or 1) is not computed and reads 0 in ``KDLossOutput``.

Several teachers (``MixtureTeacher``): the target is the mixture ``p = sum_i w_i p_i`` of the
teachers' tempered distributions ``p_i = softmax(z_i / T)``, built per chunk in one (chunk, V)
buffer (each teacher's logits in turn), then used by every loss like one teacher's (``top_k``
keeps the mixture's k most likely tokens). Weights that require grad (learned aggregation:
softmax of a parameter) get ``dLoss/dw_i = sum_t coef_t <dD_t/dp, p_i>`` per chunk, for every
loss but ``topk`` and ``top_k`` (refused). Minimizing the KD loss over the weights moves them
onto the teachers the student already agrees with (in the limit, the closest one): the
"adaptive" aggregation of the seed guide, which learns the weights jointly with this loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from distill.errors import DistillError

LOSSES = ("forward_kl", "reverse_kl", "jsd", "bidirectional", "tvd", "topk", "uld")


@dataclass
class DenseTeacher:
    """Online teacher: final hidden states (N, H_t) at the counted positions and the LM head
    weight (V_t, H_t); only its first min(V_s, V_t) rows are used (all of them for ``uld``)."""

    hidden: Tensor
    head: Tensor


@dataclass
class SparseTeacher:
    """Offline teacher: its top-k log-probs at temperature 1 per position, ids (N, k) and values
    (N, k). ``vocab_size``: the shared vocabulary the student is normalized over for
    ``forward_kl``/``topk`` (default: all student logits; set it to min(V_s, V_t) to match a
    dense teacher exactly when the student's vocabulary is the larger)."""

    indices: Tensor
    logprobs: Tensor
    vocab_size: int | None = None


@dataclass
class MixtureTeacher:
    """Several online teachers of one tokenizer and their mixing weights (T,), which sum to 1
    (e.g. ``theta.softmax(0)`` for learned weights: the gradient reaches ``theta``)."""

    teachers: list[DenseTeacher]
    weights: Tensor


@dataclass
class KDLossOutput:
    loss: Tensor  # differentiable scalar
    kd: Tensor  # detached: sum_t w_t * kd_t / normalizer
    ce: Tensor  # detached: sum_t w_t * ce_t / normalizer


@dataclass(frozen=True)
class _Spec:
    loss: str
    temperature: float
    alpha: float
    beta: float
    top_k: int | None
    entropy_threshold: float | None
    vocab: int  # student logits that take part in KD
    chunk_size: int
    dense: bool  # teacher given as (hidden / T, head), else as (ids, log-probs)
    mixture: bool = False  # dense teachers given as lists (hidden / T, head), with weights
    learn_mix: bool = False  # compute the gradient with respect to the mixture weights


def check_kd_options(loss: str = "forward_kl", temperature: float = 1.0, alpha: float = 0.5,
                     beta: float = 0.5, top_k: int | None = None, chunk_size: int = 512) -> None:
    """Raise DistillError naming the first bad option."""
    if loss not in LOSSES:
        raise DistillError(f"kd loss {loss!r} is not one of {', '.join(LOSSES)}")
    if not temperature > 0:
        raise DistillError(f"kd temperature must be > 0, got {temperature}")
    if not 0 <= alpha <= 1:
        raise DistillError(f"kd alpha must be in [0, 1], got {alpha}")
    if not 0 <= beta <= 1:
        raise DistillError(f"kd beta must be in [0, 1], got {beta}")
    if top_k is not None and top_k < 1:
        raise DistillError(f"kd top_k must be >= 1, got {top_k}")
    if chunk_size < 1:
        raise DistillError(f"kd chunk_size must be >= 1, got {chunk_size}")


def kd_loss(student_hidden: Tensor, student_head: Tensor,
            teacher: DenseTeacher | SparseTeacher | MixtureTeacher,
            labels: Tensor, weights: Tensor | None = None, *, loss: str = "forward_kl",
            temperature: float = 1.0, alpha: float = 0.5, beta: float = 0.5,
            top_k: int | None = None, entropy_threshold: float | None = None,
            normalizer: float | Tensor | None = None, chunk_size: int = 512,
            covered: Tensor | None = None) -> KDLossOutput:
    """The weighted mix of KD and CE over N positions (see the module docstring).

    ``student_hidden`` (N, H_s) is already aligned with ``labels`` (N,): row t predicts
    ``labels[t]``. ``weights`` (N,) default 1; rows of weight 0 are skipped. ``normalizer``
    defaults to the number of positions of weight > 0. ``covered`` (N,) bool: the positions
    that have a teacher (default all); the teacher's (finite) rows elsewhere count for nothing."""
    check_kd_options(loss, temperature, alpha, beta, top_k, chunk_size)
    mixture = isinstance(teacher, MixtureTeacher)
    dense = mixture or isinstance(teacher, DenseTeacher)
    if loss == "topk" and dense and top_k is None:
        raise DistillError("kd loss 'topk' with an online teacher needs top_k")
    if loss == "uld" and mixture:
        raise DistillError("kd loss 'uld' takes one teacher, not a mixture")
    n, v_s = labels.shape[0], student_head.shape[0]
    learn_mix = mixture and teacher.weights.requires_grad and torch.is_grad_enabled()
    if mixture:
        if not teacher.teachers or teacher.weights.shape != (len(teacher.teachers),):
            raise ValueError(f"mixture weights {tuple(teacher.weights.shape)} do not fit "
                             f"{len(teacher.teachers)} teachers")
        if learn_mix and (loss == "topk" or top_k is not None):
            raise DistillError("learned teacher weights do not support kd loss 'topk' or top_k "
                               "(the top-k cut has no gradient): use average or fixed weights")
        for t in teacher.teachers:
            _check_shapes(student_hidden, student_head, t, labels, weights)
    else:
        _check_shapes(student_hidden, student_head, teacher, labels, weights)
    if covered is not None and covered.shape != labels.shape:
        raise ValueError(f"covered {tuple(covered.shape)} != labels {tuple(labels.shape)}")
    if loss == "uld":  # no shared ids: the student's whole vocabulary, the teacher's own
        vocab = v_s
        k = teacher.head.shape[0] if dense else teacher.indices.shape[1]
        if top_k is not None and top_k > k:
            raise DistillError(f"kd top_k {top_k} > the teacher's {k} probabilities per "
                               "position")
    elif mixture:
        vocab = min(v_s, *(t.head.shape[0] for t in teacher.teachers))
    elif dense:
        vocab = min(v_s, teacher.head.shape[0])
    else:
        vocab = teacher.vocab_size or v_s
        if vocab > v_s:
            raise ValueError(f"SparseTeacher.vocab_size {vocab} > student vocabulary {v_s}")
        if teacher.indices.numel() and int(teacher.indices.max()) >= vocab:
            raise ValueError(f"SparseTeacher.indices hold ids >= the vocabulary ({vocab})")
        if top_k is not None and top_k > teacher.indices.shape[1]:
            raise DistillError(f"kd top_k {top_k} > the {teacher.indices.shape[1]} cached "
                               "teacher log-probs per position")
    w = (torch.ones(n, device=labels.device) if weights is None else weights.to(
        device=labels.device, dtype=torch.promote_types(weights.dtype, torch.float32)))
    norm = float((w > 0).sum() if normalizer is None else normalizer)
    keep = (w != 0).nonzero().squeeze(1)
    if keep.numel() == 0:
        zero = student_hidden[:0].float().sum() + student_head[:0].float().sum()
        if mixture:
            zero = zero + teacher.weights[:0].float().sum()
        return KDLossOutput(zero, zero.detach(), zero.detach())
    if not norm > 0:
        raise ValueError(f"kd normalizer must be > 0, got {norm}")
    if keep.numel() < n:
        student_hidden, labels, w = student_hidden[keep], labels[keep], w[keep]
        covered = None if covered is None else covered[keep]
        if mixture:
            teacher = MixtureTeacher([DenseTeacher(t.hidden[keep], t.head)
                                      for t in teacher.teachers], teacher.weights)
        else:
            teacher = (DenseTeacher(teacher.hidden[keep], teacher.head) if dense else
                       SparseTeacher(teacher.indices[keep], teacher.logprobs[keep], vocab))
    spec = _Spec(loss, float(temperature), float(alpha), float(beta), top_k, entropy_threshold,
                 vocab, chunk_size, dense, mixture, learn_mix)
    mix = None
    if mixture:
        first = [t.hidden for t in teacher.teachers]
        second = [t.head[:vocab] for t in teacher.teachers]
        mix = teacher.weights
    else:
        first, second = ((teacher.hidden, teacher.head if loss == "uld" else
                          teacher.head[:vocab]) if dense
                         else (teacher.indices.long(), teacher.logprobs))
    covered = None if covered is None else covered.to(device=labels.device, dtype=torch.bool)
    total, kd, ce = _ChunkedKD.apply(student_hidden, student_head, first, second, labels.long(),
                                     w, norm, spec, mix, covered)
    return KDLossOutput(total, kd, ce)


def _check_shapes(hidden, head, teacher, labels, weights) -> None:
    n = labels.shape[0]
    if hidden.dim() != 2 or hidden.shape[0] != n or head.dim() != 2 \
            or head.shape[1] != hidden.shape[1]:
        raise ValueError(f"student hidden {tuple(hidden.shape)} and head {tuple(head.shape)} "
                         f"do not fit {n} labels")
    if weights is not None and weights.shape != labels.shape:
        raise ValueError(f"weights {tuple(weights.shape)} != labels {tuple(labels.shape)}")
    if isinstance(teacher, DenseTeacher):
        h, w = teacher.hidden, teacher.head
        if h.dim() != 2 or h.shape[0] != n or w.dim() != 2 or w.shape[1] != h.shape[1]:
            raise ValueError(f"teacher hidden {tuple(h.shape)} and head {tuple(w.shape)} "
                             f"do not fit {n} labels")
    elif teacher.indices.shape != teacher.logprobs.shape or teacher.indices.dim() != 2 \
            or teacher.indices.shape[0] != n:
        raise ValueError(f"teacher indices {tuple(teacher.indices.shape)} and logprobs "
                         f"{tuple(teacher.logprobs.shape)} are not both ({n}, k)")
    if n and (int(labels.min()) < 0 or int(labels.max()) >= head.shape[0]):
        raise ValueError(f"labels must be ids in [0, {head.shape[0]})")


class _ChunkedKD(torch.autograd.Function):
    """Loss and gradients chunk by chunk in forward; backward scales the stored gradients."""

    @staticmethod
    def forward(ctx, hidden, head, first, second, labels, weights, norm: float, spec: _Spec,
                mix=None, covered=None):
        dtype = torch.promote_types(torch.promote_types(hidden.dtype, head.dtype), torch.float32)
        need_hidden, need_head = ctx.needs_input_grad[:2]
        with torch.autocast(hidden.device.type, enabled=False):
            head_c = head.to(dtype)
            teacher_head = None
            if spec.dense and spec.alpha > 0:
                teacher_head = ([h.to(dtype) for h in second] if spec.mixture
                                else second.to(dtype))
            mix_w = None if mix is None else mix.detach().to(dtype)
            grad_mix = mix_w.new_zeros(mix_w.shape) if spec.learn_mix else None
            grad_hidden = hidden.new_empty(hidden.shape, dtype=dtype) if need_hidden else None
            grad_head = head.new_zeros(head.shape, dtype=dtype) if need_head else None
            width = max(head.shape[0], second.shape[0] if spec.loss == "uld" and spec.dense
                        else 0)  # a uld teacher's own vocabulary may be the larger
            work = _Workspace(hidden.new_empty(0, dtype=dtype), spec.chunk_size * width)
            kd_sum = ce_sum = hidden.new_zeros((), dtype=dtype)
            for i in range(0, hidden.shape[0], spec.chunk_size):
                rows = slice(i, i + spec.chunk_size)
                h = hidden[rows].to(dtype)
                logits = torch.mm(h, head_c.T, out=work.get("logits", h.shape[0], head.shape[0]))
                teacher = None
                if spec.alpha > 0 and spec.mixture:
                    teacher = ([x[rows].to(dtype) / spec.temperature for x in first],
                               teacher_head, mix_w)
                elif spec.alpha > 0:
                    teacher = ((first[rows].to(dtype) / spec.temperature, teacher_head)
                               if spec.dense
                               else (first[rows], second[rows].to(dtype)))
                w = weights[rows].to(dtype) / norm
                kd_t, ce_t, grad, row_scale, dots = _chunk(
                    logits, teacher, labels[rows], w, spec, work,
                    None if covered is None else covered[rows])
                if dots is not None:  # (n, T): <dD_t/dp, p_i>; kd_t's coefficient in the loss
                    coef = w * spec.alpha * spec.temperature ** 2
                    grad_mix += coef @ dots
                kd_sum = kd_sum + w @ kd_t
                ce_sum = ce_sum + w @ ce_t
                cols = grad.shape[1]  # the gradient is 0 past them
                if need_hidden:
                    torch.mm(grad, head_c[:cols], out=grad_hidden[rows]).mul_(row_scale[:, None])
                if need_head:
                    grad_head[:cols].addmm_(grad.T, h * row_scale[:, None])
        ctx.save_for_backward(grad_hidden, grad_head, grad_mix)
        ctx.dtypes = hidden.dtype, head.dtype, None if mix is None else mix.dtype
        kd, ce = kd_sum.detach(), ce_sum.detach()
        ctx.mark_non_differentiable(kd, ce)
        return spec.alpha * kd_sum + (1 - spec.alpha) * ce_sum, kd, ce

    @staticmethod
    def backward(ctx, grad_loss, _kd, _ce):
        out = [None if g is None else (g * grad_loss).to(d)
               for g, d in zip(ctx.saved_tensors, ctx.dtypes)]
        return out[0], out[1], None, None, None, None, None, None, out[2], None


class _Workspace:
    """Named flat buffers of chunk_size x V_s values, made once per call and reused by every
    chunk, so the chunks neither reallocate nor page-fault fresh memory. ``get`` gives a
    contiguous (rows, cols) view of a buffer's start."""

    def __init__(self, like: Tensor, size: int):
        self.like, self.size, self.buffers = like, size, {}

    def get(self, name: str, rows: int, cols: int) -> Tensor:
        if name not in self.buffers:
            self.buffers[name] = self.like.new_empty(self.size)
        return self.buffers[name][:rows * cols].view(rows, cols)


def _chunk(logits: Tensor, teacher, labels: Tensor, w: Tensor, spec: _Spec, work: _Workspace,
           covered: Tensor | None = None):
    """Per-token kd_t and ce_t of one chunk (kd_t 0 where ``covered`` is False), and the
    gradient of
    ``sum_t w_t * (alpha * kd_t + (1 - alpha) * ce_t)`` with respect to ``logits`` as
    ``row_scale[:, None] * grad``, where ``grad`` covers the first ``grad.shape[1]`` columns
    (the rest are 0). Scaling rows of the (n, H) products instead of ``grad`` saves a pass.
    Last: None, or (learned mixture weights) the (n, T) dots <dD_t/dp, p_i>, masked."""
    n, v_s = logits.shape
    zeros = logits.new_zeros(n)
    kd_t = ce_t = zeros
    kd_grad = dots = None
    if spec.alpha > 0:
        value, kd_grad, support, mask, dots = _divergence(logits, teacher, spec, work)
        if covered is not None:
            mask = covered if mask is None else mask & covered
        kd_scale = spec.alpha * spec.temperature * (1.0 if mask is None else mask.to(w.dtype))
        kd_t = spec.temperature ** 2 * (value if mask is None else value * mask)
        if dots is not None and mask is not None:
            dots = dots * mask[:, None]
    if spec.alpha == 1:
        if support is None:
            return kd_t, ce_t, kd_grad, w * kd_scale, dots
        grad = work.get("scratch", n, spec.vocab).zero_()
        return kd_t, ce_t, grad.scatter_add_(1, support, kd_grad), w * kd_scale, dots
    grad = work.get("scratch", n, v_s)  # free once _divergence has returned
    torch.log_softmax(logits, 1, out=grad)
    ce_t = -grad.gather(1, labels[:, None]).squeeze(1)
    grad.exp_().scatter_add_(1, labels[:, None], grad.new_full((n, 1), -1.0))
    if kd_grad is not None:  # relative to CE's weight, which goes into row_scale
        ratio = torch.as_tensor(kd_scale / (1 - spec.alpha), dtype=w.dtype, device=w.device)
        ratio = ratio.expand(n)[:, None]
        if support is None:
            grad[:, :kd_grad.shape[1]].addcmul_(kd_grad, ratio)
        else:
            grad.scatter_add_(1, support, kd_grad * ratio)
    return kd_t, ce_t, grad, (1 - spec.alpha) * w, dots


def _divergence(logits: Tensor, teacher, spec: _Spec, work: _Workspace):
    """D(p_T, q_T) per token, its gradient with respect to logits / T (on the shared vocabulary,
    or on ``support`` ids when that is not None), the support, the entropy mask, and the
    mixture-weight dots (see ``_chunk``). Leaves ``logits`` as they are; the gradient is never
    in the workspace's "scratch" buffer."""
    t, n, v = spec.temperature, logits.shape[0], spec.vocab
    z = logits[:, :v]
    support = dots = None
    if spec.loss == "uld":
        return _uld(z, teacher, spec, work)
    if spec.mixture:
        log_p = _mixture_log_p(teacher, work, n, v)
        if spec.top_k:
            top, support = log_p.topk(spec.top_k, dim=1)
            log_p = top.log_softmax(1)
    elif spec.dense:
        hidden, head = teacher  # hidden already divided by T
        scaled = torch.mm(hidden, head.T, out=work.get("scratch", n, v))
        if spec.top_k:
            top, support = scaled.topk(spec.top_k, dim=1)
            log_p = top.log_softmax(1)
        else:
            log_p = torch.log_softmax(scaled, 1, out=work.get("log_p", n, v))
    else:
        support, cached = teacher
        if spec.top_k and spec.top_k < cached.shape[1]:
            cached, order = cached.topk(spec.top_k, dim=1)
            support = support.gather(1, order)
        log_p = (cached / t).log_softmax(1)
    mask = None
    if spec.entropy_threshold is not None:
        p = torch.exp(log_p, out=work.get("scratch", *log_p.shape))
        mask = -torch.mul(p, log_p, out=p).sum(1) > spec.entropy_threshold
    if support is not None and spec.loss not in ("forward_kl", "topk"):
        log_q = (z.gather(1, support) / t).log_softmax(1)  # student renormalized on the support
        value, grad = _DIVERGENCES[spec.loss](log_q, log_p, torch.empty_like(log_q), spec.beta)
        return value, grad, support, mask, None
    log_q = work.get("log_q", n, v)
    torch.log_softmax(torch.mul(z, 1 / t, out=work.get("scratch", n, v)) if t != 1 else z, 1,
                      out=log_q)
    if support is None:
        if spec.learn_mix:
            dots = _mixture_dots(teacher, log_q, log_p, spec, work)
        value, grad = _DIVERGENCES[spec.loss](log_q, log_p, work.get("scratch", n, v), spec.beta)
        return value, grad, None, mask, dots
    p = log_p.exp()  # forward KL against the renormalized top k, student over the vocabulary
    value = _rowdot(p, log_p - log_q.gather(1, support))
    grad = log_q.exp_().scatter_add_(1, support, -p)
    return value, grad, None, mask, None


def _uld(z: Tensor, teacher, spec: _Spec, work: _Workspace):
    """``_divergence`` for ``uld``: sum_i |q_(i) - p_(i)| over the sorted probabilities (the
    shorter vector padded with zeros). Its gradient with respect to q is the sign of each
    rank's difference at the id holding that rank (+1 past the teacher's last rank, where
    p_(i) = 0), taken through the softmax to z / T."""
    t, n, v = spec.temperature, *z.shape
    if spec.dense:
        hidden, head = teacher  # hidden already divided by T
        scaled = torch.mm(hidden, head.T, out=work.get("scratch", n, head.shape[0]))
    else:
        scaled = teacher[1] / t
    k = spec.top_k or scaled.shape[1]
    log_p = scaled.topk(k, dim=1).values.log_softmax(1)  # sorted, decreasing
    p = log_p.exp()
    mask = None
    if spec.entropy_threshold is not None:
        mask = -(p * log_p).sum(1) > spec.entropy_threshold
    q = work.get("log_q", n, v)
    torch.softmax(torch.mul(z, 1 / t, out=work.get("scratch", n, v)) if t != 1 else z, 1,
                  out=q)
    ranks = min(k, v)
    q_top, order = q.topk(ranks, dim=1)
    diff = q_top - p[:, :ranks]
    # past rank k the teacher's probability is 0 (the student's tail mass counts whole), past
    # rank V_s the student's (the teacher's tail does)
    value = diff.abs().sum(1) + (q.sum(1) - q_top.sum(1)).clamp_min(0) + p[:, ranks:].sum(1)
    sign = work.get("scratch", n, v).fill_(1.0).scatter_(1, order, diff.sign())
    sign.sub_(_rowdot(q, sign)[:, None])
    return value, q.mul_(sign), None, mask, None


def _mixture_log_p(teacher, work: _Workspace, n: int, v: int) -> Tensor:
    """log sum_i w_i softmax(z_i / T) of one chunk, in the "log_p" buffer: each teacher's
    probabilities made in "scratch" and added in."""
    hiddens, heads, weights = teacher  # hidden already divided by T
    p = work.get("log_p", n, v).zero_()
    for hidden, head, w in zip(hiddens, heads, weights.tolist()):
        probs = torch.mm(hidden, head.T, out=work.get("scratch", n, v))
        torch.softmax(probs, 1, out=probs)
        p.add_(probs, alpha=w)
    return p.log_()


def _mixture_dots(teacher, log_q: Tensor, log_p: Tensor, spec: _Spec, work: _Workspace):
    """(n, T): <dD_t/dp, p_i> per row and teacher, D the divergence at the mixture p."""
    hiddens, heads, _ = teacher
    n, v = log_p.shape
    d_p = work.get("d_p", n, v)
    if spec.loss in ("reverse_kl", "bidirectional") or (spec.loss == "jsd" and spec.beta == 1):
        torch.sub(log_q, log_p, out=d_p).exp_().neg_()  # -q / p
        if spec.loss == "bidirectional":
            d_p.mul_(spec.beta).add_(log_p - log_q + 1, alpha=1 - spec.beta)
    elif spec.loss == "jsd" and spec.beta > 0:  # beta * (log p - log m)
        log_m = torch.logaddexp(log_q + math.log1p(-spec.beta), log_p + math.log(spec.beta))
        torch.sub(log_p, log_m, out=d_p).mul_(spec.beta)
    elif spec.loss == "tvd":
        torch.sub(log_p.exp(), log_q.exp(), out=d_p).sign_().mul_(0.5)
    else:  # forward KL (and jsd at beta 0): log p - log q + 1
        torch.sub(log_p, log_q, out=d_p).add_(1)
    dots = []
    for hidden, head in zip(hiddens, heads):
        probs = torch.mm(hidden, head.T, out=work.get("scratch", n, v))
        dots.append(_rowdot(torch.softmax(probs, 1, out=probs), d_p))
    return torch.stack(dots, 1)


def _rowdot(a: Tensor, b: Tensor) -> Tensor:
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).view(-1)


# Divergences between q = exp(log_q) and p = exp(log_p), normalized on the same support. Each
# returns D per row and dD/dz where q = softmax(z). They overwrite log_q and log_p and use
# ``scratch`` (same shape) for temporaries, but never return the gradient in it.

def _forward_kl(log_q: Tensor, log_p: Tensor, scratch: Tensor, beta: float):
    p = torch.exp(log_p, out=scratch)
    value = log_p.sub_(log_q).mul_(p).sum(1)
    return value, log_q.exp_().sub_(p)


def _reverse_kl(log_q: Tensor, log_p: Tensor, scratch: Tensor, beta: float):
    q = torch.exp(log_q, out=scratch)
    ratio = log_q.sub_(log_p)
    value = torch.mul(q, ratio, out=log_p).sum(1)
    return value, ratio.sub_(value[:, None]).mul_(q)


def _jsd(log_q: Tensor, log_p: Tensor, scratch: Tensor, beta: float):
    if beta == 0:
        return _forward_kl(log_q, log_p, scratch, beta)
    if beta == 1:
        return _reverse_kl(log_q, log_p, scratch, beta)
    log_m = torch.logaddexp(torch.add(log_q, math.log1p(-beta), out=scratch),
                            log_p + math.log(beta), out=scratch)
    kl_p = _rowdot(log_p.exp(), log_p.sub_(log_m))
    q = torch.exp(log_q, out=log_p)
    ratio = log_q.sub_(log_m)
    kl_q = _rowdot(q, ratio)
    # dD/dq = (1 - beta) * (log q - log m): the mixture's own terms cancel
    return beta * kl_p + (1 - beta) * kl_q, ratio.sub_(kl_q[:, None]).mul_(q).mul_(1 - beta)


def _bidirectional(log_q: Tensor, log_p: Tensor, scratch: Tensor, beta: float):
    p = torch.exp(log_p, out=scratch)
    ratio = log_p.sub_(log_q)  # log p - log q
    q = log_q.exp_()
    forward, reverse = _rowdot(p, ratio), -_rowdot(q, ratio)
    grad = ratio.add_(reverse[:, None]).mul_(q).mul_(-beta)  # beta * q * (log q/p - reverse)
    grad.add_(q, alpha=1 - beta).sub_(p, alpha=1 - beta)
    return (1 - beta) * forward + beta * reverse, grad


def _tvd(log_q: Tensor, log_p: Tensor, scratch: Tensor, beta: float):
    q = log_q.exp_()
    diff = torch.sub(q, torch.exp(log_p, out=scratch), out=log_p)  # q - p
    value = 0.5 * torch.linalg.vector_norm(diff, ord=1, dim=1)
    sign = diff.sign_().mul_(0.5)  # dD/dq (0 where p == q)
    return value, sign.sub_(_rowdot(q, sign)[:, None]).mul_(q)


_DIVERGENCES = {"forward_kl": _forward_kl, "reverse_kl": _reverse_kl, "jsd": _jsd,
                "bidirectional": _bidirectional, "tvd": _tvd}
