# %% [markdown]
# # 02 · The Vision Transformer: attention, encoder blocks, and a tiny ViT trained here
#
# Notebook 01 turned an image into a sequence of 65 vectors (a CLS token and 64 patches). Here the
# Transformer encoder reads that sequence: scaled dot-product attention, written from scratch and checked
# against PyTorch; multi-head attention; the pre-LayerNorm encoder block; and a complete tiny ViT that we
# train on ShapesWorld to recognize shapes. Then we look inside it (where the CLS token attends), check it
# against torchvision's `VisionTransformer` with the same weights, and measure why pretraining matters.
#
# **What you need:** about 95 s on a 2-core CPU (about 50 s of it training, with a progress bar), 1.4 GB of
# memory at peak, no GPU, no network.

# %%
import math
import time

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from utils import DATA_DIR, checkpoints, checks, clip_shapes, env, plotting, report, shapes, training, vit

device = env.setup(seed=0)
t_start = time.perf_counter()

# %% [markdown]
# ## 1. Scaled dot-product attention
#
# Each token emits a query $q$, a key $k$ and a value $v$ (rows of $Q, K, V$). A token's output is the
# average of all values, weighted by how well its query matches each key:
#
# $$\text{Attention}(Q, K, V) = \text{softmax}\left(\frac{QK^\top}{\sqrt{d}}\right) V$$
#
# Dividing by $\sqrt{d}$ keeps the scores' spread independent of the width $d$, so the softmax does not
# saturate. Here it is, one line at a time, on 5 tokens of width 8.

# %%
torch.manual_seed(0)
q, k, v = torch.randn(3, 5, 8).unbind(0)       # (N, d) each
scores = q @ k.T / math.sqrt(q.shape[-1])       # (N, N): how well query i matches key j
weights = scores.softmax(dim=-1)                # (N, N): each row sums to 1
out = weights @ v                               # (N, d): weighted average of the values
print("row sums of the attention weights:", weights.sum(-1))

# %%
# NBVAL_CHECK_OUTPUT
ours, _ = vit.scaled_dot_product_attention(q, k, v)
checks.assert_close(out, ours, atol=1e-6, name="these cells vs utils.vit.scaled_dot_product_attention", verbose=False)
sdpa_err = checks.assert_close(ours, F.scaled_dot_product_attention(q, k, v), atol=1e-5,
                               name="utils.vit vs F.scaled_dot_product_attention", verbose=False)
print("equal to utils.vit and to torch's F.scaled_dot_product_attention within 1e-5:", sdpa_err < 1e-5)

# %% [markdown]
# ## 2. Multi-head attention
#
# One attention pattern per layer is limiting; multi-head attention runs $H$ of them in parallel on
# $D/H$-wide slices of $Q, K, V$, concatenates the results and mixes them with an output projection.
# `utils.vit.MultiHeadSelfAttention` computes Q, K and V with one `(D, 3D)` linear layer, exactly the
# parameter layout of `torch.nn.MultiheadAttention`, so we can copy weights across and compare.

# %%
# NBVAL_CHECK_OUTPUT
torch.manual_seed(0)
D, H = 64, 4
mha = vit.MultiHeadSelfAttention(D, H)
ref = torch.nn.MultiheadAttention(D, H, batch_first=True)
with torch.no_grad():
    ref.in_proj_weight.copy_(mha.qkv.weight), ref.in_proj_bias.copy_(mha.qkv.bias)
    ref.out_proj.weight.copy_(mha.proj.weight), ref.out_proj.bias.copy_(mha.proj.bias)
    tokens = torch.randn(2, 65, D)                                  # (B, N, D)
    out_ours, w_ours = mha(tokens, return_attention=True)          # (B, N, D), (B, H, N, N)
    out_ref, w_ref = ref(tokens, tokens, tokens, average_attn_weights=False)
mha_err = checks.assert_close(out_ours, out_ref, atol=1e-5, name="MHA output", verbose=False)
checks.assert_close(w_ours, w_ref, atol=1e-5, name="MHA weights", verbose=False)
print("outputs and per-head weights equal nn.MultiheadAttention within 1e-5:", mha_err < 1e-5)
print("attention weights:", tuple(w_ours.shape), "= (B, H, N, N)")

# %% [markdown]
# ## 3. The encoder block and the ViT
#
# A ViT encoder block is pre-LayerNorm: $x \leftarrow x + \text{MSA}(\text{LN}(x))$, then
# $x \leftarrow x + \text{MLP}(\text{LN}(x))$. The ViT stacks `depth` blocks, normalizes, and classifies
# from the output at the CLS position. Our tiny one: 32x32 images, 4x4 patches, width 64, 4 blocks of
# 4 heads, 4 classes (circle, square, triangle, cross).

# %%
cfg = vit.ViTConfig(**vit.SHAPES_VIT)
model = vit.ViT(cfg)
print(cfg)
print(f"{sum(p.numel() for p in model.parameters()):,} parameters in {cfg.depth} encoder blocks, the patch "
      "embedding, the CLS token, the position embeddings, a final LayerNorm and the head")

# %% [markdown]
# ## 4. Train it on ShapesWorld shape classification
#
# 8,000 training images and 1,000 test images, generated from different seeds, so the test scenes (shape,
# colour, size, position, noise) are new to the model. AdamW with warm-up and cosine decay, 350 steps of 64
# at a peak learning rate of 0.003 here; the shipped checkpoint trained longer (below).

# %%
recipe = vit.SHAPES_VIT_RECIPE
train_ds = shapes.make_shapes_dataset(recipe["n_train"], seed=recipe["data_seed_train"])
test_ds = shapes.make_shapes_dataset(recipe["n_test"], seed=recipe["data_seed_test"])
x_train, y_train = shapes.dataset_tensors(train_ds, "shape")   # (B, 3, 32, 32), (B,)
x_test, y_test = shapes.dataset_tensors(test_ds, "shape")
print(train_ds)
print("class balance (train):", torch.bincount(y_train).tolist())
plotting.show_images(x_train[:16], [shapes.SHAPES[i] for i in y_train[:16]], ncols=8);

# %%
env.seed_everything(0)
model = vit.ViT(cfg)


def classification_loss(model, batch):
    images, labels = batch
    return F.cross_entropy(model(images), labels)


train_cfg = training.TrainConfig(**{**recipe["train"], "steps": 350, "lr": 3e-3, "warmup": 20})  # shipped: 800 steps at 2e-3
hist = training.train(model, (x_train, y_train), classification_loss, train_cfg)
test_acc = training.accuracy(training.predict(model, x_test), y_test)
print(f"trained {train_cfg.steps} steps in {hist.seconds:.0f} s; test accuracy {test_acc:.1%}")
training.plot_history(hist, title="tiny ViT, shape classification");

# %% [markdown]
# The checkpoint shipped in `data/checkpoints/vit_shapes` (made by `scripts/train_vit_shapes.py`, seeded, on
# a fixed number of threads) trained the same model on the same data for 800 steps at a peak learning rate of
# 0.002. What do the extra steps buy?

# %%
state, shipped_cfg = checkpoints.load_checkpoint(DATA_DIR / "checkpoints" / "vit_shapes")
shipped = vit.ViT(vit.ViTConfig(**shipped_cfg["model"]))
shipped.load_state_dict(state)
shipped_acc = training.accuracy(training.predict(shipped, x_test), y_test)
print(f"this run ({train_cfg.steps} steps): {test_acc:.1%}   shipped checkpoint ({shipped_cfg['recipe']['train']['steps']} "
      f"steps): {shipped_acc:.1%}")
assert test_acc >= 0.83 and shipped_acc >= 0.97, (test_acc, shipped_acc)

# %% [markdown]
# ## 5. Where does the CLS token look?
#
# The CLS token's row of the last block's attention weights says how much each patch contributed to the
# vector that is classified. Averaged over heads and drawn over the image (here for the shipped, fully
# trained ViT): the brightest patches are on or around the shape, and some background patches light up too;
# the next cell measures how the attention splits between the shape and the background.

# %%
with torch.no_grad():
    logits, maps = shipped(x_test[:8], return_attention=True)   # maps: depth x (B, H, 1+N, 1+N)
cls_attn = maps[-1][:, :, 0, 1:].mean(1).reshape(-1, 8, 8)    # (B, 8, 8): CLS -> patches, mean over heads
fig, axes = plt.subplots(2, 8, figsize=(13, 4.0))
for i in range(8):
    pred = shapes.SHAPES[logits[i].argmax()]
    plotting.show_image(x_test[i], axes[0, i], f"{shapes.SHAPES[y_test[i]]}")
    plotting.plot_attention_overlay(x_test[i], cls_attn[i], axes[1, i], f"pred: {pred}")
fig.suptitle("last block: CLS attention over the 64 patches (mean of 4 heads)", fontsize=10)
fig.tight_layout();

# %% [markdown]
# Measured over the whole test set, for the ViT trained above and for the shipped one: the share of the CLS
# token's attention that lands on patches the shape covers, against the share of the image those patches
# make up. The shape's patches split into *edge* patches, which the shape covers only in part (its outline
# runs through them), and *interior* patches, which it covers entirely.

# %%
background = torch.tensor([scene.background for scene in map(shapes.Scene.from_json, test_ds["scene"])])
on_shape = (vit.patchify(x_test, 4).reshape(len(x_test), 64, 16, 3)
            - background[:, None, None, None]).abs().amax(-1).gt(0.25)  # (B, N, 16): pixel differs from background
coverage = on_shape.float().mean(-1)                                     # (B, N): share of the patch on the shape
regions = {"on the shape (edge + interior)": coverage > 0.1, "edge: part of the shape": (coverage > 0.1) & (coverage < 1),
           "interior: all shape": coverage == 1, "background": coverage <= 0.1}
area_share = {name: m.float().mean().item() for name, m in regions.items()}
attn_share, edge_vs_interior = {}, {}
for label, net in ((f"{train_cfg.steps} steps", model), ("800 steps (shipped)", shipped)):
    with torch.no_grad():
        attn_all = torch.cat([net(x_test[i:i + 250], return_attention=True)[1][-1][:, :, 0, 1:].mean(1)
                              for i in range(0, len(x_test), 250)])        # (B, N), each row sums to ~1
    attn_share[label] = {name: (attn_all * m).sum().item() / attn_all.sum().item() for name, m in regions.items()}
    edge_vs_interior[label] = (attn_share[label]["edge: part of the shape"] / area_share["edge: part of the shape"]) / (
        attn_share[label]["interior: all shape"] / area_share["interior: all shape"])
labels = list(attn_share)
report.table(["patches", "share of the image"] + [f"share of CLS attention, {k}" for k in labels]
             + [f"per patch / uniform, {k}" for k in labels],
             [[name, f"{area_share[name]:.0%}"] + [f"{attn_share[k][name]:.0%}" for k in labels]
              + [f"{attn_share[k][name] / area_share[name]:.1f}x" for k in labels] for name in regions])
for k in labels:
    print(f"{k}: an edge patch gets {edge_vs_interior[k]:.1f}x the attention of an interior patch")
area_of_shape = area_share["on the shape (edge + interior)"]
attn_on_shape = attn_share["800 steps (shipped)"]["on the shape (edge + interior)"]
assert all(attn_share[k]["on the shape (edge + interior)"] > 2 * area_of_shape for k in labels)
assert edge_vs_interior["800 steps (shipped)"] > 1.5 and edge_vs_interior[labels[0]] <= 1.0, edge_vs_interior

# %% [markdown]
# Both models put more of the CLS attention on the shape than its area would give it (the "per patch / uniform"
# columns), and a share still goes to the background (its row). Where on the shape differs: the fully trained ViT gives an
# edge patch several times what an interior patch gets, while after 350 steps the interior still gets as much or
# more (the printout above). The outline is where a circle, a square, a triangle and a cross differ; the
# inside of a shape is one flat colour whatever the shape, and the longer-trained model, which is also the
# more accurate one (section 4), has moved its attention there.

# %% [markdown]
# ## 6. The same network in torchvision
#
# torchvision's `VisionTransformer` is built the same way: a stride-P convolution for patches (notebook 01),
# a CLS token, learned positions, pre-LN blocks with `nn.MultiheadAttention`, a final LayerNorm and a linear
# head. `utils.vit.to_torchvision` copies our trained weights into one; the logits must agree.

# %%
# NBVAL_CHECK_OUTPUT
tv_model = vit.to_torchvision(model).eval()
with torch.no_grad():
    logits_ours, logits_tv = training.predict(model, x_test), tv_model(x_test)
tv_err = checks.assert_close(logits_ours, logits_tv, atol=1e-5, name="logits: ours vs torchvision", verbose=False)
print("torchvision VisionTransformer with our weights gives the same logits within 1e-5:", tv_err < 1e-5)


# %% [markdown]
# And the time of one training step (forward, backward, AdamW) of each, batch 64, measured alternately in
# one run so both see the same machine state. Timings depend on what else the machine is doing, so the
# notebook only prints them; `tests/test_vit_benchmark.py` holds ours to within 15% of torchvision.

# %%
def step_time(net: torch.nn.Module, repeats: int = 6) -> float:
    """Mean seconds of one training step (forward, loss, backward, AdamW) on a batch of 64 training images."""
    return training.step_seconds(net, x_train[:64], y_train[:64], repeats)


bench_ours, bench_tv = vit.ViT(cfg), vit.to_torchvision(vit.ViT(cfg))
step_time(bench_ours, 2), step_time(bench_tv, 2)  # warm-up
times = {"ours": [], "torchvision": []}
for _ in range(2):
    times["ours"].append(step_time(bench_ours))
    times["torchvision"].append(step_time(bench_tv))
t_ours, t_tv = min(times["ours"]), min(times["torchvision"])
step_ratio = t_ours / t_tv
print(f"training step: ours {t_ours * 1e3:.1f} ms, torchvision {t_tv * 1e3:.1f} ms, ratio {step_ratio:.2f}")

# %% [markdown]
# ## 7. Why pretraining matters
#
# Our ViT saw 8,000 labelled images to tell four shapes apart. ViTs have little built-in knowledge of
# images (no convolutions, only the patch grid), so they need a lot of data; the ViT paper reached its
# results only after pretraining on 14M-300M images. Here is the same question with only 256 labelled
# images, answered twice with the same training loop, the same 100 steps of 64 and the same learning rate:
#
# - **from scratch**: the ViT above, randomly initialized, all of it trained;
# - **from a pretrained image tower**: the image tower of the tiny CLIP that notebook 03 trains (shipped in
#   `data/checkpoints/clip_minilm`), the same architecture, kept frozen; only a linear head on its CLS
#   feature is trained. That tower was never given class labels: it learned from 16,000 image-caption pairs
#   ("a small red cross", "there is a blue triangle at the left") to match each image with its
#   caption, and the captions name the shape among colour, size and position.

# %%
small_x, small_y = x_train[:256], y_train[:256]
small_cfg = training.TrainConfig(steps=100, batch_size=64, lr=2e-3, warmup=15, seed=0)
env.seed_everything(0)
scratch = vit.ViT(cfg)
scratch_hist = training.train(scratch, (small_x, small_y), classification_loss, small_cfg)

tower = clip_shapes.load_shipped("minilm", DATA_DIR / "checkpoints").vision_tower  # a ViT without head: (B, 3, 32, 32) -> (B, 64)
with torch.no_grad():
    feats_small, feats_test = training.predict(tower, small_x), training.predict(tower, x_test)  # (256, 64), (1000, 64)
env.seed_everything(0)
head = torch.nn.Linear(cfg.dim, cfg.num_classes)
head_hist = training.train(head, (feats_small, small_y), classification_loss, small_cfg)

small_results = {
    "from scratch (whole ViT trained)": (training.accuracy(training.predict(scratch, small_x), small_y),
                                         training.accuracy(training.predict(scratch, x_test), y_test)),
    "pretrained CLIP tower, frozen + linear head": (training.accuracy(head(feats_small), small_y),
                                                    training.accuracy(head(feats_test), y_test)),
}
report.table(["256 labelled images, 100 steps", "training accuracy", "test accuracy"],
             [[name, f"{tr:.1%}", f"{te:.1%}"] for name, (tr, te) in small_results.items()])
small_acc, pretrained_acc = small_results["from scratch (whole ViT trained)"][1], small_results["pretrained CLIP tower, frozen + linear head"][1]
print(f"for comparison, the ViTs of section 4 (8,000 labelled images): {train_cfg.steps} steps here {test_acc:.1%}, "
      f"800 steps (shipped) {shipped_acc:.1%}")
assert pretrained_acc > small_acc + 0.3 and pretrained_acc > test_acc and pretrained_acc > shipped_acc - 0.04, (small_acc, pretrained_acc)

# %% [markdown]
# 100 steps leave the scratch ViT underfitting, so the gap above mixes two things: too little training, and too
# few labels. `scripts/train_vit_small.py` separates them: the same scratch ViT, the same 256 images, batch,
# learning rate and seed, trained for longer schedules (each with its own warm-up and cosine decay), until it
# fits its 256 images (its record, one thread, about 5 minutes):

# %%
fit_record = checkpoints.read_json(DATA_DIR / "checkpoints" / "vit_small_scratch.json")
report.table(["from scratch, 256 images: steps", "training accuracy", "test accuracy", "seconds (script)"],
             [[r["steps"], f"{r['train']:.1%}", f"{r['test']:.1%}", r["seconds"]] for r in fit_record["runs"]])
fitted = [r for r in fit_record["runs"] if r["train"] == 1.0]
best_scratch = max(r["test"] for r in fit_record["runs"])
assert fit_record["runs"][0]["steps"] == small_cfg.steps and abs(fit_record["runs"][0]["test"] - small_acc) < 0.05
print(f"the scratch ViT fits its 256 images from {fitted[0]['steps']} steps on; its best test accuracy is "
      f"{best_scratch:.1%}, the frozen pretrained tower + linear head {pretrained_acc:.1%}: once training is no "
      f"longer the limit, the gap of {pretrained_acc - best_scratch:+.1%} is what 256 labels cannot teach a ViT "
      f"from scratch and the pretrained features already hold")

# %% [markdown]
# From scratch, 100 steps on 256 images leave the ViT far from knowing the shapes: it does not yet fit its
# own training images, and it does worse still on new ones (chance is 25%). Trained until it fits them (the
# script's table), it learns its 256 images by heart and still gets far fewer new images right: the ViT
# memorises what it cannot generalise from so few labels. The pretrained tower, with nothing but a linear
# layer trained on the same 256 labels in 100 steps, beats it, beats the ViT trained here on 8,000 labelled
# images for 350 steps and comes within a few points of the one trained for 800 steps (the printouts
# above). The tower's features already separate the shapes, because
# matching "a circle" and "a square" in captions required it. That is
# what pretraining buys: learn general visual features once from plentiful, cheaper data (here captions,
# on the web alt-text), then adapt with few labels. Notebooks 03 and 04 do it the CLIP way, which also gives
# a classifier for classes described only in words (zero-shot).
#
# ## What we measured

# %%
report.measured("02_vision_transformer", {
    f"test accuracy, tiny ViT (8,000 images, {train_cfg.steps} steps)": f"{test_acc:.1%}",
    "test accuracy, shipped checkpoint (800 steps)": f"{shipped_acc:.1%}",
    "256 labelled images, 100 steps: from scratch / pretrained CLIP tower + linear head": f"{small_acc:.1%} / {pretrained_acc:.1%}",
    "256 labelled images, scratch trained until it fits (script): steps / best test accuracy": f"{fitted[0]['steps']} / {best_scratch:.1%}",
    f"training time (s), {train_cfg.steps} steps": round(hist.seconds, 1),
    "CLS attention on the shape / shape area (shipped ViT)": f"{attn_on_shape:.0%} / {area_of_shape:.0%}",
    "attention per patch, edge / interior of the shape: 350 / 800 steps": " / ".join(f"{v:.1f}x" for v in edge_vs_interior.values()),
    "ours vs torchvision: max logit difference": tv_err,
    "training step ours / torchvision": f"{t_ours * 1e3:.0f} ms / {t_tv * 1e3:.0f} ms = {step_ratio:.2f}",
    "notebook time (s)": round(time.perf_counter() - t_start, 1),
    "peak memory (GB)": report.peak_memory_gb(),
})

# %% [markdown]
# ## Exercises
#
# Each exercise cell ends with a one-line check. Untouched, it says "not attempted yet"; the reference answers
# live in the repository's `solutions/` folder (open `solutions/nb02.py` only after you tried).
#
# **1.** How many parameters does one encoder block of width $D$ with MLP width $M$ have? Count the `qkv`
# and output projections, the two MLP layers and the two LayerNorms, weights and biases, as a formula in $D$
# and $M$. Then give the number for our block ($D = 64$, $M = 128$) and for a block of ViT-B/16 ($D = 768$,
# $M = 3072$). ViT-B has 12 blocks and 86M parameters in all: how much of it is blocks?

# %%
params_tiny_block = ...    # D = 64, M = 128
params_vit_b_block = ...   # D = 768, M = 3072
checks.exercise("02.block_params", (params_tiny_block, params_vit_b_block));


# %% [markdown]
# **2.** Write `split_heads(x, H)`: `(B, N, D) -> (B, H, N, D/H)`, the reshape that gives head $h$ the
# features $hD/H$ to $(h+1)D/H$ of every token, as `MultiHeadSelfAttention` does. The checker tries three
# shapes.

# %%
def split_heads(x, H):
    raise NotImplementedError  # your code here


checks.exercise("02.split_heads", split_heads);
