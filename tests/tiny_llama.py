"""A tiny random Llama with SmolLM2's vocabulary, built locally, for the tests of notebooks 07 and 10's SmolLM2 code."""
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from utils import assistant as A
from utils import smollm

LORA = dict(A.LORA, r=2, lora_alpha=4)                # the shipped LoRA recipe at a tiny rank


def smol_tokenizer(add_placeholder):
    """SmolLM2's tokenizer with one placeholder added by `add_placeholder` (`smollm.add_image_token`,
    `audio_lm.add_audio_token`)."""
    t = AutoTokenizer.from_pretrained(smollm.smollm_dir())
    add_placeholder(t)
    return t


def tiny_llama(tok, seed: int = 0) -> LlamaForCausalLM:
    """2 layers of width 32; the vocabulary is the tokenizer's less its one added placeholder (never looked up)."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok) - 1, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval()
