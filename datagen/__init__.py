"""distill.datagen: a teacher writes CoT, PoT and instruction data from prompt files."""

from distill.datagen.generate import GenerateResult, generate
from distill.datagen.prompts import PromptFile, list_prompts, load_prompt

__all__ = ["GenerateResult", "PromptFile", "generate", "list_prompts", "load_prompt"]
