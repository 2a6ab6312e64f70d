"""distill.sft.kd: logit, feature and attention distillation from teachers; offline capture."""
