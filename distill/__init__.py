"""distill: synthetic-data and chain-of-thought distillation of language models."""

from distill.errors import DistillError

__version__ = "0.1.0"
__all__ = ["DistillError", "__version__"]
