"""Feature and attention transfer: a student learns the teacher's hidden states (FitNets,
Romero et al. 2015) and attention maps (Zagoruyko & Komodakis 2017; MiniLM's KL form).

Layers are transformer blocks, numbered from 0. A *layer map* sends student block ``s`` to
teacher block ``t``; hidden states are the blocks' outputs (``hidden_states[s + 1]`` of a
transformers model, whose last entry is after the final norm), attention maps the blocks'
softmax weights (``attentions[s]``), which only eager attention returns.
"""

from __future__ import annotations

import torch
from torch import nn

from distill.errors import DistillError

FEATURE_LOSSES = ("mse", "cosine")
ATTENTION_LOSSES = ("kl", "mse")
PROJECTORS = ("linear", "mlp")


def uniform_layers(n_teacher: int, n_student: int) -> list[int]:
    """``n_student`` teacher blocks spread evenly from the first to the last (one student
    block: the last teacher block)."""
    if n_teacher < 1 or n_student < 1:
        raise DistillError(f"layer counts must be >= 1, got teacher {n_teacher}, "
                           f"student {n_student}")
    if n_student == 1:
        return [n_teacher - 1]
    return [round(i * (n_teacher - 1) / (n_student - 1)) for i in range(n_student)]


def parse_layer_map(spec: str | dict | None, n_student: int, n_teacher: int,
                    flag: str = "--feature-layers") -> dict[int, int]:
    """Student block -> teacher block. ``None``, ``""`` or ``"uniform"``: every student block,
    to ``uniform_layers``; ``"0:3,1:7"`` (or a dict): exactly those pairs."""
    if spec in (None, "", "uniform"):
        return dict(enumerate(uniform_layers(n_teacher, n_student)))
    if isinstance(spec, dict):
        pairs = list(spec.items())
    else:
        pairs = []
        for part in str(spec).split(","):
            s, sep, t = part.strip().partition(":")
            if not sep or not s.strip().isdigit() or not t.strip().isdigit():
                raise DistillError(f"{flag}: expected 'uniform' or STUDENT:TEACHER pairs like "
                                   f"'0:3,1:7', got {part.strip()!r}")
            pairs.append((s, t))
    mapping: dict[int, int] = {}
    for s, t in pairs:
        s, t = int(s), int(t)
        if not 0 <= s < n_student or not 0 <= t < n_teacher:
            raise DistillError(f"{flag}: pair {s}:{t} is out of range (student blocks "
                               f"0-{n_student - 1}, teacher blocks 0-{n_teacher - 1})")
        if s in mapping:
            raise DistillError(f"{flag}: student block {s} is mapped twice")
        mapping[s] = t
    return mapping


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``values`` [batch, seq, ...] over the positions where ``mask`` [batch, seq] is
    true (all positions when None)."""
    if mask is None:
        return values.mean()
    m = mask.to(values.dtype)
    m = m.reshape(m.shape + (1,) * (values.dim() - m.dim())).expand_as(values)
    return (values * m).sum() / m.sum().clamp_min(1)


class FeatureProjector(nn.Module):
    """One learned map per mapped student block from the student's hidden size to the
    teacher's: ``linear`` (FitNets' regressor) or ``mlp`` (Linear, GELU, Linear). Equal sizes
    need none (identity)."""

    def __init__(self, student_size: int, teacher_size: int, layers, kind: str = "linear"):
        super().__init__()
        if kind not in PROJECTORS:
            raise DistillError(f"projector must be one of {', '.join(PROJECTORS)}, got {kind!r}")
        self.kind = kind
        self.maps = nn.ModuleDict()
        if student_size != teacher_size:
            for layer in layers:
                self.maps[str(layer)] = nn.Linear(student_size, teacher_size) if kind == "linear" \
                    else nn.Sequential(nn.Linear(student_size, teacher_size), nn.GELU(),
                                       nn.Linear(teacher_size, teacher_size))

    def forward(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        key = str(layer)
        return self.maps[key](hidden) if key in self.maps else hidden


class FeatureDistillation(nn.Module):
    """Hidden-state matching over a layer map: the mean over mapped blocks of the per-token
    ``mse`` (mean over features) or ``cosine`` distance (1 - cos) between the projected
    student state and the teacher's, averaged over the tokens of ``mask``. Its projector is a
    submodule: train its parameters with the student's."""

    def __init__(self, layer_map: dict[int, int], student_size: int, teacher_size: int, *,
                 loss: str = "mse", projector: str = "linear"):
        super().__init__()
        if loss not in FEATURE_LOSSES:
            raise DistillError(f"feature loss must be one of {', '.join(FEATURE_LOSSES)}, "
                               f"got {loss!r}")
        if not layer_map:
            raise DistillError("feature distillation needs at least one mapped layer")
        self.layer_map = dict(layer_map)
        self.loss = loss
        self.projector = FeatureProjector(student_size, teacher_size, self.layer_map, projector)

    def forward(self, student_hidden, teacher_hidden, mask=None) -> torch.Tensor:
        losses = []
        for s, t in self.layer_map.items():
            hs = self.projector(s, student_hidden[s + 1])
            ht = teacher_hidden[t + 1].detach().to(hs.dtype)
            if self.loss == "mse":
                per_token = (hs - ht).pow(2).mean(-1)
            else:
                per_token = 1 - nn.functional.cosine_similarity(hs, ht, dim=-1, eps=1e-8)
            losses.append(masked_mean(per_token, mask))
        return torch.stack(losses).mean()

    @torch.no_grad()
    def cka(self, student_hidden, teacher_hidden, mask=None) -> dict[str, float]:
        """Linear CKA of each mapped pair (raw student states, no projector): a metric to
        report, 1 when the student's representation is the teacher's up to rotation and
        scale."""
        return {f"{s}:{t}": float(linear_cka(student_hidden[s + 1], teacher_hidden[t + 1], mask))
                for s, t in self.layer_map.items()}


def linear_cka(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Linear centered kernel alignment (Kornblith et al. 2019) of two representations of the
    same tokens, [..., d1] and [..., d2] (``mask`` picks the tokens):
    ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` with column-centered X, Y. In [0, 1];
    invariant to orthogonal transforms and isotropic scaling of either side."""
    x = x.detach().reshape(-1, x.shape[-1]).double()
    y = y.detach().reshape(-1, y.shape[-1]).double()
    if mask is not None:
        keep = mask.reshape(-1).bool().to(x.device)
        x, y = x[keep], y[keep]
    x = x - x.mean(0, keepdim=True)
    y = y - y.mean(0, keepdim=True)
    cross = (y.T @ x).pow(2).sum()
    return cross / ((x.T @ x).norm() * (y.T @ y).norm()).clamp_min(1e-30)


def align_heads(student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention maps [batch, heads, q, k] with as many heads on both sides: a teacher with k
    times the student's heads is averaged in groups of k adjacent heads; a student with k times
    the teacher's heads gets each teacher head repeated k times; other counts average both
    sides into gcd(heads) groups."""
    hs, ht = student.shape[1], teacher.shape[1]
    if hs == ht:
        return student, teacher
    if ht % hs == 0:
        return student, _group_mean(teacher, hs)
    if hs % ht == 0:
        return student, teacher.repeat_interleave(hs // ht, dim=1)
    g = torch.gcd(torch.tensor(hs), torch.tensor(ht)).item()
    return _group_mean(student, g), _group_mean(teacher, g)


def _group_mean(attn: torch.Tensor, groups: int) -> torch.Tensor:
    b, h, q, k = attn.shape
    return attn.reshape(b, groups, h // groups, q, k).mean(2)


def attention_loss(student_attn, teacher_attn, layer_map: dict[int, int], mask=None,
                   loss: str = "kl") -> torch.Tensor:
    """Attention transfer over a layer map (``attentions[s]`` vs ``attentions[t]``), heads
    aligned by ``align_heads``; mean over mapped blocks, heads and the query rows of ``mask``.
    ``kl``: KL(teacher row || student row), each row a distribution over keys; ``mse``: squared
    error averaged over the row's key positions (it shrinks as sequences grow)."""
    if loss not in ATTENTION_LOSSES:
        raise DistillError(f"attention loss must be one of {', '.join(ATTENTION_LOSSES)}, "
                           f"got {loss!r}")
    if not student_attn or not teacher_attn:
        raise DistillError("attention transfer got no attention maps: the models must run "
                           "eager attention with output_attentions=True (see use_eager)")
    losses = []
    for s, t in layer_map.items():
        a_s, a_t = align_heads(student_attn[s], teacher_attn[t].detach().to(student_attn[s].dtype))
        if a_s.shape != a_t.shape:
            raise DistillError(f"attention maps of student block {s} and teacher block {t} "
                               f"differ in shape: {tuple(a_s.shape)} vs {tuple(a_t.shape)}; "
                               "student and teacher need the same tokens")
        if loss == "kl":
            per_row = (torch.xlogy(a_t, a_t) - a_t * a_s.clamp_min(1e-12).log()).sum(-1)
        else:
            per_row = (a_s - a_t).pow(2).mean(-1)
        losses.append(masked_mean(per_row.transpose(1, 2), mask))  # [batch, q, heads]
    return torch.stack(losses).mean()


def use_eager(model, name: str = "model"):
    """Switch ``model`` to eager attention, the only implementation that returns attention
    maps (sdpa and flash attention return none, with only a warning), and check it took."""
    if getattr(model.config, "_attn_implementation", None) != "eager":
        model.set_attn_implementation("eager")
    require_eager(model, name)
    return model


def require_eager(model, name: str = "model") -> None:
    """A ``DistillError`` unless ``model`` runs eager attention."""
    impl = getattr(model.config, "_attn_implementation", None)
    if impl != "eager":
        raise DistillError(f"attention transfer needs attention maps, which only eager attention "
                           f"returns; the {name} uses {impl!r}. Load it with "
                           "attn_implementation='eager' or call distill.sft.kd.features."
                           "use_eager(model)")
