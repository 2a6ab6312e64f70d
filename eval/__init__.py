"""distill.eval: evaluate models on math tasks (accuracy, pass@k, maj@k), compare runs
(retention, agreement, divergence, plots), and evaluate during training (EvalCallback in
``distill.eval.callback``)."""

from distill.eval.compare import compare
from distill.eval.run import EvalResult, evaluate

__all__ = ["EvalResult", "compare", "evaluate"]
