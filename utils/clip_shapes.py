"""CLIP on ShapesWorld: the captioned data, the two text towers' encoders, the training recipe and the
zero-shot evaluation shared by notebooks 03-05 and scripts/train_clip.py.

Shapes: n images, K classes, d_t text-tower width, d_e joint embedding width.
"""
from __future__ import annotations

from dataclasses import asdict

import torch

from pathlib import Path

from . import clip, shapes, training, validate, vit
from .pretrained import load_minilm, mean_pooled_embeddings
from .text import tokenize, wordpiece_tokenizer

CLASSNAMES = [f"{c} {s}" for c in shapes.COLOR_NAMES for s in shapes.SHAPES]  # K = 24, index = 4 * colour + shape
TEMPLATES = ("a {}", "a photo of a {}", "there is a {}", "a small {}", "a large {}", "a picture of a {} on a dark background")

# how the shipped checkpoints are made (scripts/train_clip.py); notebook 03 trains a shorter run live
RECIPES = {
    "minilm": dict(tower="minilm", patch_size=4, n_train=16000, data_seed=11, steps=2000, batch_size=128, lr=2e-3, seed=0),
    "scratch": dict(tower="scratch", patch_size=4, n_train=16000, data_seed=11, steps=2000, batch_size=128, lr=2e-3, seed=0),
}


def clip_config(tower: str, patch_size: int = 4) -> clip.CLIPConfig:
    validate.choice("tower", tower, ("minilm", "scratch"))
    validate.integer("patch_size", patch_size, min=1)
    vision = vit.ViTConfig(image_size=32, patch_size=patch_size, dim=64, depth=4, heads=4, mlp_dim=128, num_classes=0)
    return clip.CLIPConfig(vision=vision, text_tower="frozen" if tower == "minilm" else "scratch", embed_dim=64)


class TextEncoder:
    """Texts -> projected text embeddings (n, d_e) for a TinyCLIP, whichever its text tower.

    For the frozen MiniLM tower the 384-d sentence features are computed once per distinct text and cached,
    since the tower never changes; only `text_projection` (W_t) is trained.
    """

    def __init__(self, tower: str):
        validate.choice("tower", tower, ("minilm", "scratch"))
        self.tower = tower
        if tower == "minilm":
            self.tokenizer, self.minilm = load_minilm()
            self.cache: dict[str, torch.Tensor] = {}
        else:
            self.tokenizer = wordpiece_tokenizer()

    def features(self, texts: list[str]) -> torch.Tensor:
        """(n, 384) frozen MiniLM features (minilm tower only)."""
        if self.tower != "minilm":
            raise ValueError("features() needs the minilm tower; this TextEncoder's tower is 'scratch' (use inputs())")
        texts = validate.strings("texts", texts)
        new = sorted({t for t in texts if t not in self.cache})
        if new:
            for t, f in zip(new, mean_pooled_embeddings(self.tokenizer, self.minilm, new)):
                self.cache[t] = f
        return torch.stack([self.cache[t] for t in texts])

    def inputs(self, texts: list[str]) -> dict:
        """The keyword arguments of `TinyCLIP.encode_text` / `forward` for these texts."""
        texts = validate.strings("texts", texts)
        if self.tower == "minilm":
            return {"text_features": self.features(texts)}
        ids, mask = tokenize(self.tokenizer, texts)
        return {"input_ids": ids, "attention_mask": mask}

    @torch.no_grad()
    def __call__(self, model: clip.TinyCLIP, texts: list[str]) -> torch.Tensor:
        validate.instance("model", model, clip.TinyCLIP)
        if (model.text_tower is None) != (self.tower == "minilm"):
            raise ValueError(f"model has a {'frozen' if model.text_tower is None else 'scratch'} text tower, this "
                             f"TextEncoder is {self.tower!r}: use TextEncoder({'minilm' if model.text_tower is None else 'scratch'!r})")
        model.eval()
        return model.encode_text(**self.inputs(list(texts)))


def captioned_images(n: int, seed: int, split: str = "train"):
    """(images (n, 3, 32, 32), captions, the datasets.Dataset) of one-object ShapesWorld scenes."""
    ds = shapes.make_shapes_dataset(n, seed=seed, split=split)
    (images,) = shapes.dataset_tensors(ds, [])
    return images, list(ds["caption"]), ds


@torch.no_grad()
def image_embeddings(model: clip.TinyCLIP, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    validate.instance("model", model, clip.TinyCLIP)
    validate.tensor("images", images, dim=4, floating=True)
    validate.integer("batch_size", batch_size, min=1)
    model.eval()
    return torch.cat([model.encode_image(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


def train_clip(tower: str, images: torch.Tensor, captions: list[str], encoder: TextEncoder, steps: int,
               batch_size: int = 128, lr: float = 2e-3, patch_size: int = 4, seed: int = 0, progress: bool = True):
    """Train a TinyCLIP on (image, caption) pairs with the shared loop; returns (model, History).

    Batches keep one image per distinct caption (`clip.first_occurrences`), so no caption in a batch is a
    false negative for another image. History.extra holds the temperature exp(t) and the batch size per step.
    """
    validate.choice("tower", tower, ("minilm", "scratch"))
    validate.tensor("images", images, dim=4, floating=True, finite=True)
    captions = validate.strings("captions", captions)
    if len(captions) != len(images):
        raise ValueError(f"images and captions must be aligned, got {len(images)} images and {len(captions)} captions")
    validate.instance("encoder", encoder, TextEncoder)
    if encoder.tower != tower:
        raise ValueError(f"encoder is a TextEncoder({encoder.tower!r}) but tower={tower!r}")
    torch.manual_seed(seed)
    model = clip.TinyCLIP(clip_config(tower, patch_size))
    vocab = {c: i for i, c in enumerate(sorted(set(captions)))}
    caption_ids = torch.tensor([vocab[c] for c in captions])
    texts = sorted(vocab, key=vocab.get)
    if tower == "minilm":
        encoder.features(texts)  # compute every distinct caption's frozen features once

    def loss_fn(model, batch):
        x, ids = batch
        keep = clip.first_occurrences(ids)
        out = model(x[keep], **encoder.inputs([texts[i] for i in ids[keep].tolist()]))
        return out["loss"], {"temperature exp(t)": model.logit_scale().item(), "pairs": len(keep)}

    cfg = training.TrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup=50, seed=seed, progress=progress)
    hist = training.train(model, (images, caption_ids), loss_fn, cfg)
    return model, hist


@torch.no_grad()
def zero_shot_eval(model: clip.TinyCLIP, encoder: TextEncoder, ds, templates=TEMPLATES,
                   classnames=CLASSNAMES) -> dict:
    """Zero-shot top-1 accuracy over the colour-shape classes, and for colour alone and shape alone.

    Colour (shape) predictions sum the class probabilities over shapes (colours). Returns accuracies in
    [0, 1] and the (n, K) similarities.
    """
    validate.instance("model", model, clip.TinyCLIP)
    validate.instance("encoder", encoder, TextEncoder)
    (images,) = shapes.dataset_tensors(ds, [])
    color, shape = (torch.tensor(ds[c]) for c in ("color", "shape"))
    classifier = clip.zero_shot_classifier(lambda t: encoder(model, t), classnames, templates)  # (K, d_e)
    sim = clip.zero_shot_predict(image_embeddings(model, images), classifier)                  # (n, K)
    probs = (sim * model.logit_scale()).softmax(-1).reshape(len(sim), len(shapes.COLOR_NAMES), len(shapes.SHAPES))
    return {"accuracy": (sim.argmax(1) == 4 * color + shape).float().mean().item(),
            "colour accuracy": (probs.sum(2).argmax(1) == color).float().mean().item(),
            "shape accuracy": (probs.sum(1).argmax(1) == shape).float().mean().item(),
            "similarity": sim}


def describe(hist, tower: str, recipe: dict) -> dict:
    """The JSON config of a trained checkpoint."""
    return {"tower": tower, "clip": asdict(clip_config(tower, recipe["patch_size"])), "recipe": recipe,
            "final_loss": round(sum(hist.loss[-50:]) / 50, 4)}


def load_shipped(tower: str, directory) -> clip.TinyCLIP:
    """A shipped TinyCLIP checkpoint (`clip_<tower>`), hash-checked against data/MANIFEST."""
    from .checkpoints import load_checkpoint

    validate.choice("tower", tower, ("minilm", "scratch"))
    directory = Path(validate.instance("directory", directory, (str, Path)))
    state, config = load_checkpoint(directory / f"clip_{tower}")
    model = clip.TinyCLIP(clip_config(tower, config["recipe"]["patch_size"]))
    model.load_state_dict(state)
    return model.eval()
