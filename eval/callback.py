"""A transformers ``TrainerCallback`` that runs a small eval every N steps and logs it.

It knows nothing of the training code: any ``Trainer`` (TRL's included) can take it. Each eval
is a full ``distill eval`` run on the model being trained (greedy, in memory, no reload),
written to ``<output_dir>/eval/step-<N>``, and its numbers are logged as ``<prefix>accuracy``,
``<prefix>format_compliance`` and ``<prefix>mean_tokens``:

```python
trainer = Trainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer)
trainer.add_callback(EvalCallback("gsm8k", every=200, limit=50, trainer=trainer))
```

With ``trainer`` the numbers go through ``trainer.log`` (so every reporter sees them);
without it they are appended to ``state.log_history``.
"""

from __future__ import annotations

from pathlib import Path

from transformers import TrainerCallback

from distill.chat import ensure_chat_template
from distill.datagen.backends.hf import HFBackend

LOGGED = ("accuracy", "format_compliance", "answered", "mean_tokens")


class ModelBackend(HFBackend):
    """The hf backend around a model already in memory (the one being trained): eval mode
    and left padding only while generating, restored after."""

    def __init__(self, lm, tokenizer, batch_size: int = 16, name: str = "in-memory"):
        self.lm, self.tokenizer, self.batch_size = lm, tokenizer, batch_size
        self.model = name
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        ensure_chat_template(self.tokenizer)

    def generate(self, requests, sampling):
        training, side = self.lm.training, self.tokenizer.padding_side
        use_cache = getattr(self.lm.config, "use_cache", None)
        self.lm.eval()
        self.tokenizer.padding_side = "left"
        self.lm.config.use_cache = True
        try:
            return super().generate(requests, sampling)
        finally:
            self.tokenizer.padding_side = side
            self.lm.config.use_cache = use_cache
            self.lm.train(training)


class EvalCallback(TrainerCallback):
    """Every ``every`` optimizer steps (and at the end of training, with ``at_end``), evaluate
    the model on the first ``limit`` items of ``task`` with ``prompt``, greedy, at most
    ``max_tokens`` new tokens; log the metrics under ``prefix``."""

    def __init__(self, task: str = "gsm8k", *, every: int = 100, limit: int = 32,
                 prompt: str = "gsm8k-cot", max_tokens: int = 256, batch_size: int = 16,
                 prefix: str = "eval_task/", out: str | Path | None = None,
                 at_end: bool = True, trainer=None, tokenizer=None):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.task, self.every, self.limit, self.prompt = task, every, limit, prompt
        self.max_tokens, self.batch_size, self.prefix = max_tokens, batch_size, prefix
        self.out, self.at_end, self.trainer, self.tokenizer = out, at_end, trainer, tokenizer
        self.history: list[dict] = []
        self._last_step = -1

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0:
            self._run(args, state, control, **kwargs)

    def on_train_end(self, args, state, control, **kwargs):
        if self.at_end and state.global_step != self._last_step:
            self._run(args, state, control, **kwargs)

    def _run(self, args, state, control, model=None, processing_class=None, **_):
        from distill.eval.run import evaluate

        tokenizer = self.tokenizer or processing_class
        if model is None or tokenizer is None:
            raise ValueError("EvalCallback needs the model and a tokenizer: pass tokenizer= "
                             "or give the Trainer a processing_class")
        tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # a processor's tokenizer
        self._last_step = state.global_step
        out = Path(self.out or Path(args.output_dir) / "eval") / f"step-{state.global_step:06d}"
        engine = ModelBackend(model, tokenizer, self.batch_size,
                              name=f"{args.output_dir}@step-{state.global_step}")
        result = evaluate(None, self.task, out, prompt=self.prompt, limit=self.limit,
                          backend=engine, max_tokens=self.max_tokens, progress=False)
        logs = {f"{self.prefix}{k}": float(result.metrics[k]) for k in LOGGED}
        self.history.append({"step": state.global_step, **logs})
        if self.trainer is not None:
            should_log = control.should_log  # trainer.log clears it: the loss log of this
            self.trainer.log(logs)           # step must still happen
            control.should_log = should_log
        else:
            state.log_history.append({**logs, "step": state.global_step})
