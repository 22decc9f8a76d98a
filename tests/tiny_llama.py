"""A tiny random Llama with SmolLM2's vocabulary, built locally, for the tests of notebooks 07 and 10's SmolLM2 code."""
import torch
from transformers import LlamaConfig, LlamaForCausalLM


def tiny_llama(tok, seed: int = 0) -> LlamaForCausalLM:
    """2 layers of width 32; the vocabulary is the tokenizer's less its one added placeholder (never looked up)."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok) - 1, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval()
