"""CLIP: contrastive language-image pretraining, small enough to train on a CPU (notebooks 03 and 04).

Radford et al., 2021, "Learning Transferable Visual Models From Natural Language Supervision", Figure 3:

    I_f = image_encoder(I)                        # (n, d_i)
    T_f = text_encoder(T)                         # (n, d_t)
    I_e = l2_normalize(np.dot(I_f, W_i), axis=1)  # (n, d_e)
    T_e = l2_normalize(np.dot(T_f, W_t), axis=1)  # (n, d_e)
    logits = np.dot(I_e, T_e.T) * np.exp(t)       # (n, n)
    loss = (cross_entropy(logits, labels, axis=0) + cross_entropy(logits, labels, axis=1)) / 2

Shapes: n batch, d_i / d_t tower widths, d_e joint embedding width, L tokens, K classes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import validate
from .vit import EncoderBlock, ViT, ViTConfig

MAX_LOGIT_SCALE = 100.0  # the paper clips exp(t) at 100 "to prevent training instability"


# ----------------------------------------------------------------------------- the loss
def _check_pair(image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> None:
    validate.tensor("image_embeds", image_embeds, floating=True, finite=True)
    validate.tensor("text_embeds", text_embeds, floating=True, finite=True)
    if image_embeds.dim() != 2 or text_embeds.dim() != 2:
        raise ValueError(f"image_embeds and text_embeds must be 2-D (n, d_e), got shapes "
                         f"{tuple(image_embeds.shape)} and {tuple(text_embeds.shape)}")
    if image_embeds.shape[0] != text_embeds.shape[0]:
        raise ValueError(f"image_embeds and text_embeds must have the same batch size n, got "
                         f"{image_embeds.shape[0]} and {text_embeds.shape[0]}")
    if image_embeds.shape[1] != text_embeds.shape[1]:
        raise ValueError(f"image_embeds and text_embeds must have the same width d_e, got "
                         f"{image_embeds.shape[1]} and {text_embeds.shape[1]}")


def _check_t(t, like: torch.Tensor) -> torch.Tensor:
    """t as a 0-d tensor (a Python number is converted), finite, with exp(t) clipped at MAX_LOGIT_SCALE."""
    if isinstance(t, bool) or not isinstance(t, (torch.Tensor, float, int)):
        raise TypeError(f"t must be a 0-d tensor or a number (the log-temperature), got {type(t).__name__}")
    if not isinstance(t, torch.Tensor):
        t = torch.tensor(float(t), dtype=like.dtype, device=like.device)
    if t.dim() != 0 or not t.is_floating_point():
        raise ValueError(f"t must be a 0-d float tensor (the log-temperature), got shape {tuple(t.shape)}, dtype {t.dtype}")
    if not bool(torch.isfinite(t)):
        raise ValueError(f"t must be finite, got {t.item()}")
    return t.clamp(max=math.log(MAX_LOGIT_SCALE))  # as CLIP: "clipped to prevent scaling the logits by more than 100"


def clip_logits(image_embeds: torch.Tensor, text_embeds: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Scaled pairwise cosine similarities `logits_per_image` (n_images, n_texts) = I_e T_e^T exp(t).

    exp(t) is clipped at MAX_LOGIT_SCALE (100), as in the paper; `t` may be a 0-d tensor or a number.
    """
    validate.tensor("image_embeds", image_embeds, dim=2, floating=True, finite=True)
    validate.tensor("text_embeds", text_embeds, dim=2, floating=True, finite=True)
    if image_embeds.shape[1] != text_embeds.shape[1]:
        raise ValueError(f"image_embeds and text_embeds must have the same width d_e, got "
                         f"{image_embeds.shape[1]} and {text_embeds.shape[1]}")
    t = _check_t(t, image_embeds)
    I_e = F.normalize(image_embeds, dim=1)   # (n, d_e)
    T_e = F.normalize(text_embeds, dim=1)    # (n, d_e)
    return I_e @ T_e.T * t.exp()             # (n, n)


def clip_loss(image_embeds: torch.Tensor, text_embeds: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The symmetric contrastive loss of the CLIP pseudocode.

    Args:
        image_embeds: (n, d_e) projected image features I_f W_i, not yet normalized.
        text_embeds: (n, d_e) projected text features T_f W_t, not yet normalized; row i describes image i.
        t: 0-d tensor (or a number), the learned log-temperature (logits are scaled by exp(t), at most 100).
    Returns:
        0-d tensor: (cross-entropy over the rows + cross-entropy over the columns) / 2, labels arange(n).
    """
    _check_pair(image_embeds, text_embeds)
    n = image_embeds.shape[0]
    if n < 2:
        raise ValueError("a batch of 1 has no negatives: clip_loss needs n >= 2 image-text pairs")
    logits = clip_logits(image_embeds, text_embeds, t)          # (n, n)
    labels = torch.arange(n, device=logits.device)
    # the pseudocode's names: loss_i over axis=0 (each text, a column, picks its image among the n images),
    # loss_t over axis=1 (each image, a row, picks its text), as notebook 03 writes them
    loss_i = F.cross_entropy(logits.T, labels)                    # axis=0: softmax down each column
    loss_t = F.cross_entropy(logits, labels)                      # axis=1: softmax along each row
    return (loss_i + loss_t) / 2


# ----------------------------------------------------------------------------- the towers
@dataclass
class CLIPConfig:
    vision: ViTConfig = field(default_factory=lambda: ViTConfig(dim=64, depth=4, heads=4, mlp_dim=128, num_classes=0))
    text_tower: str = "scratch"   # 'scratch' (TextTransformer) or 'frozen' (precomputed features, e.g. MiniLM)
    vocab_size: int = 30522       # the MiniLM WordPiece vocabulary
    max_len: int = 24             # longest caption, in tokens
    text_width: int = 64          # d_t of the scratch text tower
    text_depth: int = 2
    text_heads: int = 4
    frozen_width: int = 384       # d_t of a frozen tower's features (MiniLM: 384)
    embed_dim: int = 64           # d_e, the joint embedding width
    init_t: float = math.log(1 / 0.07)

    def __post_init__(self):
        validate.instance("vision", self.vision, ViTConfig)
        for name in ("vocab_size", "max_len", "text_width", "text_depth", "text_heads", "frozen_width", "embed_dim"):
            validate.integer(name, getattr(self, name), min=1)
        if self.text_width % self.text_heads:
            raise ValueError(f"text_width={self.text_width} must be divisible by text_heads={self.text_heads}")
        validate.number("init_t", self.init_t)
        if self.text_tower not in {"scratch", "frozen"}:
            raise ValueError(f"text_tower must be 'scratch' or 'frozen', got {self.text_tower!r}")
        if self.vision.num_classes != 0:
            raise ValueError("the image tower must have num_classes=0 (it returns features, not logits)")


class TextTransformer(nn.Module):
    """Token + position embeddings -> pre-LN Transformer blocks -> LayerNorm -> mean over real tokens."""

    def __init__(self, cfg: CLIPConfig):
        super().__init__()
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.text_width)
        self.position_embedding = nn.Parameter(torch.randn(1, cfg.max_len, cfg.text_width) * 0.02)
        self.blocks = nn.ModuleList(EncoderBlock(cfg.text_width, cfg.text_heads, 2 * cfg.text_width)
                                    for _ in range(cfg.text_depth))
        self.norm = nn.LayerNorm(cfg.text_width)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(n, L) token ids and 0/1 mask -> (n, d_t) features."""
        L = input_ids.shape[1]
        x = self.token_embedding(input_ids) + self.position_embedding[:, :L]  # (n, L, d_t)
        keep = attention_mask.bool()[:, None, None, :]                         # (n, 1, 1, L): keys to attend to
        for block in self.blocks:
            x = block(x, mask=keep)
        x = self.norm(x)
        m = attention_mask.unsqueeze(-1).to(x.dtype)                           # (n, L, 1)
        return (x * m).sum(1) / m.sum(1).clamp_min(1.0)                        # (n, d_t)


class TinyCLIP(nn.Module):
    """vision_tower (a ViT) and a text tower, the projections W_i and W_t, and the log-temperature t."""

    def __init__(self, cfg: CLIPConfig):
        super().__init__()
        self.cfg = cfg
        self.vision_tower = ViT(cfg.vision)
        self.visual_projection = nn.Linear(cfg.vision.dim, cfg.embed_dim, bias=False)   # W_i
        if cfg.text_tower == "scratch":
            self.text_tower = TextTransformer(cfg)
            d_t = cfg.text_width
        else:
            self.text_tower = None  # features come precomputed from a frozen pretrained encoder
            d_t = cfg.frozen_width
        self.text_projection = nn.Linear(d_t, cfg.embed_dim, bias=False)                  # W_t
        self.t = nn.Parameter(torch.tensor(float(cfg.init_t)))

    def logit_scale(self) -> torch.Tensor:
        """exp(t), clipped at 100."""
        return self.t.clamp(max=math.log(MAX_LOGIT_SCALE)).exp()

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(n, 3, H, W) -> (n, d_e) projected image features (not normalized)."""
        return self.visual_projection(self.vision_tower(images))

    def encode_text(self, input_ids=None, attention_mask=None, text_features=None) -> torch.Tensor:
        """Token ids (scratch tower) or precomputed features (frozen tower) -> (n, d_e), not normalized."""
        if self.text_tower is None:
            if text_features is None:
                raise ValueError("this CLIP has a frozen text tower: pass text_features (n, d_t)")
            return self.text_projection(text_features)
        if input_ids is None or attention_mask is None:
            raise ValueError("this CLIP has a scratch text tower: pass input_ids and attention_mask")
        return self.text_projection(self.text_tower(input_ids, attention_mask))

    def forward(self, images, input_ids=None, attention_mask=None, text_features=None) -> dict:
        image_embeds = self.encode_image(images)
        text_embeds = self.encode_text(input_ids, attention_mask, text_features)
        t = self.logit_scale().log()
        return {"loss": clip_loss(image_embeds, text_embeds, t),
                "logits_per_image": clip_logits(image_embeds, text_embeds, t),
                "image_embeds": image_embeds, "text_embeds": text_embeds}


# ----------------------------------------------------------------------------- zero-shot and retrieval
def zero_shot_classifier(encode_texts: Callable[[list[str]], torch.Tensor], classnames: Sequence[str],
                         templates: Sequence[str]) -> torch.Tensor:
    """The lecture's "create dataset classifier from label text", with prompt ensembling.

    Each class's weight is the mean of its L2-normalized prompt embeddings over `templates` (each with a
    `{}` for the class name), normalized again. Returns (K, d_e) unit rows.
    """
    if not callable(encode_texts):
        raise TypeError(f"encode_texts must be a function texts -> (n, d_e) embeddings, got {type(encode_texts).__name__}")
    classnames = validate.strings("classnames", classnames)
    templates = validate.strings("templates", templates)
    if any("{}" not in t for t in templates):
        raise ValueError(f"every template must contain '{{}}' for the class name, got {templates!r}")
    prompts = [t.format(c) for c in classnames for t in templates]
    out = encode_texts(prompts)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or len(out) != len(prompts):
        raise ValueError(f"encode_texts must return a ({len(prompts)}, d_e) tensor for {len(classnames)} classes x "
                         f"{len(templates)} templates, got {tuple(getattr(out, 'shape', ())) or type(out).__name__}")
    validate.tensor("encode_texts(prompts)", out, floating=True, finite=True)
    emb = F.normalize(out, dim=-1).reshape(len(classnames), len(templates), -1)  # (K, T, d_e)
    return F.normalize(emb.mean(1), dim=-1)                                                      # (K, d_e)


def zero_shot_predict(image_embeds: torch.Tensor, classifier: torch.Tensor) -> torch.Tensor:
    """The lecture's "use for zero-shot prediction": (n, d_e) images x (K, d_e) classes -> (n, K) cosines."""
    validate.tensor("image_embeds", image_embeds, dim=2, floating=True, finite=True)
    validate.tensor("classifier", classifier, dim=2, floating=True, finite=True)
    if image_embeds.shape[1] != classifier.shape[1]:
        raise ValueError(f"image_embeds (n, d_e) and classifier (K, d_e) must have the same d_e, got "
                         f"{tuple(image_embeds.shape)} and {tuple(classifier.shape)}")
    return F.normalize(image_embeds, dim=-1) @ classifier.T


def recall_at_k(similarity: torch.Tensor, k: int) -> float:
    """Share of queries (rows) whose match (the same index) is among the k most similar columns."""
    validate.tensor("similarity", similarity, dim=2, finite=True)
    if similarity.shape[0] != similarity.shape[1]:
        raise ValueError(f"similarity must be square (query i matches item i), got {tuple(similarity.shape)}")
    validate.integer("k", k, 1, similarity.shape[1])
    topk = similarity.topk(k, dim=1).indices                     # (n, k)
    return (topk == torch.arange(len(similarity))[:, None]).any(1).float().mean().item()


def first_occurrences(keys: torch.Tensor) -> torch.Tensor:
    """Indices of the first occurrence of each distinct key, in batch order.

    Two images with the same caption in one batch would each count the other's caption as a negative;
    keeping one of them removes those false negatives.
    """
    validate.tensor("keys", keys)
    if keys.dim() != 1:
        raise ValueError(f"keys must be 1-D, got shape {tuple(keys.shape)}")
    order = torch.arange(len(keys))
    same = keys[:, None] == keys[None, :]                       # (n, n)
    earlier = same & (order[None, :] < order[:, None])          # a duplicate of an earlier row
    return order[~earlier.any(1)]
