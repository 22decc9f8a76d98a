# %% [markdown]
# # 06 · LLaVA from the parts: an image in, words out
#
# Classification (notebook 05) picks one of a few answers. A vision-language model *generates*: "not
# constrained to classification", it answers in words. The lecture's "simple and standard design" has four
# components: image preprocessing into patches, a pretrained ViT image encoder, a cross-modal connector (an
# MLP, initially random) that projects the vision embeddings to the LM's input width, and a pretrained
# decoder-only LM to whose token embeddings the projected vision embeddings are prepended (in the code: they
# replace the `<image>` placeholder of the prompt, before the request and the answer). This notebook
# builds each as code with its shapes, shows which positions of a training sequence carry loss, trains the
# connector live on captions (LLaVA's stage 1: only the projection), then projection and LM (stage 2), and
# measures the captions word by word against a blind model.
#
# **What you need:** about 80 s on a 2-core CPU, about 1.1 GB of memory at peak, no GPU. It trains a small
# projector (stage 1) and then projector + LM (stage 2) for a few hundred steps each. It loads the course LM
# (`data/checkpoints/lm_shapes`, made by `scripts/train_lm.py`) and the image tower of the tiny CLIP of
# notebook 03 (`clip_minilm`), so no earlier notebook need have run.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

from utils import checks, env, llava, llava_data, lm, lm_data, report, shapes, training, vit

device = env.setup(seed=0)
t_start, cpu_start = time.perf_counter(), time.process_time()
language_model, tokenizer = lm.load_pretrained("lm_shapes")
EOS = tokenizer.convert_tokens_to_ids("<|im_end|>")
train_ds = shapes.make_shapes_dataset(3000, seed=60)    # one-object scenes for training
test_ds = shapes.make_shapes_dataset(300, seed=61)      # held-out scenes, never trained on
train_captions, train_objects = llava_data.captions_of(train_ds)
test_captions, test_objects = llava_data.captions_of(test_ds)
(x_train,), (x_test,) = shapes.dataset_tensors(train_ds, []), shapes.dataset_tensors(test_ds, [])
print(f"{len(train_ds)} training and {len(test_ds)} held-out images {tuple(x_test.shape[1:])};",
      f"caption of the first: {test_captions[0]!r}")

# %% [markdown]
# ## 1. The pretrained LM, before any image
#
# The decoder is the course LM: Llama-style (RMSNorm, rotary positions, SwiGLU), 4 layers of width 128,
# pretrained on text about ShapesWorld only: captions, scene descriptions, questions and answers, some of
# them in the ChatML format with an `<image>` placeholder it has never seen filled. It knows what captions
# look like; it cannot know which one fits an image. Its perplexity on held-out text, and what it writes:

# %%
test_blocks = lm_data.pack([tokenizer(d)["input_ids"] for d in lm_data.make_corpus(1000, seed=1)], block=128)
ppl = lm_data.perplexity(language_model, test_blocks)
print(f"LM: {language_model.num_parameters() / 1e6:.2f}M parameters, held-out perplexity {ppl:.2f} "
      f"on {test_blocks.numel():,} tokens")
for text in ["a small red", "there are two shapes:", "<|im_start|>user\nWhat colour is a banana?<|im_end|>\n"
             "<|im_start|>assistant\n", "the shapes are"]:
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    new = language_model.generate(ids, max_new_tokens=16, eos_token_id=EOS)
    print(f"{text!r:>60} -> {tokenizer.decode(new[0], skip_special_tokens=True)!r}")
assert 1.5 < ppl < 2.3, ppl

# %% [markdown]
# ## 2. The four components, with their shapes
#
# 1. **Image preprocessing:** a 32 x 32 image becomes N = 64 patches of 4 x 4 x 3 = 48 numbers (notebook 01).
# 2. **A pretrained ViT image encoder:** the image tower of our tiny CLIP (notebook 03), frozen. It returns
#    a CLS token and 64 patch tokens of width $D_v = 64$ after each block; LLaVA reads the second-to-last
#    layer (`vision_feature_layer=-2`).
# 3. **The cross-modal connector:** LLaVA-1.5's `mlp2x_gelu`, Linear -> GELU -> Linear, from $D_v$ to the LM's
#    width $D = 128$, randomly initialised.
# 4. **The pretrained decoder LM:** the projected vectors replace the `<image>` placeholder among the token
#    embeddings (after the chat's first tokens, before the request and the answer: "prepended" to them), and
#    the LM runs on the spliced sequence of $L - 1 + N$ vectors.
#
# We keep only the CLS token ($N = 1$), a departure from LLaVA, which drops the CLS token and splices the 64
# patch tokens: with one token each training sequence is 63 positions shorter (section 3 draws both), which keeps
# this notebook's training inside its time budget on a CPU. What the 64 patch tokens would give is not measured
# here.

# %%
torch.manual_seed(0)
cfg = llava.TinyLlavaConfig(connector="mlp2x_gelu", vision_feature_layer=-2, vision_feature_select_strategy="cls")
model = llava.TinyLlava(cfg, language_model)       # vision_tower: the shipped CLIP image tower, frozen
images = x_test[:2]
ids, labels = llava_data.caption_rows(tokenizer, test_captions[:2])
print("1. images                      ", tuple(images.shape), "= (B, 3, H, W)")
print("   patches                     ", tuple(vit.patchify(images, 4).shape), "= (B, N, P*P*3)")
hidden = model.vision_tower.hidden_states(images)
print(f"2. tower hidden states ({len(hidden)} of them)", tuple(hidden[-2].shape), "= (B, 1 + N, D_v), CLS first")
feats = llava.select_image_features(hidden, cfg.vision_feature_layer, cfg.vision_feature_select_strategy)
print("   selected (CLS only)         ", tuple(feats.shape), "= (B, N, D_v)")
projected = model.multi_modal_projector(feats)
print("3. projected                   ", tuple(projected.shape), "= (B, N, D)")
token_embeds = language_model.embed_tokens(ids)
print("4. prompt + caption tokens     ", tuple(ids.shape), "-> embeddings", tuple(token_embeds.shape), "= (B, L, D)")
spliced, spliced_labels = llava.splice_image_features(ids, token_embeds, projected, cfg.image_token_id, labels)
print("   spliced sequence            ", tuple(spliced.shape), "= (B, L - 1 + N, D)")
out = language_model(inputs_embeds=spliced, labels=spliced_labels)
print("   next-token logits           ", tuple(out.logits.shape), "= (B, L - 1 + N, V)")
with torch.no_grad():
    same = model(images, ids, labels=labels)
assert torch.allclose(same.logits, out.logits, atol=1e-5)  # the parts, by hand, equal TinyLlava.forward
print(f"trainable: the projector (exercise 2 counts its parameters); "
      f"frozen tower {sum(p.numel() for p in model.vision_tower.parameters()):,}; "
      f"LM {language_model.num_parameters():,}")

# %% [markdown]
# ## 3. One training sequence, and which positions carry loss
#
# The LM is trained on the chat: the user turn holds the image and the request, the assistant turn the
# caption. Only the answer, the caption and the `<|im_end|>` that ends it (so the model learns to stop),
# carries loss; the image positions and the prompt are `IGNORE_INDEX` (-100) in the labels. The prompt is given
# at inference (the user writes it), so the model is never asked to produce it and is not trained to: its loss
# would only teach the fixed chat template. The picture shows a row with the 64 patch tokens spliced in (what
# LLaVA does) and then ours, with the CLS token only.

# %%
def plot_sequence(ids_row, labels_row, n_image, ax):
    """One spliced sequence as coloured cells: image / prompt / answer, and a dot where a label carries loss."""
    pos = int((ids_row == cfg.image_token_id).nonzero())
    toks = tokenizer.convert_ids_to_tokens(ids_row.tolist())
    kinds = ["prompt"] * pos + ["image"] * n_image + ["answer" if l != lm.IGNORE_INDEX else
                                                      ("pad" if t == tokenizer.pad_token else "prompt")
                                                      for t, l in zip(toks[pos + 1:], labels_row[pos + 1:].tolist())]
    words = toks[:pos] + [""] * n_image + toks[pos + 1:]
    colours = {"prompt": "#c6dbef", "image": "#fdae6b", "answer": "#a1d99b", "pad": "#eeeeee"}
    for i, (k, w) in enumerate(zip(kinds, words)):
        ax.add_patch(plt.Rectangle((i, 0), 1, 1, color=colours[k], ec="white", lw=0.5))
        if w:
            ax.text(i + 0.5, 0.5, w.replace("Ġ", "").replace("Ċ", "\\n"), rotation=90, ha="center", va="center", fontsize=7.5)
        if k == "answer":
            ax.plot(i + 0.5, -0.3, "k.", ms=4)
    ax.set_xlim(0, len(kinds)), ax.set_ylim(-0.6, 1)
    ax.set_yticks([]), ax.set_xlabel("position in the spliced sequence")
    ax.legend(handles=[plt.Rectangle((0, 0), 1, 1, color=c) for c in colours.values()] +
              [plt.Line2D([], [], color="k", marker=".", ls="")], labels=[*colours, "carries loss"],
              loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    return ax


fig, axes = plt.subplots(2, 1, figsize=(15, 4.4), layout="constrained",
                         gridspec_kw=dict(height_ratios=[1, 1]))
plot_sequence(ids[0], labels[0], 64, axes[0]).set_title(f"LLaVA-style: the 64 patch tokens spliced in, "
                                                        f"{ids.shape[1] - 1 + 64} positions", fontsize=9)
plot_sequence(ids[0], labels[0], 1, axes[1]).set_title(f"ours: the CLS token only, {ids.shape[1]} positions",
                                                       fontsize=9);

# %%
print(f"labels of row 0 that carry loss: {(spliced_labels[0] != lm.IGNORE_INDEX).sum().item()} of "
      f"{spliced_labels.shape[1]} positions:", repr(tokenizer.decode(spliced_labels[0][spliced_labels[0] >= 0])))
# the logits at position t are scored against the label at t + 1 (the LM shifts them inside its loss)
start = int((spliced_labels[0] != lm.IGNORE_INDEX).nonzero()[0])             # the first position with a label
pred = out.logits[0].argmax(-1)                                                # (L - 1 + N,) untrained model's guesses
report.table(["position t", "it has read up to", "predicted at t (untrained projector)", "label t + 1"],
             [[t, "<image> (projected)" if t == int((ids[0] == cfg.image_token_id).nonzero()) else
               repr(tokenizer.decode(ids[0][:t + 1][-1:])), repr(tokenizer.decode(pred[t:t + 1])),
               "no loss (-100)" if spliced_labels[0, t + 1] < 0 else repr(tokenizer.decode(spliced_labels[0, t + 1:t + 2]))]
              for t in range(start - 3, start + 3)])

# %% [markdown]
# ## 4. Training on captions: stage 1 (projector only), then stage 2 (projector + LM)
#
# LLaVA: "first tune only the projection, then tune the projection and LM". The tower is frozen in both
# stages, so its features are the same every step: we compute them once. Each step takes 16 captions in stage 1 and 32 in stage 2.
# We score captions word by word: greedy captions of the 300 held-out images (batched, with the KV cache) are
# read back into size, colour, shape and position, and each slot is right or wrong. The **blind baseline**
# is the same pretrained LM with no image at all (the prompt without `<image>`, evaluated as is): it writes
# one caption for every image, so its accuracy is how often those words happen to be right.

# %%
f_train = llava_data.tower_features(model, x_train)      # (3000, 1, D_v), computed once
f_test = llava_data.tower_features(model, x_test)        # (300, 1, D_v)
rows_train = llava_data.caption_rows(tokenizer, train_captions)
test_prompt = llava_data.prompt_ids(tokenizer, len(f_test))
SHOW = [0, 1, 2, 3, 4, 5]                                # held-out images whose captions we follow


def caption_test(m):
    out = llava_data.generate_from_features(m, f_test, test_prompt, max_new_tokens=12, eos_token_id=EOS)
    return tokenizer.batch_decode(out, skip_special_tokens=True)


def loss_fn(m, batch):
    f, i, lab = batch
    return llava_data.forward_from_features(m, f, i, lab).loss


blind_ids = llava_data.prompt_ids(tokenizer, 1, image=False)
blind_caption = tokenizer.decode(language_model.generate(blind_ids, max_new_tokens=12, eos_token_id=EOS)[0],
                                 skip_special_tokens=True)
acc = {"blind (no image, LM as is)": llava_data.word_accuracy([blind_caption] * len(test_objects), test_objects)}
captions = {"before training": caption_test(model)}
acc["before training"] = llava_data.word_accuracy(captions["before training"], test_objects)
print(f"blind caption for every image: {blind_caption!r}")
print(f"before training, first captions: {captions['before training'][:3]}")

# %%
STAGE1_STEPS, STAGE2_STEPS = 150, 500
language_model.requires_grad_(False)                     # stage 1: only the projector learns
hist1 = training.train(model, (f_train, *rows_train), loss_fn,
                       training.TrainConfig(steps=STAGE1_STEPS, batch_size=16, lr=3e-3, warmup=20, weight_decay=0.0),
                       params=list(model.multi_modal_projector.parameters()))
captions["after stage 1"] = caption_test(model)
acc["after stage 1 (projector)"] = llava_data.word_accuracy(captions["after stage 1"], test_objects)
print(f"stage 1: {hist1.seconds:.1f} s,", {k: f"{v:.0%}" for k, v in acc["after stage 1 (projector)"].items()})

# %%
language_model.requires_grad_(True)                      # stage 2: projector and LM learn
hist2 = training.train(model, (f_train, *rows_train), loss_fn,
                       training.TrainConfig(steps=STAGE2_STEPS, batch_size=32, lr=2e-3, warmup=20, weight_decay=0.0))
captions["after stage 2"] = caption_test(model)
acc["after stage 2 (projector + LM)"] = llava_data.word_accuracy(captions["after stage 2"], test_objects)
print(f"stage 2: {hist2.seconds:.1f} s,", {k: f"{v:.0%}" for k, v in acc["after stage 2 (projector + LM)"].items()})
print(f"captions read: stage 1 {STAGE1_STEPS * 16:,}, stage 2 {STAGE2_STEPS * 32:,} "
      f"({STAGE2_STEPS * 32 / (STAGE1_STEPS * 16):.1f}x as many), from the same {len(train_captions):,} training images")
report.table(["model", *llava_data.ATTRIBUTES], [[k, *(f"{v[a]:.1%}" for a in llava_data.ATTRIBUTES)]
                                                 for k, v in acc.items()])
final = acc["after stage 2 (projector + LM)"]
# a guard, not a claim: position reads 84-87% from run to run of this cell on the same 2-core CPU (86.7% committed,
# 84.0% in a CI run on 2026-12-06), so the guard sits below that spread
assert min(final["size"], final["color"], final["shape"]) >= 0.95 and final["position"] >= 0.80, final

# %%
fig, ax = plt.subplots(figsize=(7, 3), layout="constrained")
ax.plot(range(len(hist1.loss)), hist1.loss, lw=0.8, label="stage 1: projector")
ax.plot(range(len(hist1.loss), len(hist1.loss) + len(hist2.loss)), hist2.loss, lw=0.8, label="stage 2: projector + LM")
ax.set(xlabel="step", ylabel="caption loss (nats per answer token)", yscale="log", title="training loss")
ax.legend();

# %%
fig, axes = plt.subplots(2, len(SHOW) // 2, figsize=(13, 7), layout="constrained")
for ax, i in zip(axes.flat, SHOW):
    ax.imshow(x_test[i].permute(1, 2, 0)), ax.set_xticks([]), ax.set_yticks([])
    short = {"before training": "before", "after stage 1": "stage 1", "after stage 2": "stage 2"}
    ax.set_title("\n".join(f"{short[k]}: {captions[k][i]}" for k in captions), fontsize=8, loc="left")
    ax.set_xlabel(f"truth: {test_captions[i]}", fontsize=8)
fig.suptitle("greedy captions of held-out images: before training, after stage 1, after stage 2", fontsize=9);

# %% [markdown]
# ## 5. Why a tiny frozen LM cannot use a projected prefix well
#
# In stage 1 the LM is frozen: the projector must find, for every image, one vector that this LM reads the way
# it would read the words "small red circle at the top". Ours was pretrained only on text
# in which `<image>` was always the same placeholder followed by a random caption: it learned to ignore that
# position and write the most likely caption. A test: give the frozen LM the *right* caption's word
# embeddings in place of the image (the best a projector could hope for) — does it copy them? (Notebook 07,
# section 8, puts a real pretrained LM in its place, SmolLM2-135M, and trains only a projector for it.)

# %%
frozen_lm, _ = lm.load_pretrained("lm_shapes")           # a fresh copy of the pretrained LM, never fine-tuned
oracle_model = llava.TinyLlava(cfg, frozen_lm, vision_tower=model.vision_tower)
prompt1 = llava_data.prompt_ids(tokenizer, 1)
oracle_caps = []
with torch.no_grad():
    for c in test_captions[:100]:
        words = frozen_lm.embed_tokens(torch.tensor([tokenizer(c)["input_ids"]]))   # (1, N, D): the right words
        embeds, _ = llava.splice_image_features(prompt1, frozen_lm.embed_tokens(prompt1), words, cfg.image_token_id)
        new = frozen_lm.generate(inputs_embeds=embeds, max_new_tokens=12, eos_token_id=EOS)
        oracle_caps.append(tokenizer.decode(new[0], skip_special_tokens=True))
oracle = llava_data.word_accuracy(oracle_caps, test_objects[:100])
print("the true caption's words in place of the image, frozen LM:",
      {k: f"{v:.0%}" for k, v in oracle.items()}, "| first:", oracle_caps[0], "| truth:", test_captions[0])

# %% [markdown]
# ## 6. Generation: greedy, sampling, and the KV cache
#
# Greedy decoding takes the most likely token each step; sampling draws from $\mathrm{softmax}(z / T)$ with a
# `torch.Generator`, so the draw is reproducible. A KV cache keeps the keys and values of the tokens already
# read, so each step runs the LM on one new token instead of the whole sequence; the tokens are the same.

# %%
one = f_test[:1].expand(4, -1, -1)
prompt4 = llava_data.prompt_ids(tokenizer, 4)
print("truth:", test_captions[0])
for name, kw in [("greedy", dict(do_sample=False)), ("T = 0.7", dict(do_sample=True, temperature=0.7)),
                 ("T = 1.5", dict(do_sample=True, temperature=1.5))]:
    gen = torch.Generator().manual_seed(0)
    out = llava_data.generate_from_features(model, one, prompt4, max_new_tokens=12, eos_token_id=EOS, generator=gen, **kw)
    print(f"{name:>8}:", " | ".join(tokenizer.batch_decode(out, skip_special_tokens=True)))

# %% [markdown]
# Why the sampled lines can equal the greedy one: sampling at temperature T leaves the most likely token only as
# often as the rest of the distribution has mass, and both sampled lines use the same seed, so the same random
# draws: they differ only where a draw lands between the two temperatures' shares of a token. Along the greedy
# caption of this image, the probability of the token greedy picked, at T = 0.7, 1 and 1.5:

# %%
greedy = llava_data.generate_from_features(model, f_test[:1], prompt4[:1], max_new_tokens=12, eos_token_id=EOS)
with torch.no_grad():
    logits = llava_data.forward_from_features(model, f_test[:1], torch.cat([prompt4[:1], greedy], 1)).logits
steps = logits[0, prompt4.shape[1] - 1:-1]                   # (S, V): the logits that chose each greedy token
for T in (0.7, 1.0, 1.5):
    p_top = torch.softmax(steps / T, -1).gather(1, greedy[0][:, None]).squeeze(1)
    print(f"T = {T}: probability of the greedy token, lowest over the {len(p_top)} steps {p_top.min():.3f}; "
          f"chance that a sample copies the whole greedy caption {p_top.prod():.2f}")

# %% [markdown]
# And the positions: some captions in section 4's figure swap left and right. Counted over the 300 held-out captions, and asked of the frozen tower's CLS token
# directly: a linear probe (logistic regression on the training images' CLS features) for the horizontal part of
# the position (left / right / neither) and for the vertical part (top / bottom / neither).

# %%
def mirror(phrase):
    return phrase.replace("left", "@").replace("right", "left").replace("@", "right")


want_pos = [llava_data.caption_words(o)["position"] for o in test_objects]
got_pos = [llava_data.parse_caption(c)["position"] for c in captions["after stage 2"]]
wrong = [(g, w) for g, w in zip(got_pos, want_pos) if g != w]
mirrored = sum(g == mirror(w) for g, w in wrong)
print(f"position wrong in {len(wrong)} of {len(want_pos)} held-out captions; {mirrored} of them are the mirror "
      f"image (left and right swapped)")


def part(objects, words):
    """0 / 1 / 2 for each object's position phrase: the first word of `words` in it, the second, or neither."""
    phrases = [llava_data.caption_words(o)["position"] for o in objects]
    return torch.tensor([0 if words[0] in ph else 1 if words[1] in ph else 2 for ph in phrases])


probe_acc = {}
for name, words in (("horizontal (left / right / neither)", ("left", "right")),
                    ("vertical (top / bottom / neither)", ("top", "bottom"))):
    probe = training.fit_linear_probe(f_train[:, 0], part(train_objects, words), 3)
    probe_acc[name] = training.accuracy(probe(torch.nn.functional.normalize(f_test[:, 0], dim=-1)),
                                        part(test_objects, words))
print("linear probe of the frozen CLS feature, held-out images:", {k: f"{v:.1%}" for k, v in probe_acc.items()})
h_acc, v_acc = probe_acc.values()
print(f"the frozen feature carries left / right ({h_acc:.1%}) about as well as top / bottom ({v_acc:.1%}): the "
      f"information is there, and what {STAGE1_STEPS} + {STAGE2_STEPS} steps have not fully learned is reading it"
      if abs(h_acc - v_acc) < 0.05 else
      f"the frozen feature carries left / right ({h_acc:.1%}) less well than top / bottom ({v_acc:.1%})")

# %%
timing = {}
for use_cache in (True, False):
    t0 = time.perf_counter()
    toks = llava_data.generate_from_features(model, f_test, test_prompt, max_new_tokens=12, eos_token_id=EOS,
                                             use_cache=use_cache)
    timing[use_cache] = (time.perf_counter() - t0, toks)
assert torch.equal(timing[True][1], timing[False][1])
kv_ratio = timing[False][0] / timing[True][0]
print(f"300 greedy captions: {timing[True][0]:.2f} s with the KV cache, {timing[False][0]:.2f} s without "
      f"({kv_ratio:.1f}x); the same tokens: True")

# %% [markdown]
# ## 7. Not constrained to classification
#
# The model writes a sentence token by token from a 512-token vocabulary; nothing restricts it to a list of
# answers. How many different captions did it write for the 300 held-out images, and how many of them are
# sentences it never saw in training?

# %%
seen = set(train_captions)
final_caps = captions["after stage 2"]
new_idx = [i for i, c in enumerate(final_caps) if c not in seen]
n_new = len({final_caps[i] for i in new_idx})
print(f"{len(set(final_caps))} different captions for {len(final_caps)} images; {len(set(final_caps)) - n_new} of them "
      f"({1 - n_new / len(set(final_caps)):.0%}) are sentences among the {len(seen)} distinct training captions, "
      f"{n_new} are not")
if new_idx:
    new_acc = llava_data.word_accuracy([final_caps[i] for i in new_idx], [test_objects[i] for i in new_idx])
    print(f"the {len(new_idx)} images captioned with a new sentence, scored word by word:",
          {k: f"{v:.0%}" for k, v in new_acc.items()}, "e.g.", [(final_caps[i], test_captions[i]) for i in new_idx[:2]])
print("a few:", final_caps[6:10])

# %% [markdown]
# ## What we measured

# %%
report.measured("06_llava_architecture", {
    "LM held-out perplexity (text only)": round(ppl, 2),
    **{f"{k}: size / colour / shape / position": " / ".join(f"{v[a]:.0%}" for a in llava_data.ATTRIBUTES)
       for k, v in acc.items()},
    "KV-cache speed-up, 300 captions": f"{kv_ratio:.1f}x",
    "notebook CPU time (s)": round(time.process_time() - cpu_start, 1),
    "notebook time (s)": round(time.perf_counter() - t_start, 1),
    "peak memory (GB)": round(report.peak_memory_gb(), 2),
})

# %% [markdown]
# ## Exercises
#
# Each exercise cell ends with a one-line check. Untouched, it says "not attempted yet"; the reference answers
# live in the repository's `solutions/` folder (open `solutions/nb06.py` only after you tried).
#
# **1.** How long is the spliced sequence? (a) A row of L = 30 tokens holds two `<image>` placeholders, one per
# image, and each image is spliced in as its 64 patch tokens: how many vectors does the LM read? (b) LLaVA-1.5's
# tower is CLIP ViT-L/14 at 336 x 336 pixels (patches of 14 x 14 pixels, one token each, the CLS dropped); a
# prompt of 40 tokens holding one `<image>` becomes how long?

# %%
spliced_lengths = ...  # (a, b)
checks.exercise("06.spliced_length", spliced_lengths);

# %% [markdown]
# **2.** Count the projector's parameters: (a) our `mlp2x_gelu` from $D_v = 64$ to $D = 128$ (two Linear
# layers with biases); (b) LLaVA's linear projection from CLIP ViT-L/14's width 1024 to LLaMA-7B's 4096.

# %%
projector_params = ...  # (a, b)
checks.exercise("06.projector_params", projector_params);

# %% [markdown]
# **3.** Write the splice for one row: `ids` (L,) holds one `image_token_id`, `embeds` (L, D) are its token
# embeddings, `feats` (N, D) the projected image features. Return the (L - 1 + N, D) sequence in which the
# placeholder's embedding is replaced by the N features, in order.

# %%
def my_splice_row(ids, embeds, feats, image_token_id):
    raise NotImplementedError  # your code here


checks.exercise("06.splice_row", my_splice_row);
