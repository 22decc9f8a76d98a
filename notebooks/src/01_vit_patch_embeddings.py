# %% [markdown]
# # 01 · ViT input embeddings: from an image to a sequence of patch vectors
#
# A Transformer reads a sequence of vectors. The Vision Transformer (ViT; Dosovitskiy et al., 2021,
# *An Image is Worth 16x16 Words*) turns an image into such a sequence: cut it into patches, flatten each
# patch, project it linearly, add a position embedding, and put a learned CLS token in front.
# This notebook builds each step of the lecture's "ViT – Input embeddings" slides as code and checks it.
#
# **What you need:** about 10 s on a 2-core CPU, 0.75 GB of memory at peak, no GPU, no network. Nothing is
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
fig, ax = plt.subplots(figsize=(7.5, 7.5))
plotting.plot_patch_grid(photo[0], 16, ax=ax, numbers=False)
plotting.label_patches(ax, 224, 224, 16, fontsize=8)
ax.set_title("224x224 photo, 14x14 grid of 16x16 patches, numbered in reading order", fontsize=10)
plt.show()
fig, ax = plt.subplots(figsize=(12, 1.3))
plotting.plot_patch_sequence(photo_patches[0, :28], 16, per_row=28, ax=ax)  # the first 28 of the 196
step = 16 + 2                                                                # a patch and the gap after it
ax.set_xticks([i * step + 7.5 for i in range(28)], labels=range(28), fontsize=8)
ax.tick_params(length=0)
ax.set_title("the start of the sequence the Transformer reads: patches 0-13 (the top row), then 14-27 "
             "(the second row), ... up to 195", fontsize=10);

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
# Do the embeddings know which positions are neighbours? We compare the cosine
# similarity of each position's embedding with its 4-neighbours (city-block distance 1) and with positions
# more than 3 steps away. The learned embeddings come from the tiny ViT that notebook 02 trains (loaded from
# the shipped checkpoint, hash-checked).

# %%
state, config = checkpoints.load_checkpoint(DATA_DIR / "checkpoints" / "vit_shapes")
learned = state["embed.pos_embed"][0, 1:]              # (N, D): drop the CLS position
fixed = vit.sincos_2d_position_embedding(8, 8, D)      # (N, D)
rc = torch.stack(torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij"), -1).reshape(-1, 2)  # (N, 2)
dist = (rc[:, None] - rc[None]).abs().sum(-1)          # (N, N) city-block distance between positions


def cosine_similarity_matrix(emb: torch.Tensor) -> torch.Tensor:
    e = F.normalize(emb, dim=-1)
    return e @ e.T                                     # (N, N)


sim = {"learned": cosine_similarity_matrix(learned), "sine-cosine": cosine_similarity_matrix(fixed)}
near = {k: s[dist == 1].mean().item() for k, s in sim.items()}
far = {k: s[dist > 3].mean().item() for k, s in sim.items()}
report.table(["position embedding", "neighbours (distance 1)", "far apart (distance > 3)", "lowest", "highest (not itself)"],
             [[k, f"{near[k]:.2f}", f"{far[k]:.2f}", f"{s[dist > 0].min():.2f}", f"{s[dist > 0].max():.2f}"]
              for k, s in sim.items()])
learned_near, learned_far, fixed_near, fixed_far = near["learned"], far["learned"], near["sine-cosine"], far["sine-cosine"]
assert learned_near > learned_far + 0.15 and fixed_near > fixed_far + 0.1 and abs(learned_far) < 0.1
assert sim["sine-cosine"].min() > 0.7 and sim["learned"][dist >= 12].mean() > learned_far + 0.1  # see the text below

# %% [markdown]
# The maps below draw all of it on **one colour scale**. Each small square is one patch position; its 64
# pixels are the similarity of that position's embedding with every position (its own pixel, always 1, is
# left white). The right panel averages the similarity over all pairs at each distance.

# %%
fig = plt.figure(figsize=(13, 4.4))
gs = fig.add_gridspec(1, 5, width_ratios=[1, 1, 0.06, 0.3, 1.2], wspace=0.2)  # column 3: room for the bar's labels
lo = min(s[dist > 0].min().item() for s in sim.values())
for k, (name, emb) in enumerate([("learned (trained in notebook 02)", learned), ("fixed 2-D sine-cosine", fixed)]):
    ax = plotting.plot_similarity_mosaic(emb, 8, ax=fig.add_subplot(gs[k]), vmin=lo, vmax=1.0, title=name)
fig.colorbar(ax.images[0], cax=fig.add_subplot(gs[2]), label="cosine similarity")
ax = fig.add_subplot(gs[4])
distances = torch.arange(1, 15)
curves = {name: [s[dist == d].mean().item() for d in distances] for name, s in sim.items()}
for name, curve in curves.items():
    ax.plot(distances, curve, "o-", ms=4, label=name)
ax.axhline(0, color="gray", lw=0.6)
low = min(0.0, min(min(c) for c in curves.values())) - 0.05      # the curves' range (and 0), not the mosaic's scale
ax.set(xlabel="city-block distance between positions", ylabel="mean cosine similarity", ylim=(low, 1.02),
       xticks=distances[::2], title="similarity against distance")
ax.legend(fontsize=8);

# %% [markdown]
# Both kinds place neighbours closer than distant positions, in different ways. The **sine-cosine**
# embeddings are all alike (every pair above 0.7) and fall smoothly with distance, from 0.98 for neighbours:
# the 2-D structure is built in, carried by the slow frequencies. The **learned** ones, with no 2-D prior and
# 800 steps on 8,000 small images, became nearly orthogonal beyond a few steps (about 0 far apart) and kept a
# modest similarity only between neighbours (about 0.3): the model learned locality from the data, noisily,
# unlike the smooth maps of the ViT paper's Figure 7 learned from millions of photos. The curve also shows
# one quirk: positions at opposite corners (distance 12-14, few pairs) resemble each other again.

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
    "peak memory (GB)": round(report.peak_memory_gb(), 2),
});

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
# **2.** Write `my_unpatchify(patches, P, H, W, C)`, the inverse of `patchify`: `(B, N, P*P*C) -> (B, C, H, W)`,
# with `reshape` and `permute` (not by calling `vit.unpatchify`). Hint: undo section 2's three lines in reverse
# order. The checker compares it with `utils.vit.unpatchify` on three sizes, including a non-square image
# and a single-channel one.

# %%
def my_unpatchify(patches, P, H, W, C):
    raise NotImplementedError  # your code here


checks.exercise("01.unpatchify", my_unpatchify);
