"""transformers backend: batched ``generate`` with left padding. Runs anywhere torch runs.

Sampling is seeded once per call from the first request's seed, so with temperature > 0 a
row depends on the batch it fell into; greedy output does not. A structured output
constraint (``Sampling.output``) goes through xgrammar's logits processor. A request's own
``max_tokens`` stops its rows there while the rest of the batch goes on.
"""

from __future__ import annotations

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from distill.chat import ensure_chat_template
from distill.datagen.backends import (
    Backend,
    Completion,
    PromptLimit,
    Request,
    Sampling,
    context_length,
)
from distill.datagen.structured import hf_processor
from distill.models import load_model_and_tokenizer


class HFBackend(Backend):
    name = "hf"

    def __init__(self, model: str, *, device: str | None = None, dtype: str | None = None,
                 batch_size: int = 32):
        self.model = model
        self.batch_size = batch_size
        self.lm, self.tokenizer = load_model_and_tokenizer(model, device=device, dtype=dtype)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        ensure_chat_template(self.tokenizer)

    def prompt_limit(self) -> PromptLimit | None:
        found = context_length(self.lm.config)
        return PromptLimit(self.tokenizer, *found) if found else None

    @torch.inference_mode()
    def generate(self, requests: list[Request], sampling: Sampling) -> list[list[Completion]]:
        n = max(r.n for r in requests)
        texts = [self.tokenizer.apply_chat_template(r.messages, tokenize=False,
                                                    add_generation_prompt=not r.continue_final,
                                                    continue_final_message=r.continue_final)
                 for r in requests for _ in range(n)]
        batch = self.tokenizer(texts, return_tensors="pt", padding=True,
                               add_special_tokens=False).to(self.lm.device)
        prompt_lens = batch["attention_mask"].sum(dim=1).tolist()
        width = batch["input_ids"].shape[1]
        budgets = [r.max_tokens or sampling.max_tokens for r in requests for _ in range(n)]
        greedy = sampling.temperature == 0
        if not greedy:
            torch.manual_seed(requests[0].seed)
        constrain = [hf_processor(sampling.output, self.tokenizer,
                                  self.lm.config.get_text_config().vocab_size)] \
            if sampling.output else None
        out = self.lm.generate(
            **batch, max_new_tokens=max(budgets), do_sample=not greedy,
            temperature=None if greedy else sampling.temperature,
            top_p=None if greedy else sampling.top_p, top_k=None,
            pad_token_id=self.tokenizer.pad_token_id,
            stop_strings=sampling.stop or None, tokenizer=self.tokenizer,
            return_dict_in_generate=True, output_logits=sampling.logprobs > 0,
            logits_processor=constrain,
            stopping_criteria=StoppingCriteriaList([_Budgets(width, budgets, self.lm.device)]),
        )
        results = []
        for i, req in enumerate(requests):
            samples = []
            for j in range(req.n):
                k = i * n + j
                logits = [step[k] for step in out.logits] if sampling.logprobs else None
                ids = out.sequences[k, width:width + budgets[k]]  # then pads, once stopped
                samples.append(self._completion(ids, prompt_lens[k], sampling, logits))
            results.append(samples)
        return results

    def _completion(self, ids: torch.Tensor, prompt_tokens: int, sampling: Sampling,
                    logits: list[torch.Tensor] | None) -> Completion:
        eos = set(_as_list(self.lm.generation_config.eos_token_id)) | {self.tokenizer.eos_token_id}
        ids = ids.tolist()
        if self.tokenizer.pad_token_id not in eos:  # generate pads a row that hit a stop string
            while ids and ids[-1] == self.tokenizer.pad_token_id:  # while others went on
                ids.pop()
        length = len(ids)
        for pos, tok in enumerate(ids):
            if tok in eos:
                length = pos + 1
                break
        ended = length < len(ids) or (length and ids[length - 1] in eos)
        gen = ids[:length]
        text = self.tokenizer.decode(gen, skip_special_tokens=True)
        finish = "stop" if ended else "length"
        for stop in sampling.stop:
            cut = text.find(stop)
            if cut >= 0:
                text, finish = text[:cut], "stop"
        completion = Completion(text, finish, prompt_tokens, len(gen))
        if logits is not None:
            top = torch.stack(logits[:len(gen)]).float().log_softmax(-1).topk(sampling.logprobs)
            completion.top_ids = top.indices.tolist()
            completion.top_logprobs = top.values.tolist()
            completion.token_ids = gen
        return completion


class _Budgets(StoppingCriteria):
    """Stops each row of a batch once it has generated its own budget of tokens."""

    def __init__(self, width: int, budgets: list[int], device):
        self.width, self.budgets = width, torch.tensor(budgets, device=device)

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        return input_ids.shape[1] - self.width >= self.budgets


def _as_list(x) -> list:
    return [] if x is None else list(x) if isinstance(x, (list, tuple)) else [x]
