"""More terms for ``distill train kd``: feature and attention transfer, self-distillation, deep
supervision.

``TransferKDTrainer`` is the KD trainer with up to three more named loss terms:

* ``features``: ``feature_weight x`` hidden-state matching through learned projections, and
  ``attention``: ``attention_weight x`` attention-map matching (``distill.sft.kd.features``),
  each a mean over the micro-batch's tokens. They need the online teacher's hidden states or
  attention maps; attention needs eager attention, so both models are switched to it (and
  checked). The projections train with the student (their own optimizer group, gradients
  cleared after each step, not clipped with the model's) and are saved next to it as
  ``feature_projector.safetensors`` (in each checkpoint too, so a resumed run continues them);
  the student's folder loads without them.
* ``deep_supervision``: ``deep_supervision_weight x`` the mean over chosen intermediate student
  blocks of the KD term (alpha 1) with each block's output put through the final norm and LM
  head: the blocks learn the teacher's distribution too.

With ``self_distill_decay`` the teacher is an exponential moving average of the student
(``distill.sft.kd.ema``), updated after every optimizer step and saved as
``ema_teacher.safetensors`` (checkpoints included).
"""

from __future__ import annotations

from pathlib import Path

import torch
from accelerate.utils import is_peft_model

from distill.errors import DistillError
from distill.log import log
from distill.sft.kd.ema import EMACallback, EMATeacher
from distill.sft.kd.features import (
    ATTENTION_LOSSES,
    FEATURE_LOSSES,
    PROJECTORS,
    FeatureDistillation,
    attention_loss,
    parse_layer_map,
    use_eager,
)
from distill.sft.kd.losses import kd_loss
from distill.sft.kd.trainer import DistillKDTrainer, ZeroGrad

PROJECTOR_FILE = "feature_projector.safetensors"
EMA_FILE = "ema_teacher.safetensors"


def check_transfer_options(config) -> None:
    """DistillError for unusable settings of the extra terms of a ``DistillKDConfig``."""
    for name, choices in (("feature_loss", FEATURE_LOSSES), ("attention_loss", ATTENTION_LOSSES),
                          ("feature_projector", PROJECTORS)):
        if getattr(config, name) not in choices:
            raise DistillError(f"{name} must be one of {', '.join(choices)}, got "
                               f"{getattr(config, name)!r}")
    for kind in ("feature", "attention", "deep_supervision"):
        weight, layers = getattr(config, f"{kind}_weight"), getattr(config, f"{kind}_layers")
        if weight < 0:
            raise DistillError(f"{kind}_weight must be >= 0, got {weight}")
        if layers is not None and weight == 0:
            raise DistillError(f"{kind}_layers needs {kind}_weight > 0")
    decay = config.self_distill_decay
    if decay is not None and not 0 <= decay < 1:
        raise DistillError(f"self_distill_decay must be in [0, 1), got {decay}")
    if (config.feature_weight > 0 or config.attention_weight > 0) \
            and config.offline_logits is not None:
        raise DistillError("feature and attention transfer need the online teacher's hidden "
                           "states: pass --teacher (offline logits hold only top-k log-probs)")


def has_extra_terms(config) -> bool:
    return (config.feature_weight > 0 or config.attention_weight > 0
            or config.deep_supervision_weight > 0 or config.self_distill_decay is not None)


def transfer_card_lines(config) -> list[str]:
    """The training card's lines for the extra terms in use."""
    lines = []
    if config.feature_weight > 0:
        lines.append(f"- feature transfer: weight {config.feature_weight:g}, "
                     f"`{config.feature_loss}`, {config.feature_projector} projection, blocks "
                     f"{config.feature_layers or 'uniform'}")
    if config.attention_weight > 0:
        lines.append(f"- attention transfer: weight {config.attention_weight:g}, "
                     f"`{config.attention_loss}`, blocks {config.attention_layers or 'uniform'}")
    if config.deep_supervision_weight > 0:
        lines.append(f"- deep supervision: weight {config.deep_supervision_weight:g}, blocks "
                     f"{config.deep_supervision_layers or 'all intermediate'}")
    return lines


def parse_blocks(spec: str | None, n_student: int) -> list[int]:
    """Intermediate student blocks: ``"3,7"``, or all of them (0 .. n-2) when None."""
    last = n_student - 2
    if spec is None:
        blocks = list(range(n_student - 1))
    else:
        try:
            blocks = [int(x) for x in str(spec).split(",")]
        except ValueError:
            raise DistillError(f"deep_supervision_layers: expected block numbers like '3,7', "
                               f"got {spec!r}") from None
    if not blocks or not all(0 <= b <= last for b in blocks):
        raise DistillError(f"deep_supervision_layers must be intermediate student blocks "
                           f"(0-{last}); got {spec!r}")
    return blocks


class TransferKDTrainer(DistillKDTrainer):
    """``DistillKDTrainer`` plus the ``features``, ``attention`` and ``deep_supervision`` loss
    terms, and a self-distillation teacher."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        a = self.args
        student = _bare(self.model)
        self.ema = None
        if a.self_distill_decay is not None:
            self.ema = EMATeacher(student, a.self_distill_decay)
            self.teacher = self.ema.model
            self._teacher_head = self.teacher.get_output_embeddings().weight.detach()
            self.add_callback(EMACallback(self.ema, student))
        s_cfg = student.config.get_text_config()
        t_cfg = None if self.teacher is None else self.teacher.config.get_text_config()
        n_s = s_cfg.num_hidden_layers
        self.student_outputs, self.teacher_outputs = {}, {}
        self.features = self.attention_map = self.deep_blocks = None
        if a.feature_weight > 0:
            layer_map = parse_layer_map(a.feature_layers, n_s, t_cfg.num_hidden_layers,
                                        "--feature-layers")
            self.features = FeatureDistillation(
                layer_map, s_cfg.hidden_size, t_cfg.hidden_size, loss=a.feature_loss,
                projector=a.feature_projector).to(a.device)
            if self._projector_params() and a.world_size > 1:
                raise DistillError("feature projections train on one process only: run feature "
                                   "transfer on one device, or with equal hidden sizes")
            self.add_callback(ZeroGrad(self.features))
            self.student_outputs["output_hidden_states"] = True
            self.teacher_outputs["output_hidden_states"] = True
        if a.attention_weight > 0:
            self.attention_map = parse_layer_map(a.attention_layers, n_s,
                                                 t_cfg.num_hidden_layers, "--attention-layers")
            use_eager(student, "student")
            use_eager(self.teacher, "teacher")
            log("attention transfer: student and teacher run eager attention (the only one "
                 "that returns attention maps); expect slower steps and more memory")
            self.student_outputs["output_attentions"] = True
            self.teacher_outputs["output_attentions"] = True
        if a.deep_supervision_weight > 0:
            self.deep_blocks = parse_blocks(a.deep_supervision_layers, n_s)
            self.student_outputs["output_hidden_states"] = True

    def loss_terms(self, model, batch) -> dict:
        terms = super().loss_terms(model, batch)
        a = self.args
        mask = batch.inputs.get("attention_mask")
        mask = None if mask is None else mask.bool()
        share = self._share(batch)
        mode = "train" if self.model.training else "eval"
        if self.features is not None:
            s_hidden, t_hidden = batch.student.hidden_states, batch.teacher.hidden_states
            t_hidden = [h.to(s_hidden[0].device) for h in t_hidden]
            value = self.features(s_hidden, t_hidden, mask)
            terms["features"] = a.feature_weight * value * share
            self._metrics[mode]["feature_loss"].append(float(value.detach()))
            if mode == "eval" or (self.state.global_step + 1) % (self.state.logging_steps or 1) \
                    == 0:  # CKA costs (hidden x hidden) products per pair: on logging steps only
                cka = self.features.cka(s_hidden, t_hidden, mask)
                self._metrics[mode]["feature_cka"].append(sum(cka.values()) / len(cka))
        if self.attention_map is not None:
            s_attn = batch.student.attentions
            t_attn = [m.to(s_attn[0].device) for m in batch.teacher.attentions]
            value = attention_loss(s_attn, t_attn, self.attention_map, mask, a.attention_loss)
            terms["attention"] = a.attention_weight * value * share
            self._metrics[mode]["attention_loss"].append(float(value.detach()))
        if self.deep_blocks is not None:
            terms["deep_supervision"] = a.deep_supervision_weight * self._deep_supervision(
                model, batch, mode)
        return terms

    def _deep_supervision(self, model, batch, mode):
        """Mean over the chosen blocks of the KD term (alpha 1), normalized like the main one."""
        a = self.args
        student = _bare(self.accelerator.unwrap_model(model))
        norm, head = student.get_decoder().norm, student.get_output_embeddings().weight
        losses, kds = [], []
        for block in self.deep_blocks:
            hidden = norm(batch.student.hidden_states[block + 1][:, :-1][batch.mask])
            out = kd_loss(hidden, head, batch.target, batch.labels, batch.weights, loss=a.loss,
                          temperature=batch.temperature, alpha=1.0, beta=a.beta, top_k=a.top_k,
                          entropy_threshold=a.entropy_threshold, normalizer=batch.normalizer,
                          chunk_size=a.kd_chunk_size, covered=batch.covered)
            losses.append(out.loss)
            kds.append(out.kd)
        loss = torch.stack(losses).mean()
        if a.average_tokens_across_devices and batch.num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        self._metrics[mode]["deep_supervision"].append(float(torch.stack(kds).mean()))
        return loss

    def _share(self, batch):
        """This micro-batch's share of the accumulated batch's counted tokens (times the ranks,
        as the KD term is): per-micro-batch means then add up to a token-weighted mean."""
        if batch.num_items_in_batch is None:
            return 1.0
        share = batch.mask.sum() / batch.num_items_in_batch
        if self.args.average_tokens_across_devices:
            share = share * (self.accelerator.num_processes // self.get_tp_size())
        return share

    def _projector_params(self) -> list:
        return [] if self.features is None else list(self.features.parameters())

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        params = self._projector_params()
        if params and not any(p is params[0] for g in optimizer.param_groups
                              for p in g["params"]):
            optimizer.add_param_group({"params": params, "weight_decay": self.args.weight_decay})
        return optimizer

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        super().save_model(output_dir, _internal_call)
        if not self.args.should_save:
            return
        from safetensors.torch import save_file, save_model

        folder = Path(output_dir or self.args.output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        if self._projector_params():
            save_file({k: v.detach().contiguous().cpu()
                       for k, v in self.features.state_dict().items()}, folder / PROJECTOR_FILE)
        if self.ema is not None:
            save_model(self.ema.model, str(folder / EMA_FILE))

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        from safetensors.torch import load_file, load_model

        folder = Path(resume_from_checkpoint)
        if self.features is not None and (folder / PROJECTOR_FILE).exists():
            self.features.load_state_dict(load_file(folder / PROJECTOR_FILE,
                                                    device=str(self.args.device)))
        if self.ema is not None and (folder / EMA_FILE).exists():
            load_model(self.ema.model, str(folder / EMA_FILE), device=str(self.args.device))


def _bare(model):
    """The transformers model under a PEFT wrapper."""
    return model.get_base_model() if is_peft_model(model) else model

