"""distill.filters"""
