"""The online CLIP section's code, run offline on a tiny CLIPConfig saved to a temporary folder."""
import json

import numpy as np
import torch
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

from utils import pretrained


def make_tiny_clip(folder):
    words = ["a", "photo", "of", "cat", "dog", "rocket", "."]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for w in words:
        vocab[w + "</w>"] = len(vocab)
    for ch in "abcdefghijklmnopqrstuvwxyz.":
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=32, bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4),
        projection_dim=16)
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)


def test_hf_clip_zero_shot_on_a_tiny_local_model(tmp_path):
    make_tiny_clip(tmp_path)
    model, processor = pretrained.load_hf_clip(tmp_path)
    images = [np.random.default_rng(i).integers(0, 255, (40, 50, 3), dtype=np.uint8) for i in range(3)]
    probs = pretrained.hf_clip_zero_shot(model, processor, images, ["cat", "dog", "rocket"],
                                         templates=("a photo of a {}.", "a {}."))
    assert probs.shape == (3, 3)
    torch.testing.assert_close(probs.sum(-1), torch.ones(3))
    # the same numbers straight from transformers' CLIPModel forward, with one template
    one = pretrained.hf_clip_zero_shot(model, processor, images, ["cat", "dog", "rocket"])
    inputs = processor(text=[f"a photo of a {c}." for c in ["cat", "dog", "rocket"]], images=images,
                       return_tensors="pt", padding=True)
    with torch.no_grad():
        ref = model(**inputs).logits_per_image.softmax(-1)
    torch.testing.assert_close(one, ref, atol=1e-5, rtol=0)
