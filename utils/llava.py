"""LLaVA from the parts: vision tower -> connector -> decoder LM (notebooks 06 and 07; reused by 08 and 10).

Liu et al., 2023, "Visual Instruction Tuning" (LLaVA: a linear projection) and 2024, "Improved Baselines with
Visual Instruction Tuning" (LLaVA-1.5: `mlp2x_gelu`); Alayrac et al., 2022, "Flamingo" and Meta's Llama 3.2
Vision (gated cross-attention layers inside the LM, tanh gates initialised at 0). Names follow transformers'
`LlavaForConditionalGeneration`: `vision_tower`, `multi_modal_projector`, `language_model`,
`vision_feature_layer`, `vision_feature_select_strategy`; the projector's layers are `linear_1`, `linear_2`.

The splice: the prompt holds one `<image>` placeholder per row; its embedding is replaced by the N projected
image features, so the LM reads L - 1 + N vectors and never sees pixels (`utils.lm` knows nothing of images).
Shapes: B batch, L tokens, N image tokens, D_v vision width, D LM width, V vocabulary.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from .lm import IGNORE_INDEX, LM, RMSNorm

CONNECTORS = ("linear", "mlp2x_gelu", "cross_attention")
SELECT_STRATEGIES = ("default", "full", "cls")


# ----------------------------------------------------------------------------- the splice
def _insert(rows: torch.Tensor, positions: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    """Replace element positions[b] of each row b of `rows` (B, L, ...) by blocks[b] (N, ...): (B, L - 1 + N, ...)."""
    return torch.stack([torch.cat([rows[b, :p], blocks[b], rows[b, p + 1:]]) for b, p in enumerate(positions.tolist())])


def splice_image_features(input_ids: torch.Tensor, token_embeds: torch.Tensor, image_features: torch.Tensor,
                          image_token_id: int, labels: torch.Tensor | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Put each row's N image features where its `<image>` placeholder is (notebook 06).

    Args:
        input_ids: (B, L) token ids with exactly one `image_token_id` per row, anywhere in the row.
        token_embeds: (B, L, D) the LM's embeddings of `input_ids`.
        image_features: (B, N, D) projected image features, in order.
        image_token_id: the placeholder's token id.
        labels: optional (B, L) targets aligned with `input_ids`.
    Returns:
        inputs_embeds (B, L - 1 + N, D): the placeholder's embedding replaced by the N features, every other
        embedding unchanged; labels (B, L - 1 + N) with IGNORE_INDEX at the N image positions, or None.
    """
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (B, L), got shape {tuple(input_ids.shape)}")
    B, L = input_ids.shape
    if token_embeds.dim() != 3 or token_embeds.shape[:2] != (B, L):
        raise ValueError(f"token_embeds must be (B, L, D) = ({B}, {L}, D) like input_ids, got {tuple(token_embeds.shape)}")
    if image_features.dim() != 3 or image_features.shape[0] != B:
        raise ValueError(f"image_features must be (B, N, D) with B={B}, got {tuple(image_features.shape)}")
    if image_features.shape[2] != token_embeds.shape[2]:
        raise ValueError(f"image_features have width D={image_features.shape[2]} but token_embeds "
                         f"D={token_embeds.shape[2]}: project the features to the LM's width first")
    if labels is not None and labels.shape != (B, L):
        raise ValueError(f"labels must have shape {(B, L)} like input_ids, got {tuple(labels.shape)}")
    is_image = input_ids == image_token_id                                # (B, L)
    counts = is_image.sum(1)
    if (counts != 1).any():
        b = int((counts != 1).nonzero()[0])
        raise ValueError(f"input_ids row {b} has {int(counts[b])} image placeholders (id {image_token_id}); "
                         f"each row needs exactly one")
    positions = is_image.long().argmax(1)                                 # (B,) where each placeholder is
    embeds = _insert(token_embeds, positions, image_features.to(token_embeds.dtype))  # (B, L - 1 + N, D)
    if labels is None:
        return embeds, None
    ignore = torch.full(image_features.shape[:2], IGNORE_INDEX, dtype=labels.dtype, device=labels.device)
    return embeds, _insert(labels, positions, ignore)                     # (B, L - 1 + N)


# ----------------------------------------------------------------------------- connectors
class MultiModalProjector(nn.Module):
    """`mlp2x_gelu` (LLaVA-1.5): linear_1 -> GELU -> linear_2, as transformers' `LlavaMultiModalProjector`."""

    def __init__(self, vision_dim: int, text_dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(vision_dim, text_dim)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(text_dim, text_dim)

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(image_features)))    # (B, N, D)


def make_projector(connector: str, vision_dim: int, text_dim: int) -> nn.Module:
    """`linear` (LLaVA), `mlp2x_gelu` (LLaVA-1.5), or for `cross_attention` the Linear that Llama 3.2 uses
    to bring vision features to the LM's width before its cross-attention layers."""
    if connector not in CONNECTORS:
        raise ValueError(f"connector must be one of {CONNECTORS}, got {connector!r}")
    if connector == "mlp2x_gelu":
        return MultiModalProjector(vision_dim, text_dim)
    return nn.Linear(vision_dim, text_dim)


class GatedCrossAttentionBlock(nn.Module):
    """Flamingo's GATED XATTN-DENSE block, run before an LM layer (the LM's own layers stay as they were):

        x = x + tanh(attn_gate) * CrossAttention(RMSNorm(x), image features)
        x = x + tanh(ff_gate) * FFW(RMSNorm(x))

    With both gates at 0 (the initialisation) the block is the identity, so the pretrained LM is unchanged
    at the start of training.
    """

    def __init__(self, dim: int, heads: int, hidden_dim: int, eps: float = 1e-5):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} must be divisible by heads={heads}")
        self.heads = heads
        self.norm_attn, self.norm_ff = RMSNorm(dim, eps), RMSNorm(dim, eps)
        self.q_proj, self.k_proj = nn.Linear(dim, dim, bias=False), nn.Linear(dim, dim, bias=False)
        self.v_proj, self.o_proj = nn.Linear(dim, dim, bias=False), nn.Linear(dim, dim, bias=False)
        self.ff = nn.Sequential(nn.Linear(dim, hidden_dim, bias=False), nn.GELU(), nn.Linear(hidden_dim, dim, bias=False))
        self.attn_gate = nn.Parameter(torch.zeros(()))
        self.ff_gate = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """x: (B, L, D) the LM's hidden states; context: (B, N, D) projected image features."""
        B, L, D = x.shape
        H, N = self.heads, context.shape[1]
        q = self.q_proj(self.norm_attn(x)).view(B, L, H, D // H).transpose(1, 2)   # (B, H, L, D/H)
        k = self.k_proj(context).view(B, N, H, D // H).transpose(1, 2)             # (B, H, N, D/H)
        v = self.v_proj(context).view(B, N, H, D // H).transpose(1, 2)             # (B, H, N, D/H)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, L, D)  # every token sees every image token
        x = x + self.attn_gate.tanh() * self.o_proj(a)                             # (B, L, D)
        return x + self.ff_gate.tanh() * self.ff(self.norm_ff(x))


# ----------------------------------------------------------------------------- the model
@dataclass
class TinyLlavaConfig:
    connector: str = "mlp2x_gelu"               # 'linear' (LLaVA), 'mlp2x_gelu' (LLaVA-1.5), 'cross_attention' (Flamingo)
    vision_feature_layer: int | list[int] = -2  # index into the tower's hidden states (0 = patch embeddings, -1 =
    #                                             the last block); a list concatenates layers (Llama 3.2)
    vision_feature_select_strategy: str = "default"  # 'default' drops CLS, 'full' keeps it, 'cls' keeps only CLS
    image_token_id: int = 4                     # the `<image>` placeholder's id in utils.lm_data's tokenizer
    cross_attention_layers: list[int] = field(default_factory=lambda: [0, 2])  # decoder layers that get a gated
    #                                             cross-attention block before them (connector 'cross_attention')
    freeze_vision_tower: bool = True            # LLaVA keeps the CLIP tower frozen in both stages

    def __post_init__(self):
        if self.connector not in CONNECTORS:
            raise ValueError(f"connector must be one of {CONNECTORS}, got {self.connector!r}")
        if self.vision_feature_select_strategy not in SELECT_STRATEGIES:
            raise ValueError(f"vision_feature_select_strategy must be one of {SELECT_STRATEGIES}, "
                             f"got {self.vision_feature_select_strategy!r}")
        if isinstance(self.vision_feature_layer, (list, tuple)) and not self.vision_feature_layer:
            raise ValueError("vision_feature_layer must be an int or a non-empty list of ints")


def select_image_features(hidden_states: list[torch.Tensor] | tuple, vision_feature_layer: int | list[int],
                          strategy: str) -> torch.Tensor:
    """LLaVA's choice of image tokens: the hidden states (B, 1 + N, D_v) of one layer, or of several
    concatenated along the width (B, 1 + N, k * D_v), without CLS ('default'), with it ('full') or only CLS ('cls')."""
    if strategy not in SELECT_STRATEGIES:
        raise ValueError(f"strategy must be one of {SELECT_STRATEGIES}, got {strategy!r}")
    layers = [vision_feature_layer] if isinstance(vision_feature_layer, int) else list(vision_feature_layer)
    feats = torch.cat([hidden_states[i] for i in layers], dim=-1)          # (B, 1 + N, k * D_v)
    return {"default": feats[:, 1:], "full": feats, "cls": feats[:, :1]}[strategy]


def load_clip_vision_tower(name: str = "minilm"):
    """The image tower (a `utils.vit.ViT`) of the shipped tiny CLIP `clip_<name>`, hash-checked."""
    from . import DATA_DIR
    from .clip_shapes import load_shipped

    return load_shipped(name, DATA_DIR / "checkpoints").vision_tower


@dataclass
class LlavaOutput:
    logits: torch.Tensor                # (B, L', V), L' = L - 1 + N for the splice connectors, L for cross-attention
    loss: torch.Tensor | None           # 0-d, over labels != IGNORE_INDEX
    labels: torch.Tensor | None         # (B, L') the labels the loss used (IGNORE_INDEX at image positions)
    image_features: torch.Tensor        # (B, N, D) projected image features


class TinyLlava(nn.Module):
    """vision_tower (frozen, except in notebook 07's unfrozen-tower run) -> multi_modal_projector -> language_model,
    spliced or cross-attended.

    The tower is any module with `hidden_states(images) -> [(B, 1 + N, D_v), ...]` (embeddings, then each
    block) and an `image_size` (or `cfg.image_size`); by default the shipped tiny CLIP's image tower.
    The 'cross_attention' connector inserts gated blocks into `language_model` itself (`LM.insert_blocks`).
    """

    def __init__(self, cfg: TinyLlavaConfig, language_model: LM, vision_tower: nn.Module | None = None):
        super().__init__()
        self.cfg = cfg
        self.vision_tower = load_clip_vision_tower() if vision_tower is None else vision_tower
        self.language_model = language_model
        with torch.no_grad():  # the tower's width: run it once on a blank image of its size
            size = getattr(self.vision_tower, "image_size", None) or self.vision_tower.cfg.image_size
            probe = select_image_features(self.vision_tower.hidden_states(torch.zeros(1, 3, size, size)),
                                          cfg.vision_feature_layer, cfg.vision_feature_select_strategy)
        lm_cfg = language_model.cfg
        self.multi_modal_projector = make_projector(cfg.connector, probe.shape[-1], lm_cfg.dim)
        if cfg.connector == "cross_attention":
            language_model.insert_blocks({i: GatedCrossAttentionBlock(lm_cfg.dim, lm_cfg.n_heads, lm_cfg.hidden_dim,
                                                                      lm_cfg.norm_eps)
                                          for i in cfg.cross_attention_layers})
        if cfg.freeze_vision_tower:
            self.vision_tower.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.cfg.freeze_vision_tower:
            self.vision_tower.eval()  # a frozen tower stays in eval mode
        return self

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images -> (B, N, D) projected image features."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.cfg.freeze_vision_tower):
            feats = select_image_features(self.vision_tower.hidden_states(pixel_values), self.cfg.vision_feature_layer,
                                          self.cfg.vision_feature_select_strategy)  # (B, N, D_v)
        return self.multi_modal_projector(feats)                                     # (B, N, D)

    def _prepare(self, pixel_values, input_ids, labels=None, attention_mask=None):
        feats = self.get_image_features(pixel_values)
        if self.cfg.connector == "cross_attention":  # the placeholder stays a token; the text attends to the image
            return dict(input_ids=input_ids, context=feats, attention_mask=attention_mask), labels, feats
        embeds, labels = splice_image_features(input_ids, self.language_model.embed_tokens(input_ids), feats,
                                               self.cfg.image_token_id, labels)
        if attention_mask is not None:
            ones = torch.ones(feats.shape[:2], dtype=attention_mask.dtype, device=attention_mask.device)
            attention_mask = _insert(attention_mask, (input_ids == self.cfg.image_token_id).long().argmax(1), ones)
        return dict(inputs_embeds=embeds, attention_mask=attention_mask), labels, feats

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, labels: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None) -> LlavaOutput:
        """Args: pixel_values (B, 3, H, W); input_ids (B, L) with one `<image>` per row; labels (B, L) or None;
        attention_mask (B, L) or None. Returns LlavaOutput (logits over the spliced sequence, loss, labels)."""
        inputs, labels, feats = self._prepare(pixel_values, input_ids, labels, attention_mask)
        out = self.language_model(labels=labels, **inputs)
        return LlavaOutput(out.logits, out.loss, labels, feats)

    @torch.no_grad()
    def generate(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 **generate_kwargs) -> torch.Tensor:
        """Generated tokens (B, S) for an image and a prompt; `generate_kwargs` go to `LM.generate`
        (max_new_tokens, do_sample, temperature, top_k, generator, eos_token_id, use_cache, ...)."""
        inputs, _, _ = self._prepare(pixel_values, input_ids, None, attention_mask)
        return self.language_model.generate(**inputs, **generate_kwargs)
