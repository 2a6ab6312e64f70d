"""distill.sft"""
