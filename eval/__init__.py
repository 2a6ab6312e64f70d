"""distill.eval"""
