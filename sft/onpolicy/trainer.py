"""TRL's ``DistillationTrainer`` with GKD's choice of who samples the completions.

TRL's stable trainer always lets the student sample (on-policy). GKD (Agarwal et al. 2024)
mixes: per generation batch, with probability ``lmbda`` the student samples, else with
``seq_kd`` the teacher does, else the dataset's completions are used. The prompts are the
ones ``build_examples`` tokenized (the ids ``train sft`` sees), not re-rendered by TRL."""

from __future__ import annotations

import random

import torch
from trl import DistillationTrainer
from trl.experimental.server_distillation import ServerDistillationTrainer
from trl.trainer.utils import pad


class MixedSampling:
    """Overrides of ``DistillationTrainer``: the batch's rows carry ``prompt_ids`` and
    ``completion_ids`` (the dataset's completion); ``sampler`` says who samples."""

    def _generate_and_score_completions(self, inputs):
        self._rows = inputs
        return super()._generate_and_score_completions(inputs)

    def _tokenize_prompts(self, prompts):
        return [row["prompt_ids"] for row in self._rows], None, {}

    def sampler(self) -> str:
        """'student', 'teacher' or 'dataset' for this step's generation batch: the same draw
        on every process and after a resume (seeded by seed and step). Evaluation scores the
        dataset's completions."""
        if not self.model.training:
            return "dataset"
        draw = random.Random(f"{self.args.seed}:{self.state.global_step}").random()
        if draw < self.args.lmbda:
            return "student"
        return "teacher" if self.args.seq_kd else "dataset"

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, has_tool_images=False):
        who = self.sampler()
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["on_policy"].append(float(who == "student"))
        if who == "student":
            return super()._generate_single_turn(prompt_ids, images, multimodal_fields,
                                                 has_tool_images)
        if who == "teacher":
            return self._teacher_samples(prompt_ids)
        return [row["completion_ids"] for row in self._rows]

    def _teacher_samples(self, prompt_ids: list[list[int]]) -> list[list[int]]:
        """The teacher's sampled completions (transformers ``generate``, the student's
        generation settings), each cut after its first end-of-sequence token."""
        prompts = [torch.tensor(ids) for ids in prompt_ids]
        device = self.accelerator.device
        ids = pad(prompts, padding_value=self._tokenizer.pad_token_id, padding_side="left")
        mask = pad([torch.ones_like(p) for p in prompts], padding_value=0, padding_side="left")
        teacher = self.accelerator.unwrap_model(self.teacher_model)
        with torch.no_grad():
            out = teacher.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                   generation_config=self.generation_config)
        samples = []
        for row in out[:, ids.shape[1]:].tolist():
            end = next((i for i, t in enumerate(row) if t in self.eos_token_ids), len(row) - 1)
            samples.append(row[:end + 1])
        return samples


class OnPolicyTrainer(MixedSampling, DistillationTrainer):
    """The teacher is a local model."""


class ServerOnPolicyTrainer(MixedSampling, ServerDistillationTrainer):
    """The teacher is served (``vllm serve``): its top-1 log-probs per token come over
    HTTP."""
