"""Vision Transformer from scratch (notebooks 01 and 02).

Dosovitskiy et al., 2021, "An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale".
Shapes: B batch, C channels, H/W image rows/columns, P patch size, N patches, D width, H heads.

The lecture's input embedding: x in R^{H x W x C} is cut into patches p in R^{P x P x C}, each flattened
row by row into f(p) in R^{P*P*C}, projected v(f(p)) = W f(p) in R^D, and summed with a position embedding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import validate


# ----------------------------------------------------------------------------- patches
def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Cut images into non-overlapping patches, flattened row by row (introduced in notebook 01).

    Args:
        images: (B, C, H, W) with H and W divisible by `patch_size`.
        patch_size: P, the side of a square patch in pixels.
    Returns:
        (B, N, P*P*C) with N = (H/P)*(W/P): patches in row-major order over the grid, each one flattened
        pixel row by pixel row, the C channels of a pixel kept together (`p1 p2 c`).
    """
    validate.tensor("images", images)
    if images.dim() != 4:
        raise ValueError(f"images must be a 4-D tensor (B, C, H, W), got shape {tuple(images.shape)}")
    if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
        raise ValueError(f"patch_size must be an int >= 1, got {patch_size!r}")
    B, C, H, W = images.shape
    P = patch_size
    if H % P or W % P:
        raise ValueError(f"images of size H={H}, W={W} are not divisible by patch_size={P}")
    x = images.reshape(B, C, H // P, P, W // P, P)      # (B, C, h, P, w, P)
    x = x.permute(0, 2, 4, 3, 5, 1)                     # (B, h, w, P, P, C)
    return x.reshape(B, (H // P) * (W // P), P * P * C)  # (B, N, P*P*C)


def unpatchify(patches: torch.Tensor, patch_size: int, image_size: int | tuple[int, int], channels: int) -> torch.Tensor:
    """Inverse of `patchify`: (B, N, P*P*C) -> (B, C, H, W)."""
    validate.tensor("patches", patches)
    if not isinstance(image_size, int) and (not isinstance(image_size, (tuple, list)) or len(image_size) != 2):
        raise TypeError(f"image_size must be an int or an (H, W) pair, got {image_size!r}")
    H, W = (image_size, image_size) if isinstance(image_size, int) else image_size
    validate.integer("H", H, min=1), validate.integer("W", W, min=1)
    P, C = validate.integer("patch_size", patch_size), validate.integer("channels", channels, min=1)
    if P < 1 or H % P or W % P:
        raise ValueError(f"image_size {(H, W)} is not divisible by patch_size={P}")
    h, w = H // P, W // P
    if patches.dim() != 3 or patches.shape[1:] != (h * w, P * P * C):
        raise ValueError(f"patches must have shape (B, {h * w}, {P * P * C}) for image_size={(H, W)}, "
                         f"patch_size={P}, channels={C}; got {tuple(patches.shape)}")
    x = patches.reshape(-1, h, w, P, P, C)              # (B, h, w, P, P, C)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(-1, C, H, W)  # (B, C, H, W)


def linear_to_conv_weight(weight: torch.Tensor, patch_size: int, channels: int) -> torch.Tensor:
    """The Linear patch projection (D, P*P*C) as the equivalent Conv2d kernel (D, C, P, P)."""
    validate.tensor("weight", weight, dim=2)
    validate.integer("patch_size", patch_size, min=1), validate.integer("channels", channels, min=1)
    if weight.shape[1] != patch_size * patch_size * channels:
        raise ValueError(f"weight must be (D, P*P*C) = (D, {patch_size * patch_size * channels}) for patch_size="
                         f"{patch_size}, channels={channels}, got {tuple(weight.shape)}")
    D = weight.shape[0]
    return weight.reshape(D, patch_size, patch_size, channels).permute(0, 3, 1, 2)  # (D, C, P, P)


def sincos_2d_position_embedding(grid_h: int, grid_w: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embeddings (MAE / "Simple ViT" style).

    Returns (N, D) with N = grid_h * grid_w in row-major order: [sin(x w), cos(x w), sin(y w), cos(y w)],
    each part D/4 wide, w_k = temperature^(-k / (D/4)), x the column and y the row of the patch.
    """
    validate.integer("grid_h", grid_h, min=1), validate.integer("grid_w", grid_w, min=1)
    validate.integer("dim", dim, min=4)
    validate.number("temperature", temperature, 0.0, strict_min=True)
    if dim % 4:
        raise ValueError(f"dim must be divisible by 4 for 2-D sine-cosine embeddings, got {dim}")
    y, x = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w), indexing="ij")
    omega = 1.0 / temperature ** (torch.arange(dim // 4) / (dim // 4))  # (D/4,)
    x = x.flatten()[:, None] * omega[None, :]                             # (N, D/4)
    y = y.flatten()[:, None] * omega[None, :]                             # (N, D/4)
    return torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=1)         # (N, D)


class PatchEmbedding(nn.Module):
    """v_i = W f(p_i) + v_i^pos, with an optional learned CLS token in front (notebook 01)."""

    def __init__(self, *, image_size: int, patch_size: int, channels: int, dim: int,
                 cls_token: bool = True, pos: str = "learned"):
        super().__init__()
        validate.choice("pos", pos, ("learned", "sincos", "none"))
        for name, value in (("image_size", image_size), ("patch_size", patch_size), ("channels", channels), ("dim", dim)):
            validate.integer(name, value, min=1)
        if image_size % patch_size:
            raise ValueError(f"image_size={image_size} must be divisible by patch_size={patch_size}")
        self.image_size, self.channels = image_size, channels
        self.patch_size, self.grid = patch_size, image_size // patch_size
        n = self.grid ** 2 + int(cls_token)
        self.proj = nn.Linear(patch_size * patch_size * channels, dim)  # W in R^{D x (P*P*C)}
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if cls_token else None
        if pos == "learned":
            self.pos_embed = nn.Parameter(torch.randn(1, n, dim) * 0.02)
        elif pos == "sincos":
            table = sincos_2d_position_embedding(self.grid, self.grid, dim)
            if cls_token:  # the CLS token sits at no grid position: it gets a zero vector
                table = torch.cat([torch.zeros(1, dim), table])
            self.register_buffer("pos_embed", table[None], persistent=False)
        else:
            self.pos_embed = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        validate.tensor("images", images, dim=4)
        if images.shape[1] != self.channels or (self.pos_embed is not None and tuple(images.shape[2:]) != (
                self.image_size, self.image_size)):
            raise ValueError(f"images must be (B, {self.channels}, {self.image_size}, {self.image_size}) for this "
                             f"model, got {tuple(images.shape)}")
        x = self.proj(patchify(images, self.patch_size))            # (B, N, D)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1+N, D)
        return x if self.pos_embed is None else x + self.pos_embed


# ----------------------------------------------------------------------------- attention
def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                 mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(Q K^T / sqrt(d)) V, written out (notebook 02).

    Args:
        q, k, v: (..., N, d) queries, keys, values (any leading dims, e.g. (B, H, N, d)).
        mask: optional bool (N, N) or broadcastable; True where a query may attend to a key.
    Returns:
        out (..., N, d) and the attention weights (..., N, N), each row summing to 1.
    """
    for name, x in (("q", q), ("k", k), ("v", v)):
        validate.tensor(name, x, floating=True)
        if x.dim() < 2:
            raise ValueError(f"{name} must be (..., N, d), got shape {tuple(x.shape)}")
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(f"q and k must share d and k and v must share N, got q {tuple(q.shape)}, k {tuple(k.shape)}, "
                         f"v {tuple(v.shape)}")
    if mask is not None and (not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool):
        raise TypeError(f"mask must be a bool tensor (True where a query may attend), got "
                        f"{getattr(mask, 'dtype', type(mask).__name__)}")
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (..., N, N)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(dim=-1)                            # (..., N, N)
    return weights @ v, weights                                 # (..., N, d), (..., N, N)


class MultiHeadSelfAttention(nn.Module):
    """H heads of attention over the same tokens, then an output projection (notebook 02).

    `fused=True` uses `F.scaled_dot_product_attention` (same math, a faster kernel) unless attention
    weights are asked for; the parameter layout matches `nn.MultiheadAttention` (in_proj = qkv).
    """

    def __init__(self, dim: int, heads: int, fused: bool = True):
        super().__init__()
        validate.integer("dim", dim, min=1), validate.integer("heads", heads, min=1)
        if dim % heads:
            raise ValueError(f"dim={dim} must be divisible by heads={heads}")
        self.heads, self.fused = heads, fused
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, return_attention: bool = False, mask: torch.Tensor | None = None):
        """x: (B, N, D); mask: optional bool, broadcastable to (B, H, N, N), True where attending is allowed."""
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, D // self.heads)  # (B, N, 3, H, D/H)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)                                # 3 x (B, H, N, D/H)
        if self.fused and not return_attention:
            out, weights = F.scaled_dot_product_attention(q, k, v, attn_mask=mask), None
        else:
            out, weights = scaled_dot_product_attention(q, k, v, mask)     # (B, H, N, D/H)
        out = self.proj(out.transpose(1, 2).reshape(B, N, D))               # (B, N, D)
        return (out, weights) if return_attention else out


class EncoderBlock(nn.Module):
    """Pre-LayerNorm Transformer block: x + MSA(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, eps: float = 1e-6):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=eps)
        self.attn = MultiHeadSelfAttention(dim, heads)
        self.ln_2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))

    def forward(self, x: torch.Tensor, return_attention: bool = False, mask: torch.Tensor | None = None):
        a = self.attn(self.ln_1(x), return_attention=return_attention, mask=mask)
        a, weights = a if return_attention else (a, None)
        x = x + a                          # (B, N, D)
        x = x + self.mlp(self.ln_2(x))     # (B, N, D)
        return (x, weights) if return_attention else x


# ----------------------------------------------------------------------------- the model
@dataclass
class ViTConfig:
    image_size: int = 32      # H = W, pixels
    patch_size: int = 4       # P; N = (image_size / P)^2 patches
    channels: int = 3         # C
    dim: int = 64             # D, the token width
    depth: int = 4            # number of encoder blocks
    heads: int = 4            # H, attention heads per block
    mlp_dim: int = 128        # hidden width of each block's MLP
    num_classes: int = 10     # size of the classification head
    pos: str = "learned"      # 'learned' or 'sincos' position embeddings

    def __post_init__(self):
        for name in ("image_size", "patch_size", "channels", "dim", "depth", "heads", "mlp_dim"):
            validate.integer(name, getattr(self, name), min=1)
        validate.integer("num_classes", self.num_classes, min=0)
        validate.choice("pos", self.pos, ("learned", "sincos", "none"))
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size={self.image_size} must be divisible by patch_size={self.patch_size}")
        if self.dim % self.heads:
            raise ValueError(f"dim={self.dim} must be divisible by heads={self.heads}")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


# the tiny ViT of notebook 02: 32x32 ShapesWorld images, 64 patches of 4x4, 4 shape classes
SHAPES_VIT = dict(image_size=32, patch_size=4, channels=3, dim=64, depth=4, heads=4, mlp_dim=128, num_classes=4)
# ... and how it is trained (notebook 02 and scripts/train_vit_shapes.py): data sizes and seeds, TrainConfig
SHAPES_VIT_RECIPE = dict(n_train=8000, n_test=1000, data_seed_train=1, data_seed_test=2,
                         train=dict(steps=800, batch_size=64, lr=2e-3, warmup=30, seed=0))


class ViT(nn.Module):
    """Patch embedding + CLS token -> encoder blocks -> LayerNorm -> head on the CLS token."""

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = PatchEmbedding(image_size=cfg.image_size, patch_size=cfg.patch_size,
                                    channels=cfg.channels, dim=cfg.dim, pos=cfg.pos)
        self.blocks = nn.ModuleList(EncoderBlock(cfg.dim, cfg.heads, cfg.mlp_dim) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim, eps=1e-6)
        # num_classes=0: no head, the model returns the CLS feature (B, D), as CLIP's image tower does
        self.head = nn.Linear(cfg.dim, cfg.num_classes) if cfg.num_classes else nn.Identity()

    def forward_features(self, images: torch.Tensor, return_attention: bool = False):
        """All output tokens after the final LayerNorm: (B, 1+N, D) (and per-block attention weights)."""
        x, maps = self.embed(images), []                    # (B, 1+N, D)
        for block in self.blocks:
            if return_attention:
                x, w = block(x, return_attention=True)
                maps.append(w)                               # (B, H, 1+N, 1+N)
            else:
                x = block(x)
        x = self.norm(x)
        return (x, maps) if return_attention else x

    def hidden_states(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The token sequence after the embedding and after each block, depth + 1 tensors (B, 1+N, D)."""
        x = self.embed(images)
        states = [x]
        for block in self.blocks:
            x = block(x)
            states.append(x)
        return states

    def forward(self, images: torch.Tensor, return_attention: bool = False):
        out = self.forward_features(images, return_attention)
        x, maps = out if return_attention else (out, None)
        logits = self.head(x[:, 0])                          # (B, num_classes), from the CLS token
        return (logits, maps) if return_attention else logits


def to_torchvision(model: ViT):
    """torchvision's `VisionTransformer` with the same config and `model`'s weights copied in."""
    from torchvision.models.vision_transformer import VisionTransformer

    validate.instance("model", model, ViT)
    cfg = model.cfg
    if cfg.channels != 3 or cfg.pos != "learned":
        raise ValueError("torchvision's VisionTransformer needs channels=3 and learned position embeddings")
    tv = VisionTransformer(image_size=cfg.image_size, patch_size=cfg.patch_size, num_layers=cfg.depth,
                           num_heads=cfg.heads, hidden_dim=cfg.dim, mlp_dim=cfg.mlp_dim,
                           num_classes=cfg.num_classes)
    with torch.no_grad():
        tv.conv_proj.weight.copy_(linear_to_conv_weight(model.embed.proj.weight, cfg.patch_size, 3))
        tv.conv_proj.bias.copy_(model.embed.proj.bias)
        tv.class_token.copy_(model.embed.cls_token)
        tv.encoder.pos_embedding.copy_(model.embed.pos_embed)
        for ours, theirs in zip(model.blocks, tv.encoder.layers):
            theirs.ln_1.load_state_dict(ours.ln_1.state_dict())
            theirs.ln_2.load_state_dict(ours.ln_2.state_dict())
            theirs.self_attention.in_proj_weight.copy_(ours.attn.qkv.weight)
            theirs.self_attention.in_proj_bias.copy_(ours.attn.qkv.bias)
            theirs.self_attention.out_proj.load_state_dict(ours.attn.proj.state_dict())
            theirs.mlp[0].load_state_dict(ours.mlp[0].state_dict())
            theirs.mlp[3].load_state_dict(ours.mlp[2].state_dict())
        tv.encoder.ln.load_state_dict(model.norm.state_dict())
        tv.heads.head.load_state_dict(model.head.state_dict())
    return tv


def load_shipped(name: str = "vit_shapes") -> ViT:
    """The ViT that `scripts/train_vit_shapes.py` ships (`data/checkpoints/<name>`), built from its recorded config,
    checked against `data/MANIFEST`; notebook 10's ASTs start from it."""
    from . import DATA_DIR, checkpoints

    state, config = checkpoints.load_checkpoint(DATA_DIR / "checkpoints" / name)
    model = ViT(ViTConfig(**config["model"]))
    model.load_state_dict(state)
    return model
