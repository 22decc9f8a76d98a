# %% [markdown]
# # 08 · Video: uniform frame sampling and a Perceiver resampler that merges 32 frames into one
#
# The lecture's video part is Llama 3.2's, from the Llama 3 paper: "up to 64 uniformly sampled frames from a
# full video; each frame is processed by the image encoder; temporal structure through (1) a temporal
# aggregator, a Perceiver resampler, which merges 32 consecutive frames into one, and (2) extra video
# cross-attention layers". The released Llama 3.2 Vision weights are image-only: the video design is the
# paper's, and this notebook builds it small. It samples frames from ShapesWorld clips, encodes each with the
# frozen image tower of notebooks 03-04, and compares three ways of aggregating them on tasks where frame
# order matters (which way a circle moves, which of two objects appeared first) and on a control where it
# does not (the circle's colour). Then the aggregated tokens go into the course LM of notebook 06, which
# answers "Which way does the red circle move?" in words, and we count what aggregation saves.
#
# **What you need:** about 40 s on a 2-core CPU (it uses one thread), 0.94 GB of memory at peak, no GPU. It trains three small aggregators (250 steps each) and, for generation, the LM with a linear
# projector (60 steps). It loads the image tower of the tiny CLIP of notebook 03 (`clip_minilm`) and the course
# LM (`lm_shapes`), so no earlier notebook need have run.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from utils import checks, env, llava, llava_data, lm, report, training, video

device = env.setup(seed=0, threads=1)           # small tensors: one thread wastes no time waiting on another
t_start, cpu_start = time.perf_counter(), time.process_time()
N_TRAIN, N_TEST = 480, 240                       # clips per task; held-out clips come from another random stream
data = {("direction", s): video.make_video_dataset(n, "direction", s) for s, n in (("train", N_TRAIN), ("heldout", N_TEST))}
data |= {("first", s): video.make_video_dataset(n, "first", s) for s, n in (("train", N_TRAIN), ("heldout", N_TEST))}
lengths = np.concatenate([np.asarray(d["num_frames"]) for d in data.values()])
print(f"{len(lengths)} clips of {lengths.min()} to {lengths.max()} frames (median {np.median(lengths):.0f});",
      "tasks: direction (4 answers), first (2), colour of the moving circle (6, the control)")
print("a held-out row:", {k: v for k, v in data["direction", "heldout"][0].items() if k != "clip"})

# %% [markdown]
# ## 1. Up to 64 uniformly sampled frames
#
# A clip of T frames is cut into k = 64 equal segments and the centre frame of each is kept:
# $t_i = \lfloor (i + \tfrac12)\, T / k \rfloor$, $i = 0, \dots, 63$. A clip shorter than 64 frames keeps all its
# frames. Below, a long held-out clip, every frame, with the 64 kept ones framed in orange.

# %%
# NBVAL_CHECK_OUTPUT
heldout_clips = video.clips_of(data["direction", "heldout"])
long_i = int(np.argmax([c.num_frames for c in heldout_clips]))
clip = heldout_clips[long_i]
frames = video.clip_frames(clip)                               # (T, H, W, 3) uint8, every frame
kept = video.uniform_frame_indices(clip.num_frames, 64)
assert kept.tolist() == [int(np.floor((i + 0.5) * clip.num_frames / 64)) for i in range(64)]
print(f"clip {long_i}: {clip.num_frames} frames, answer {data['direction', 'heldout'][long_i]['answer']!r};",
      f"kept frames {kept[:6].tolist()} ... {kept[-3:].tolist()}, one every {clip.num_frames / 64:.2f} frames")
print(f"a clip of 40 frames keeps {len(video.uniform_frame_indices(40, 64))}: {video.uniform_frame_indices(40, 64)[:5].tolist()} ...")

# %%
cols = 30
rows = -(-clip.num_frames // cols)
sheet = np.full((rows * 34, cols * 34, 3), 255, np.uint8)
for t in range(clip.num_frames):
    r, c = divmod(t, cols)
    if t in set(kept.tolist()):
        sheet[r * 34:r * 34 + 34, c * 34:c * 34 + 34] = (255, 140, 0)  # an orange frame around a kept frame
    sheet[r * 34 + 1:r * 34 + 33, c * 34 + 1:c * 34 + 33] = frames[t]
fig, ax = plt.subplots(figsize=(13, 13 * rows / cols), layout="constrained")
ax.imshow(sheet), ax.set_xticks([]), ax.set_yticks([])
ax.set_title(f"all {clip.num_frames} frames, row by row; the {len(kept)} uniformly sampled ones framed", fontsize=9);

# %% [markdown]
# ## 2. Each frame through the frozen image tower
#
# Each kept frame is encoded by the image tower of our tiny CLIP, frozen; we keep its final-layer CLS token,
# N = 1 token of width D = 64 per frame. A frame is a ShapesWorld scene at integer pixel positions, so equal
# frames are equal images (the background and the two shapes of a "which came first" clip repeat for many
# frames): each distinct frame is encoded once. Every clip fills 64 slots: with fewer frames than 64 each
# frame is held for several slots.

# %%
torch.manual_seed(0)
language_model, tokenizer = lm.load_pretrained("lm_shapes")
EOS = tokenizer.convert_tokens_to_ids("<|im_end|>")
cfg = llava.TinyLlavaConfig(connector="linear", vision_feature_layer=-1, vision_feature_select_strategy="cls")
model = llava.TinyLlava(cfg, language_model)                   # frozen CLIP image tower -> Linear -> the course LM


def encode(images):                                            # (n, 3, H, W) -> (n, 1, D_v), the tower's CLS
    return llava_data.tower_features(model, images)


cache, t0 = {}, time.perf_counter()
feats = {key: video.frame_features(video.clips_of(ds), encode, k=64, cache=cache) for key, ds in data.items()}
slots = sum(f.shape[0] * f.shape[1] for f in feats.values())
print(f"{slots:,} frame slots, {len(cache):,} distinct frames encoded once in {time.perf_counter() - t0:.1f} s;",
      "features of a clip:", tuple(feats["direction", "train"].shape[1:]), "= (T, N, D)")

# %% [markdown]
# ## 3. Three aggregators
#
# - **Mean pooling**: the average of the 64 frame tokens, one token.
# - **Perceiver resampler** (Flamingo's, as Llama 3.2's temporal aggregator): L = 4 learned latents attend to
#   the frame tokens; the keys and values are the frame tokens *concatenated with the latents*:
#   $\text{latents} \leftarrow \text{latents} + \text{Attn}(q=\text{latents},\ kv=[x_1 \dots x_T;\ \text{latents}])$,
#   then a feed-forward layer, each with a residual. **Merging 32 consecutive frames into one**: the 64 slots
#   are two chunks of 32, and each chunk becomes one "frame" of L tokens.
# - **The resampler with a time embedding**: a learned vector per frame position, $x_t + e_t$, added to the frame
#   tokens before they are attended to.
#
# Each aggregator's output tokens are averaged and read by one linear head per task; all three train on the
# same held-in clips of both kinds, 250 steps of 64 clips.

# %%
x = feats["direction", "train"][:2]
res = video.PerceiverResampler(dim=64, num_latents=4, depth=1, heads=4, max_frames=64)
merged = video.merge_frames(x, res, frames_per_chunk=32)
print("64 frames of N tokens:", tuple(x.shape), "= (B, T, N, D) -> merged:", tuple(merged.shape), "= (B, T / 32, L, D)")
assert merged.shape == (2, 2, 4, 64)

TASKS = ("direction", "color", "first")
NUM_CLASSES = {t: len(video.TASKS[t]) for t in TASKS}
x_train = torch.cat([feats["direction", "train"], feats["first", "train"]])
y_train = [torch.cat([torch.tensor(data[kind, "train"][t], dtype=torch.long) for kind in ("direction", "first")])
           for t in TASKS]                                     # -1 where a clip does not ask the task
y_test = {t: torch.tensor(data["first" if t == "first" else "direction", "heldout"][t]) for t in TASKS}


def loss_fn(m, batch):
    out = m(batch[0])
    return sum(F.cross_entropy(out[t], y, ignore_index=-1) for t, y in zip(TASKS, batch[1:]) if (y >= 0).any())


@torch.no_grad()
def accuracy(m, k=64):
    """Held-out accuracy per task with k uniformly sampled frames (each held for 64 / k slots)."""
    m.eval()
    got = {}
    for kind in ("direction", "first"):
        f = feats[kind, "heldout"] if k == 64 else video.frame_features(
            video.clips_of(data[kind, "heldout"]), encode, k=k, cache=cache)
        out = m(f)
        for t in ((("direction", "color") if kind == "direction" else ("first",))):
            got[t] = (out[t].argmax(1) == y_test[t]).float().mean().item()
    return got


classifiers, acc, hist = {}, {}, {}
for agg in video.VideoClassifier.AGGREGATORS:
    torch.manual_seed(0)
    classifiers[agg] = video.VideoClassifier(agg, 64, NUM_CLASSES, num_latents=4, depth=1, heads=4)
    hist[agg] = training.train(classifiers[agg], (x_train, *y_train), loss_fn,
                               training.TrainConfig(steps=250, batch_size=64, lr=3e-3, warmup=20, weight_decay=0.0))
    acc[agg] = accuracy(classifiers[agg])
chance = {"direction": 1 / 4, "color": 1 / 6, "first": 1 / 2}
report.table(["aggregator", "direction of motion", "which came first", "colour (control)"],
             [["chance", *(f"{chance[t]:.0%}" for t in ("direction", "first", "color"))]] +
             [[a, *(f"{acc[a][t]:.1%}" for t in ("direction", "first", "color"))] for a in acc])

# %% [markdown]
# Why the first two fail on order: play the 64 sampled frames backwards. A mean does not change, and the
# resampler without time embedding sees each chunk as a set (attention is a weighted sum, the same for any order
# of its keys) and averages the two chunks' outputs, so a clip and its reverse get the same logits. Reversing a
# clip reverses its direction and swaps which object came first, so such a model is right on at most one of
# the two: its accuracy on the clips plus its accuracy on their reverses is at most 100%. The colour is the same
# either way.

# %%
reversed_answer = {"direction": torch.tensor([1, 0, 3, 2])[y_test["direction"]],   # left <-> right, up <-> down
                   "first": 1 - y_test["first"]}                                     # circle <-> square
acc_reversed = {}
with torch.no_grad():
    for agg, m in classifiers.items():
        diffs, acc_reversed[agg] = [], {}
        for t in ("direction", "first"):
            f = feats[t, "heldout"]
            diffs.append((m(f)[t] - m(f.flip(1))[t]).abs().max().item())
            acc_reversed[agg][t] = (m(f.flip(1))[t].argmax(1) == reversed_answer[t]).float().mean().item()
        print(f"{agg:>15}: largest logit change when the frames are reversed {max(diffs):.1e}; accuracy on the "
              f"clips + on their reverses: direction {acc[agg]['direction']:.1%} + {acc_reversed[agg]['direction']:.1%}, "
              f"first {acc[agg]['first']:.1%} + {acc_reversed[agg]['first']:.1%}")
blind = [acc[a] for a in ("mean", "resampler")]
assert all(acc[a][t] + acc_reversed[a][t] <= 1 + 1e-5  # 1e-5: float32 rounding of the means
           for a in ("mean", "resampler") for t in ("direction", "first"))
assert all(a["first"] <= 0.6 and a["direction"] <= 0.6 for a in blind), blind   # chance 50%; 25% (50% knowing the axis)
assert acc["resampler+time"]["direction"] >= 0.95 and acc["resampler+time"]["first"] >= 0.90, acc
assert all(a["color"] >= 0.95 for a in acc.values()), acc

# %% [markdown]
# On direction, an order-blind model can still see whether the motion is horizontal or vertical (the set of
# positions differs), but not which way: over a clip and its reverse it averages at most 50% of four answers.

# %%
for agg in ("mean", "resampler"):
    print(f"{agg:>10}: direction {acc[agg]['direction']:.1%} and on the reverses {acc_reversed[agg]['direction']:.1%}, "
          f"mean {(acc[agg]['direction'] + acc_reversed[agg]['direction']) / 2:.1%} (order-blind: at most 50%); "
          f"which came first {acc[agg]['first']:.1%} (chance 50%)")
#
# ## 4. What too few frames lose
#
# The best model (resampler + time embedding) evaluated with k = 4 ... 64 sampled frames, each held for 64 / k
# slots. A "which came first" event lasts 10-30% of its clip, so with few frames one of the two objects may
# not be in any sampled frame: the last row counts how often.

# %%
best = classifiers["resampler+time"]
ks = (4, 8, 16, 32, 64)
by_k = {k: accuracy(best, k) for k in ks}
order_clips = video.clips_of(data["first", "heldout"])


def both_seen(c, k):
    idx = video.uniform_frame_indices(c.num_frames, k).tolist()
    return all(any(tr.start <= t < tr.end for t in idx) for tr in c.tracks)


missed = {k: 1 - np.mean([both_seen(c, k) for c in order_clips]) for k in ks}
report.table(["sampled frames k", *ks], [[t, *(f"{by_k[k][t]:.1%}" for k in ks)] for t in ("direction", "first", "color")] +
             [["first: clips with an object in no sampled frame", *(f"{missed[k]:.1%}" for k in ks)]])
fig, ax = plt.subplots(figsize=(6, 3), layout="constrained")
for t in ("direction", "first", "color"):
    ax.plot(ks, [by_k[k][t] for k in ks], "o-", label=t)
ax.set(xscale="log", xticks=ks, xticklabels=ks, xlabel="sampled frames k", ylabel="held-out accuracy",
       title="resampler + time embedding: accuracy against frames sampled")
ax.xaxis.set_minor_locator(plt.NullLocator())              # only the five k as ticks on the log axis
ax.legend();
assert missed[4] > 0.2 and by_k[4]["first"] < by_k[64]["first"] - 0.1, (missed, by_k)

# %% [markdown]
# **Temporal aliasing.** Sampling can also invert what it sees, as the 7 kHz tone sampled at 8 kHz in notebook 09
# came out as 1 kHz. A circle moves right at 0.9 pixels per frame across a 32-pixel canvas that wraps around (what
# leaves on the right comes back on the left), for 256 frames. We track its centre in the sampled frames, and
# ask the classifier too, though it never saw a clip that wraps around.

# %%
T_FAST, V_FAST = 256, 0.9
fast = video.Clip((video.Track("circle", "red", "small", 6, 16, 6 + V_FAST * (T_FAST - 1), 16, 0, T_FAST, wrap=True),),
                  T_FAST)


def apparent_shift(clip, k):
    """Median step of the circle's centre between consecutive sampled frames, in pixels (circular, + = right)."""
    fr = video.clip_frames(clip, video.uniform_frame_indices(clip.num_frames, k)).astype(float)
    red = fr[..., 0] - fr[..., 1] > 80                                           # (k, H, W) the red circle
    angle = np.exp(2j * np.pi * np.arange(32) / 32)
    centre = np.angle((red * angle[None, None]).sum((1, 2))) * 32 / (2 * np.pi)  # (k,) circular mean of x
    step = (np.diff(centre) + 16) % 32 - 16
    return float(np.median(step))


fast_shift = {k: apparent_shift(fast, k) for k in (64, 16, 8)}
with torch.no_grad():
    fast_pred = {k: video.DIRECTIONS[best(video.frame_features([fast], encode, k=k, cache=cache))["direction"].argmax().item()]
                 for k in (64, 8)}
print("apparent step per sampled frame (pixels, + = right):", {k: round(v, 2) for k, v in fast_shift.items()})
print("the model's answer:", fast_pred)
assert fast_shift[64] > 0 and fast_shift[8] < 0
fig, axes = plt.subplots(2, 8, figsize=(10, 3), layout="constrained")
for row, k in enumerate((64, 8)):
    idx = video.uniform_frame_indices(T_FAST, k)[:8]
    for ax, t, im in zip(axes[row], idx.tolist(), video.clip_frames(fast, idx)):
        ax.imshow(im), ax.set_xticks([]), ax.set_yticks([]), ax.set_title(f"t={t}", fontsize=7)
    axes[row, 0].set_ylabel(f"k = {k}", fontsize=8)
fig.suptitle("the first 8 sampled frames: moving right with 64 samples, apparently left with 8 (why? exercise 3)",
             fontsize=9);

# %% [markdown]
# ## 5. Generation: the video tokens into the LM
#
# The resampler's 2 x 4 output tokens go through a Linear to the LM's width and replace the `<image>`
# placeholder of the prompt, as the image features do in notebook 06 (prepended to the text; Llama 3.2 reads
# them through cross-attention layers instead). The resampler stays as trained above; the projector and the LM
# train on "Which way does the {colour} circle move?" -> "to the left / right / top / bottom", and we score
# greedy answers on the held-out clips by exact match.

# %%
with torch.no_grad():
    v_train, v_test = best.tokens(feats["direction", "train"]), best.tokens(feats["direction", "heldout"])  # (n, 8, D_v)
qa_train = video.qa_rows(tokenizer, list(data["direction", "train"]["question"]), list(data["direction", "train"]["answer"]))
questions, answers = list(data["direction", "heldout"]["question"]), list(data["direction", "heldout"]["answer"])


def lm_loss(m, batch):
    f, ids, labels = batch
    return llava_data.forward_from_features(m, f, ids, labels).loss


def answer_test(m):
    out = [None] * len(questions)
    for q in sorted(set(questions)):                          # one prompt length per batch: no padding needed
        idx = [i for i, qq in enumerate(questions) if qq == q]
        gen = llava_data.generate_from_features(m, v_test[idx], llava_data.prompt_ids(tokenizer, len(idx), prompt=q),
                                                max_new_tokens=8, eos_token_id=EOS)
        for i, text in zip(idx, tokenizer.batch_decode(gen, skip_special_tokens=True)):
            out[i] = text.strip()
    return out


before = answer_test(model)
gen_hist = training.train(model, (v_train, *qa_train), lm_loss,
                          training.TrainConfig(steps=60, batch_size=16, lr=3e-3, warmup=10, weight_decay=0.0))
after = answer_test(model)
gen_acc = {name: np.mean([a == b for a, b in zip(out, answers)]) for name, out in (("before", before), ("after", after))}
for i in range(4):
    print(f"{questions[i]!r:45} -> {after[i]!r:18} (truth {answers[i]!r}; before training {before[i]!r})")
print(f"exact match on {len(answers)} held-out clips: {gen_acc['before']:.1%} before training, {gen_acc['after']:.1%} after")
assert gen_acc["after"] >= 0.9, gen_acc

# %% [markdown]
# ## 6. What merging saves
#
# Without aggregation the LM reads every sampled frame's tokens; with it, one "frame" of L tokens per 32 frames.
# We time one forward pass of each for one clip (the median of 30): frame tokens -> projector -> LM on the spliced
# prompt, with the resampler's own time included on the merged side.

# %%
prompt = llava_data.prompt_ids(tokenizer, 1, prompt=questions[0])
x1 = feats["direction", "heldout"][:1]                        # (1, 64, 1, D_v)
raw_tokens = x1.flatten(1, 2)                                 # (1, 64, D_v): every frame's token
n_raw, n_merged = raw_tokens.shape[1], v_test.shape[1]


def time_forward(fn, repeats=30):
    """Median wall time of one call, in ms (the median shrugs off a busy machine's slow calls)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


model.eval()
with torch.no_grad():
    ms_raw = time_forward(lambda: llava_data.forward_from_features(model, raw_tokens, prompt))
    ms_merged = time_forward(lambda: llava_data.forward_from_features(model, best.tokens(x1), prompt))
tower_cfg = model.vision_tower.cfg
full = 64 * (1 + (tower_cfg.image_size // tower_cfg.patch_size) ** 2)   # every frame's CLS + 64 patch tokens
report.table(["video tokens into the LM", "tokens", "sequence (with the prompt)", "one forward pass (ms, median)"],
             [["64 frames x N = 1 (CLS)", n_raw, prompt.shape[1] - 1 + n_raw, f"{ms_raw:.1f}"],
              ["merged: 2 chunks x L = 4", n_merged, prompt.shape[1] - 1 + n_merged, f"{ms_merged:.1f}"],
              [f"64 frames x N = 65 (CLS + patches)", full, prompt.shape[1] - 1 + full,
               f"does not fit: the LM's context is {language_model.cfg.max_seq_len} tokens"]])
print(f"merging: {n_raw / n_merged:.0f}x fewer video tokens; one forward pass {ms_raw / ms_merged:.2f}x as fast "
      f"(resampler included) at this size")
assert n_raw == 64 and n_merged == 8 and full > language_model.cfg.max_seq_len

# %% [markdown]
# ## What we measured

# %%
report.measured("08_video_frame_aggregation", {
    **{f"held-out accuracy, {a}: direction / first / colour": " / ".join(f"{acc[a][t]:.1%}" for t in ("direction", "first", "color"))
       for a in acc},
    **{f"resampler + time, k = {k} frames: direction / first": f"{by_k[k]['direction']:.1%} / {by_k[k]['first']:.1%}" for k in ks},
    "aliasing: apparent step with 64 / 8 frames (px)": f"{fast_shift[64]:+.1f} / {fast_shift[8]:+.1f}",
    "generation exact match, before / after training": f"{gen_acc['before']:.1%} / {gen_acc['after']:.1%}",
    "video tokens into the LM, per frame / merged": f"{n_raw} / {n_merged}",
    "one forward pass, per frame / merged (ms)": f"{ms_raw:.1f} / {ms_merged:.1f}",
    "distinct frames encoded": len(cache),
    "notebook CPU time (s)": round(time.process_time() - cpu_start, 1),
    "notebook time (s)": round(time.perf_counter() - t_start, 1),
    "peak memory (GB)": round(report.peak_memory_gb(), 2),
})

# %% [markdown]
# ## Exercises
#
# Each exercise cell ends with a one-line check. Untouched, it says "not attempted yet"; the reference answers
# live in the repository's `solutions/` folder (open `solutions/nb08.py` only after you tried).
#
# **1.** Write uniform sampling: `my_uniform_frame_indices(num_frames, k)` returns a `LongTensor` of
# min(num_frames, k) indices, the centres of k equal segments when num_frames >= k, every frame otherwise.

# %%
def my_uniform_frame_indices(num_frames, k=64):
    raise NotImplementedError  # your code here


checks.exercise("08.uniform_frame_indices", my_uniform_frame_indices);

# %% [markdown]
# **2.** Llama 3.2's image encoder reads 224 x 224 frames in 14 x 14 patches (no CLS token counted here). How many
# video tokens reach the LM for 64 frames (a) without aggregation, (b) after merging each 32 consecutive frames
# into one frame of as many tokens as one frame has?

# %%
llama_video_tokens = ...  # (a, b)
checks.exercise("08.llama_video_tokens", llama_video_tokens);

# %% [markdown]
# **3.** Temporal aliasing. An object moves right at `v` pixels per frame on a canvas of `canvas` pixels that wraps
# around, for `num_frames` frames, of which `k` are sampled uniformly (num_frames a multiple of k). Write
# `my_apparent_step(v, num_frames, k, canvas)`: the step between consecutive sampled frames as it looks,
# the true step wrapped into [-canvas / 2, canvas / 2) (negative = it seems to move left).

# %%
def my_apparent_step(v, num_frames, k, canvas=32):
    raise NotImplementedError  # your code here


checks.exercise("08.apparent_step", my_apparent_step);
