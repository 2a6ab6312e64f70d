"""Chat formatting shared by generation and training: the tokenizer's own chat template,
or a ChatML default when it has none."""

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def ensure_chat_template(tokenizer) -> None:
    """Give a tokenizer without a chat template the ChatML default."""
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHATML
