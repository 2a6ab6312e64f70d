"""distill.sft.onpolicy: on-policy distillation (the student learns on its own samples)."""
