"""Plot helpers: each takes data and `ax=None`, returns the Axes (or the Figure for grids), reads no globals."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch


def to_hwc(image) -> np.ndarray:
    """(C, H, W) tensor in [0, 1] or (H, W, C) array -> (H, W, C) float array for imshow."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        if image.dim() == 3 and image.shape[0] in (1, 3):
            image = image.permute(1, 2, 0)
        image = image.numpy()
    image = np.asarray(image)
    return image / 255.0 if image.dtype == np.uint8 else image


def show_image(image, ax=None, title: str | None = None):
    ax = ax or plt.subplots(figsize=(3, 3))[1]
    ax.imshow(to_hwc(image).clip(0, 1), interpolation="nearest")
    ax.set_xticks([]), ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def show_images(images: Sequence, titles: Sequence[str] | None = None, ncols: int = 8, size: float = 1.6):
    """A grid of images with optional titles; returns the Figure."""
    n = len(images)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.3 * bool(titles)), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i < n:
            show_image(images[i], ax, titles[i] if titles else None)
        else:
            ax.axis("off")
    fig.tight_layout()
    return fig


def plot_patch_grid(image, patch_size: int, ax=None, numbers: bool = True):
    """The image with the patch grid drawn on it and each patch's index in the sequence."""
    img = to_hwc(image)
    H, W = img.shape[:2]
    ax = show_image(img, ax)
    for k in range(0, W + 1, patch_size):
        ax.axvline(k - 0.5, color="white", lw=0.6)
    for k in range(0, H + 1, patch_size):
        ax.axhline(k - 0.5, color="white", lw=0.6)
    if numbers:
        fs = max(4, min(9, 180 // max(H // patch_size, 1) // 3))
        for i in range(H // patch_size):
            for j in range(W // patch_size):
                ax.text(j * patch_size + patch_size / 2 - 0.5, i * patch_size + patch_size / 2 - 0.5,
                        str(i * (W // patch_size) + j), color="white", fontsize=fs, ha="center", va="center")
    return ax


def patch_mosaic(patches: torch.Tensor, patch_size: int, channels: int = 3, per_row: int = 16,
                 gap: int = 1) -> np.ndarray:
    """The patches of one image, (N, P*P*C), laid out in sequence order, `per_row` a line, with white gaps."""
    tiles = patches.detach().reshape(-1, patch_size, patch_size, channels).numpy()  # (N, P, P, C)
    n, P = len(tiles), patch_size
    rows = (n + per_row - 1) // per_row
    out = np.ones((rows * (P + gap) - gap, per_row * (P + gap) - gap, channels))
    for i, t in enumerate(tiles):
        r, c = divmod(i, per_row)
        out[r * (P + gap):r * (P + gap) + P, c * (P + gap):c * (P + gap) + P] = t
    return out


def plot_patch_sequence(patches: torch.Tensor, patch_size: int, channels: int = 3, per_row: int = 16,
                        ax=None, title: str | None = None):
    """The patches of one image as the sequence the Transformer reads (see `patch_mosaic`)."""
    return show_image(patch_mosaic(patches, patch_size, channels, per_row, gap=max(1, patch_size // 8)), ax, title)


def plot_similarity_maps(pos_embed: torch.Tensor, grid: int, title: str = "", fig=None):
    """For each patch position, the cosine similarity of its position embedding with every other one.

    Args:
        pos_embed: (N, D) position embeddings of the N = grid*grid patches (no CLS row).
    """
    e = torch.nn.functional.normalize(pos_embed.detach().float(), dim=-1)
    sim = (e @ e.T).reshape(grid, grid, grid, grid)  # (row, col, row', col')
    fig = fig or plt.figure(figsize=(5, 5))
    axes = fig.subplots(grid, grid)
    for i in range(grid):
        for j in range(grid):
            axes[i, j].imshow(sim[i, j], cmap="viridis")  # each map on its own scale, as in the ViT paper
            axes[i, j].set_xticks([]), axes[i, j].set_yticks([])
    fig.suptitle(title, fontsize=10)
    return fig


def plot_attention_overlay(image, attention: torch.Tensor, ax=None, title: str | None = None):
    """An (h, w) attention map upsampled over the image."""
    img = to_hwc(image)
    ax = show_image(img, ax, title)
    H, W = img.shape[:2]
    ax.imshow(attention.detach().cpu().numpy(), cmap="inferno", alpha=0.55, extent=(-0.5, W - 0.5, H - 0.5, -0.5),
              interpolation="bilinear")
    return ax


def label_patches(ax, height: int, width: int, patch_size: int, fontsize: float = 7.0):
    """Write each patch's sequence index at its centre, white with a dark outline so it reads on any image.

    Notebook 01 uses it on the 224x224 photo, whose 14x14 grid is too fine for `plot_patch_grid`'s own labels.
    Args:
        height, width: image size in pixels; patch_size: P in pixels; fontsize: in points.
    Returns:
        the Axes.
    """
    import matplotlib.patheffects as pe

    if patch_size <= 0 or height % patch_size or width % patch_size:
        raise ValueError(f"patch_size must be > 0 and divide height and width, got {patch_size} for {height}x{width}")
    outline = [pe.withStroke(linewidth=1.6, foreground="black")]
    w = width // patch_size
    for i in range(height // patch_size):
        for j in range(w):
            ax.text(j * patch_size + patch_size / 2 - 0.5, i * patch_size + patch_size / 2 - 0.5, str(i * w + j),
                    color="white", fontsize=fontsize, ha="center", va="center", path_effects=outline)
    return ax


def similarity_mosaic(pos_embed: torch.Tensor, grid: int, gap: int = 1, mask_self: bool = True) -> np.ndarray:
    """All grid*grid position-similarity maps tiled into one (grid*(grid+gap)-gap)^2 array, NaN in the gaps.

    Tile (i, j) is the cosine similarity of position (i, j)'s embedding with every position; with `mask_self`
    its own pixel (always 1) is NaN too, so the colour scale shows the other positions. Notebook 01.
    Args:
        pos_embed: (N, D) position embeddings of the N = grid*grid patches (no CLS row).
    """
    if pos_embed.dim() != 2 or pos_embed.shape[0] != grid * grid:
        raise ValueError(f"pos_embed must have shape (grid*grid, D) = ({grid * grid}, D), got {tuple(pos_embed.shape)}")
    e = torch.nn.functional.normalize(pos_embed.detach().float(), dim=-1)
    sim = (e @ e.T).reshape(grid, grid, grid, grid).numpy()  # (row, col, row', col')
    side = grid * (grid + gap) - gap
    out = np.full((side, side), np.nan)
    for i in range(grid):
        for j in range(grid):
            tile = sim[i, j].copy()
            if mask_self:
                tile[i, j] = np.nan
            out[i * (grid + gap):i * (grid + gap) + grid, j * (grid + gap):j * (grid + gap) + grid] = tile
    return out


def plot_similarity_mosaic(pos_embed: torch.Tensor, grid: int, ax=None, vmin: float = -1.0, vmax: float = 1.0,
                           cmap: str = "viridis", title: str | None = None, mask_self: bool = True):
    """`similarity_mosaic` drawn on one colour scale [vmin, vmax], so that maps of several embeddings compare.

    Gaps and (with `mask_self`) each position's own pixel are left white. Add a colour bar with
    `fig.colorbar(ax.images[0], ...)`. Notebook 01.
    Returns:
        the Axes.
    """
    if not vmin < vmax:
        raise ValueError(f"vmin must be below vmax, got vmin={vmin}, vmax={vmax}")
    ax = ax or plt.subplots(figsize=(4, 4))[1]
    colours = plt.get_cmap(cmap).with_extremes(bad="white")
    ax.imshow(similarity_mosaic(pos_embed, grid, mask_self=mask_self), cmap=colours, vmin=vmin, vmax=vmax,
              interpolation="nearest")
    ax.set_xticks([]), ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def plot_cross_attention_stack(layout: dict[int, tuple[str, ...]], n_layers: int, sources: dict[str, str],
                               ax=None, title: str | None = None):
    """Llama 3.2's layer stack, bottom to top: the prompt, then for each decoder layer the gated cross-attention
    blocks `layout` inserts before it (in order, labelled kind@layer) and the layer itself, then the logits. Each
    block is joined to the context it reads, `sources[kind]` (a label per kind, 'image' drawn left, 'video'
    right). Notebook 08.
    Returns:
        the Axes.
    """
    colours = {"image": "#4c72b0", "video": "#dd8452", "layer": "#bbbbbb", "text": "#ffffff"}
    rows = [("text", "prompt tokens")]
    for i in range(n_layers):
        rows += [(k, f"{k}@{i}: cross-attention (gated)") for k in layout.get(i, ())]
        rows.append(("layer", f"decoder layer {i} (frozen)"))
    rows.append(("text", "logits -> answer"))
    ax = ax or plt.subplots(figsize=(8, 0.42 * len(rows) + 0.6))[1]
    W = 2.0                                                     # half the width of a box
    ys = {}
    for y, (kind, label) in enumerate(rows):
        ax.add_patch(plt.Rectangle((-W, y - 0.36), 2 * W, 0.72, facecolor=colours[kind], edgecolor="black", lw=0.8))
        ax.text(0, y, label, ha="center", va="center", fontsize=8, color="white" if kind in ("image", "video") else "black")
        if y:
            ax.annotate("", (0, y - 0.36), (0, y - 0.64), arrowprops=dict(arrowstyle="->", lw=0.8))
        ys.setdefault(kind, []).append(y)
    for kind, x in (("image", -4.0), ("video", 4.0)):
        if kind not in sources or kind not in ys:
            continue
        y_src = float(np.mean(ys[kind]))
        ax.text(x, y_src, sources[kind], ha="center", va="center", fontsize=8, wrap=True,
                bbox=dict(boxstyle="round", facecolor=colours[kind], alpha=0.25))
        for y in ys[kind]:
            ax.annotate("", (np.sign(x) * W, y), (x - np.sign(x) * 1.0, y_src),
                        arrowprops=dict(arrowstyle="->", lw=0.7, color=colours[kind]))
    ax.set(xlim=(-5.4, 5.4), ylim=(-0.6, len(rows) - 0.4))
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)
    return ax
