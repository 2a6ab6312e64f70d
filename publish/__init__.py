"""distill.publish: a dataset folder made ready for the hub (splits, formats, card, push) and
shown (terminal summary, HTML page)."""
