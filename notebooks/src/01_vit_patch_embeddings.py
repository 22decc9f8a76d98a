# %% [markdown]
# # 01 · ViT input embeddings: from an image to a sequence of patch vectors
#
# A Transformer reads a sequence of vectors. The Vision Transformer (ViT; Dosovitskiy et al., 2021,
# *An Image is Worth 16x16 Words*) turns an image into such a sequence: cut it into patches, flatten each
# patch, project it linearly, add a position embedding, and put a learned CLS token in front.
# This notebook builds each step of the lecture's "ViT – Input embeddings" slides as code and checks it.
#
# **What you need:** about 10 s on a 2-core CPU, under 1 GB of memory, no GPU, no network. Nothing is
# trained here; the learned position embeddings shown at the end come from the checkpoint that
# notebook 02 trains (shipped in `data/checkpoints/`).

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import skimage.data
import torch
import torch.nn.functional as F

from utils import checks, checkpoints, env, plotting, report, shapes, vit
from utils import DATA_DIR

device = env.setup(seed=0)
t_start = time.perf_counter()

# %% [markdown]
# ## 1. An image is a tensor $x \in \mathbb{R}^{H \times W \times C}$
#
# $H$ rows, $W$ columns, $C$ channels (3 for RGB). Our running example is a 32x32 ShapesWorld scene, the
# size of the lecture's example. PyTorch stores images channels-first, `(C, H, W)`, and batches as
# `(B, C, H, W)`.

# %%
rng = np.random.default_rng(3)
scene = shapes.sample_scene(rng, n_objects=3)
x = shapes.images_to_tensor([shapes.render_scene(scene)])  # (B, C, H, W) = (1, 3, 32, 32)
print("objects:", [f"{o.size} {o.color} {o.shape} ({o.position(scene.canvas)})" for o in scene.objects])
print("x:", tuple(x.shape), "values in", (round(x.min().item(), 2), round(x.max().item(), 2)))
plotting.show_image(x[0], title="a 32x32 ShapesWorld image");

# %% [markdown]
# ## 2. Patches $p \in \mathbb{R}^{P \times P \times C}$, flattened row by row
#
# With patch size $P = 4$ a 32x32 image has $(32/4) \times (32/4) = 64$ patches. The patches are numbered
# row by row over the grid, and each patch is flattened "by going through all the pixels of the patch row
# by row", the $C$ values of a pixel kept together: $f(p) \in \mathbb{R}^{P \cdot P \cdot C} = \mathbb{R}^{48}$.
# `utils.vit.patchify` does this with one reshape and one permute:
#
# ```python
# x = images.reshape(B, C, H // P, P, W // P, P)      # (B, C, h, P, w, P)
# x = x.permute(0, 2, 4, 3, 5, 1)                     # (B, h, w, P, P, C)
# return x.reshape(B, (H // P) * (W // P), P * P * C)  # (B, N, P*P*C)
# ```

# %%
# NBVAL_CHECK_OUTPUT
P = 4
patches = vit.patchify(x, P)  # (B, N, P*P*C)
print("patches:", tuple(patches.shape), "-> N =", patches.shape[1], "patches of", P * P * 3, "numbers each")

# %%
fig, axes = plt.subplots(1, 2, figsize=(9, 4.2), gridspec_kw={"width_ratios": [1, 1.3]})
plotting.plot_patch_grid(x[0], P, ax=axes[0])
axes[0].set_title("the 8x8 grid of 4x4 patches, numbered in reading order", fontsize=9)
plotting.plot_patch_sequence(patches[0], P, per_row=16, ax=axes[1],
                             title="the same patches as a sequence: 0-15, 16-31, 32-47, 48-63")
fig.tight_layout();

# %% [markdown]
# The flattening order is what makes this a definition rather than a picture. Patch 1 is the second patch of
# the first row, so its first three numbers are the RGB values of pixel (row 0, column 4); its numbers 4-6
# are pixel (0, 5), and numbers 12-14 start the patch's second pixel row, pixel (1, 4).

# %%
# NBVAL_CHECK_OUTPUT
assert torch.equal(patches[0, 1, 0:3], x[0, :, 0, 4])
assert torch.equal(patches[0, 1, 3:6], x[0, :, 0, 5])
assert torch.equal(patches[0, 1, 12:15], x[0, :, 1, 4])
assert torch.equal(vit.unpatchify(patches, P, 32, 3), x)  # nothing is lost: unpatchify gives x back
print("flattening order checked; unpatchify(patchify(x)) == x")

# %% [markdown]
# ## 3. A real photo: 224x224 -> 196 patches of 16x16
#
# ViT-Base/16 reads 224x224 images in 16x16 patches: $(224/16)^2 = 196$ patches of $16 \cdot 16 \cdot 3 = 768$
# numbers. Here is scikit-image's astronaut photo (shipped with the package), resized to 224x224.

# %%
# NBVAL_CHECK_OUTPUT
photo = torch.from_numpy(skimage.data.astronaut()).permute(2, 0, 1).float()[None] / 255  # (1, 3, 512, 512)
photo = F.interpolate(photo, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
photo_patches = vit.patchify(photo, 16)  # (1, 196, 768)
print("photo:", tuple(photo.shape), "-> patches:", tuple(photo_patches.shape))

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), gridspec_kw={"width_ratios": [1, 1.2]})
plotting.plot_patch_grid(photo[0], 16, ax=axes[0])
axes[0].set_title("224x224 photo, 14x14 grid of 16x16 patches", fontsize=9)
plotting.plot_patch_sequence(photo_patches[0], 16, per_row=28, ax=axes[1], title="the sequence of 196 patches, 28 per line")
fig.tight_layout();

# %% [markdown]
# ## 4. The linear projection $v(f(p)) = W f(p) \in \mathbb{R}^D$
#
# Every flattened patch goes through the same linear map $W \in \mathbb{R}^{D \times (P \cdot P \cdot C)}$
# (plus a bias). Applying one matrix to every non-overlapping $P \times P$ window is exactly what a
# convolution with kernel size $P$ and stride $P$ does, which is how ViT implementations (timm, torchvision)
# write it. We check that claim numerically with the same weights, reshaped from `(D, P*P*C)` to `(D, C, P, P)`.

# %%
# NBVAL_CHECK_OUTPUT
torch.manual_seed(0)
D = 64
embed = vit.PatchEmbedding(image_size=32, patch_size=P, channels=3, dim=D, cls_token=False, pos="none")
conv = torch.nn.Conv2d(3, D, kernel_size=P, stride=P)
with torch.no_grad():
    conv.weight.copy_(vit.linear_to_conv_weight(embed.proj.weight, P, 3))  # (D, C, P, P)
    conv.bias.copy_(embed.proj.bias)
    ours = embed(x)                                  # (1, 64, D) = W f(p) + b
    theirs = conv(x).flatten(2).transpose(1, 2)      # (1, D, 8, 8) -> (1, 64, D)
conv_err = checks.assert_close(ours, theirs, atol=1e-5, name="patchify + Linear vs Conv2d(k=P, s=P)", verbose=False)
print("patchify + Linear equals Conv2d(kernel=stride=4): max abs error below 1e-5 ->", conv_err < 1e-5)

# %% [markdown]
# ## 5. Position embeddings $v_i^{pos}$ and the CLS token
#
# Attention treats its inputs as a set: shuffle the patches and every output is shuffled the same way. To
# tell the model *where* a patch was, ViT adds a position embedding to each patch vector,
# $v_i = W f(p_i) + v_i^{pos}$. Two common choices:
#
# * **learned**: a free $D$-vector per position, trained with the rest of the model (ViT, torchvision);
# * **fixed 2-D sine-cosine**: $[\sin(x\,\omega_k), \cos(x\,\omega_k), \sin(y\,\omega_k), \cos(y\,\omega_k)]$
#   with $\omega_k = 10000^{-k/(D/4)}$ over column $x$ and row $y$ (MAE, "Simple ViT").
#
# Each small square below is one patch position; its picture is the cosine similarity of that
# position's embedding with all 64 positions. The learned ones come from the tiny ViT that notebook 02
# trains (loaded from the shipped checkpoint, hash-checked). Training alone, with no 2-D prior, made each
# position most similar to itself and to its neighbours; with 800 steps on 8,000 small images the maps are
# noisier than the ViT paper's Figure 7, learned from millions of photos. The sine-cosine maps have the
# 2-D structure built in.

# %%
state, config = checkpoints.load_checkpoint(DATA_DIR / "checkpoints" / "vit_shapes")
learned = state["embed.pos_embed"][0, 1:]              # (N, D): drop the CLS position
fixed = vit.sincos_2d_position_embedding(8, 8, D)      # (N, D)
fig = plt.figure(figsize=(11, 5.4))
left, right = fig.subfigures(1, 2)
plotting.plot_similarity_maps(learned, 8, "learned (trained in notebook 02)", fig=left)
plotting.plot_similarity_maps(fixed, 8, "fixed 2-D sine-cosine", fig=right);


# %% [markdown]
# How local are they? For each position we take the similarity to its 4-neighbours and to the positions
# farther than 3 steps away. Both kinds put neighbours closer than distant patches.

# %%
def neighbour_gap(emb: torch.Tensor, grid: int = 8) -> tuple[float, float]:
    e = F.normalize(emb, dim=-1)
    sim = e @ e.T                                                       # (N, N)
    rc = torch.stack(torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij"), -1).reshape(-1, 2)
    dist = (rc[:, None] - rc[None]).abs().sum(-1)                       # (N, N) city-block distance
    return sim[dist == 1].mean().item(), sim[dist > 3].mean().item()


learned_near, learned_far = neighbour_gap(learned)
fixed_near, fixed_far = neighbour_gap(fixed)
print(f"learned: neighbours {learned_near:.2f}, far apart {learned_far:.2f}")
print(f"fixed:   neighbours {fixed_near:.2f}, far apart {fixed_far:.2f}")
assert learned_near > learned_far + 0.15 and fixed_near > fixed_far + 0.1

# %% [markdown]
# Finally ViT puts a learned **CLS token** in front of the 64 patch vectors. It belongs to no patch; after
# the encoder its output vector summarizes the image and feeds the classification head (notebook 02).
# `PatchEmbedding` with `cls_token=True` builds the full input sequence.

# %%
# NBVAL_CHECK_OUTPUT
full = vit.PatchEmbedding(image_size=32, patch_size=4, channels=3, dim=D)  # learned pos, CLS in front
tokens = full(x)                                                          # (B, 1+N, D)
print("input sequence:", tuple(tokens.shape), "= 1 CLS token + 64 patch tokens, each", D, "wide")
print("parameters: W", tuple(full.proj.weight.shape), "| CLS", tuple(full.cls_token.shape),
      "| positions", tuple(full.pos_embed.shape))

# %% [markdown]
# ## What we measured

# %%
seconds = time.perf_counter() - t_start
report.measured("01_vit_patch_embeddings", {
    "patches of a 32x32 image (P=4)": patches.shape[1],
    "patches of a 224x224 photo (P=16)": photo_patches.shape[1],
    "Linear vs Conv2d, max abs error": conv_err,
    "learned pos: neighbour vs far similarity": f"{learned_near:.2f} vs {learned_far:.2f}",
    "sine-cosine pos: neighbour vs far similarity": f"{fixed_near:.2f} vs {fixed_far:.2f}",
    "notebook time (s)": round(seconds, 1),
})

# %% [markdown]
# ## Exercises
#
# Each exercise cell ends with a one-line check. Untouched, it says "not attempted yet"; the reference answers
# live in the repository's `solutions/` folder (open `solutions/nb01.py` only after you tried).
#
# **1.** A 96x128 RGB image cut into 8x8 patches: how many patches, and how long is each flattened patch?
# And ViT-L/14 at 336x336 (the vision encoder of LLaVA-1.5): how many patches? Work them out by hand, then
# replace the `...`s with numbers.

# %%
n_patches_96x128 = ...   # patches of a 96x128 image, P=8
dim_96x128 = ...         # numbers in one flattened 8x8 RGB patch
n_patches_336_14 = ...   # patches of a 336x336 image, P=14
checks.exercise("01.patch_counts", (n_patches_96x128, dim_96x128, n_patches_336_14));

# %% [markdown]
# **2.** Write `my_unpatchify(patches, P, H, W, C)`, the inverse of `patchify`: `(B, N, P*P*C) -> (B, C, H, W)`.
# The checker compares it with `utils.vit.unpatchify` on three sizes, including a non-square image.

# %%
def my_unpatchify(patches, P, H, W, C):
    raise NotImplementedError  # your code here


checks.exercise("01.unpatchify", my_unpatchify);
