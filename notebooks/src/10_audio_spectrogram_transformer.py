# %% [markdown]
# # 10 · Speech into transformers: the Audio Spectrogram Transformer and an audio encoder feeding the LM
#
# The lecture ends its speech part with two models. The **Audio Spectrogram Transformer** (AST, Gong et al.,
# 2021) treats a log-mel spectrogram as a one-channel image: 128 mel bins every 10 ms (25 ms Hann windows),
# cut into 16 x 16 patches with a stride of 10 in both axes (so neighbouring patches overlap by 6), a CLS and a
# distillation token in front (DeiT), and a ViT on top, initialised from an ImageNet ViT; it reached 98.1% on
# Speech Commands V2 (35 words). **Qwen2-Audio** (Chu et al., 2024) feeds an audio encoder (Whisper-large-v3's:
# 16 kHz, 128 mel bins, 25 ms / 10 ms) through a stride-2 convolution and a stride-2 pooling, so that each audio
# token covers about 40 ms, into a Qwen LLM, trained in three stages: audio-language pretraining with
# natural-language prompts, supervised fine-tuning, then DPO. This notebook builds an AST on notebook 09's
# log-mel features, trains it on spoken words, tests the paper's claim that image pretraining helps, and then
# connects it to the course LM and trains that in stages, as Qwen2-Audio does.
#
# **What you need:** about 72 s on a 2-core CPU (the median of three runs; it uses one thread), about 1.0 GB of memory at peak, no GPU. It trains
# two small ASTs (250 steps each), aligns the audio tokens with the LM's word embeddings (the projector for 300 steps,
# then the projector and the AST for 150), and fine-tunes the projector and the LM (260 steps). It reads the spoken words of `data/speech/`
# (made by `scripts/make_speech_data.py`), the tiny ViT of notebook 02 (`vit_shapes`) and the course LM
# (`lm_shapes`), so no earlier notebook need have run.

# %%
import copy
import csv
from collections import Counter
import math
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
import torchaudio
from transformers import ASTFeatureExtractor

from utils import DATA_DIR, audio, checks, env, llava_data, lm, report, training, vit
from utils import audio_transformer as at
from utils.checkpoints import load_checkpoint

device = env.setup(seed=0, threads=1)  # one thread: these matrices are small, and a second thread waits on a busy CPU
t_start, cpu_start = time.perf_counter(), time.process_time()
SPEECH, SR = DATA_DIR / "speech", 16000
with open(SPEECH / "metadata.csv") as f:
    rows = [r for r in csv.DictReader(f) if r["split"] in ("train", "test")]
waves = []
for r in rows:
    x, sr = audio.read_wav(SPEECH / r["file"])                     # (1, T), checked against data/MANIFEST
    assert sr == SR
    waves.append(F.pad(x[0], (0, max(0, SR - x.shape[1])))[:SR])  # every word clip: exactly 1 s
waves = torch.stack(waves)                                        # (352, 16000)
WORDS = sorted({r["word"] for r in rows})
y = torch.tensor([WORDS.index(r["word"]) for r in rows])
is_train = torch.tensor([r["split"] == "train" for r in rows])
voices = {s: sorted({r["voice"] for r in rows if r["split"] == s}) for s in ("train", "test")}
print(f"{len(rows)} one-second clips of {len(WORDS)} words: {WORDS}")
print(f"training voices {voices['train']}; held-out voices, never heard in training: {voices['test']}")
print(f"{int(is_train.sum())} training clips, {int((~is_train).sum())} held-out clips")

# %% [markdown]
# ## 1. From notebook 09's log-mel to AST's input
#
# Notebook 09 built `log_mel_spectrogram`: frames of 25 ms every 10 ms, a window, $|DFT|^2$, a mel filter bank,
# the log. AST asks for 128 mel bins and a Hann window. With 128 bins the lowest triangles are narrower than
# the 31 Hz bin spacing of a 512-point DFT and would cover no bin (our `mel_filterbank` refuses that), so we
# zero-pad each 400-sample frame to a 1024-point DFT. One second gives $1 + \lfloor(16000 - 400)/160\rfloor$ frames.

# %%
EPS = torch.finfo(torch.float32).eps                              # the log floor Kaldi uses
MEL = dict(sample_rate=SR, win_ms=25.0, hop_ms=10.0, window="hann", n_fft=1024, f_min=20.0, eps=EPS)
EXAMPLE = next(i for i, r in enumerate(rows) if r["file"] == "left_en-us-f2_p65_s140.wav")
spec128 = audio.log_mel_spectrogram(waves[EXAMPLE], n_mels=128, **MEL)   # (128, 98) = (M, T)
grid128 = at.ast_patch_grid(*spec128.shape)
print(f"log-mel of one clip: {tuple(spec128.shape)} = (M mel bins, T frames); "
      f"16 x 16 patches every 10 bins and 10 frames: a grid of {grid128[0]} x {grid128[1]} = "
      f"{grid128[0] * grid128[1]} patches, {grid128[0] * grid128[1] + 2} tokens with CLS and distillation")
print(f"  the paper's Speech Commands V2 clips, padded to 128 frames: grid {at.ast_patch_grid(128, 128)}")
assert grid128 == (12, 9)

# %% [markdown]
# The grid drawn on the spectrogram of "left": every patch is 16 x 16 and starts 10 bins or 10 frames after
# its neighbour, so each row of patches shares 6 bins with the next one (two overlapping patches are shaded).

# %%
fig, ax = plt.subplots(figsize=(9, 4.2), layout="constrained")
im = ax.imshow(spec128, origin="lower", aspect="auto", cmap="magma")
for i in range(grid128[0]):
    for j in range(grid128[1]):
        ax.add_patch(plt.Rectangle((j * 10 - 0.5, i * 10 - 0.5), 16, 16, fill=False, ec="white", lw=0.4, alpha=0.6))
for i, c in [(5, "tab:cyan"), (6, "tab:green")]:
    ax.add_patch(plt.Rectangle((40 - 0.5, i * 10 - 0.5), 16, 16, color=c, alpha=0.45))
ax.set(xlabel="frame (10 ms)", ylabel="mel bin", title=f'"left": {grid128[0]} x {grid128[1]} overlapping '
       "16 x 16 patches (two neighbours shaded: 6 bins shared)")
fig.colorbar(im, ax=ax, label="log mel power");

# %% [markdown]
# **Our features beside transformers' `ASTFeatureExtractor`.** AST's code computes Kaldi filter banks with
# `torchaudio.compliance.kaldi.fbank`; transformers' feature extractor calls the same function. We compare the
# raw log-mel values (normalisation off) on the first 40 clips, over all frames and over the loud frames
# (those within 5 nats of the loudest frame's mean).

# %%
fe = ASTFeatureExtractor(max_length=98, do_normalize=False)
sub = waves[:40]
theirs = torch.tensor(np.stack(fe([w.numpy() for w in sub], sampling_rate=SR)["input_values"]))  # (40, T, M)
kaldi = torch.stack([torchaudio.compliance.kaldi.fbank(w[None], sample_frequency=SR, window_type="hanning",
                                                       num_mel_bins=128) for w in sub])
ours = audio.log_mel_spectrogram(sub, n_mels=128, **MEL).transpose(1, 2)                          # (40, T, M)
diff = ours - theirs
frame_level = theirs.mean(-1)                                                                      # (40, T)
loud = frame_level > frame_level.amax(1, keepdim=True) - 5
feat_all, feat_loud = diff.abs().mean().item(), diff[loud].abs().mean().item()
print(f"ASTFeatureExtractor = kaldi.fbank: max difference {(theirs - kaldi).abs().max().item():.1e}")
print(f"ours - theirs: mean |difference| {feat_all:.2f} nats over all frames, {feat_loud:.2f} over the "
      f"{loud.float().mean():.0%} loud frames; correlation {torch.corrcoef(torch.stack([ours[loud].flatten(), theirs[loud].flatten()]))[0, 1]:.3f}")
assert (theirs - kaldi).abs().max() < 1e-4

# %% [markdown]
# Why they differ: Kaldi first removes each frame's mean and applies **pre-emphasis**
# $x[n] - 0.97\,x[n-1]$, a filter with power gain $|1 - 0.97 e^{-i\omega}|^2$ that cuts low frequencies and
# lifts high ones; it uses a **512-point DFT** (our 1024 points put twice as many bins under each triangle:
# $+\ln 2$); and it draws its triangles on the mel axis rather than in Hz. The first two predict the mean
# difference in every mel bin: $\ln 2 - \ln|1 - 0.97 e^{-i 2\pi f/16000}|^2$ at the bin's centre frequency $f$.
# The silent frames (the zero padding of short clips) sit near both pipelines' log floor, which is why the
# difference over all frames is smaller than over the loud ones.

# %%
centres = audio.inverse_mel_scale(torch.linspace(audio.mel_scale(20.0), audio.mel_scale(8000.0), 130)[1:-1])
w = 2 * math.pi * centres / SR
predicted = math.log(2) - torch.log((1 - 0.97 * torch.cos(w)) ** 2 + (0.97 * torch.sin(w)) ** 2)
per_bin = diff[loud].mean(0)                                                                     # (128,)
residual = (per_bin - predicted).abs().mean().item()
print(f"mean difference per bin: {per_bin[0]:+.2f} nats in the lowest bin, {per_bin[-1]:+.2f} in the highest; "
      f"prediction {predicted[0]:+.2f} and {predicted[-1]:+.2f}; mean |measured - predicted| {residual:.2f} nats")
fig, ax = plt.subplots(figsize=(7, 3), layout="constrained")
ax.plot(per_bin, label="measured: ours - Kaldi, loud frames")
ax.plot(predicted, "--", label="ln 2 - pre-emphasis gain")
ax.set(xlabel="mel bin", ylabel="nats", title="the difference is mostly pre-emphasis and the DFT size")
ax.legend();
assert residual < 0.5
kaldi_bank, _ = torchaudio.compliance.kaldi.get_mel_banks(128, 512, SR, 20.0, 0.0, 100.0, -500.0, 1.0)  # (128, 256)
our_bank = audio.mel_filterbank(MEL["n_fft"] // 2 + 1, 20.0, SR / 2, 128, SR).T                      # (128, 513)
print("DFT bins under each of the 12 lowest triangles: Kaldi (512 points)", (kaldi_bank[:12] > 0).sum(1).tolist(),
      "| ours (1024 points)", (our_bank[:12] > 0).sum(1).tolist())

# %% [markdown]
# The jagged lowest bins (up to about bin 10) are the third difference: with a 512-point DFT, 31 Hz per DFT bin,
# Kaldi's lowest mel triangles are about as narrow as one DFT bin and catch 0 to 2 of them (printed above; the
# one that catches none is the spike at bin 3), so their energy jumps from bin to bin; ours, with 1024 points,
# catch 1 to 3.
#
# **Normalisation.** AST subtracts a dataset mean and divides by twice the standard deviation
# (`ASTFeatureExtractor` ships AudioSet's); we compute ours on the training clips only. **Fewer bins for this
# CPU:** with 128 bins a second of audio is 110 tokens; we train on 40 bins (the patching as in AST: 16 x 16,
# stride 10), which leaves 3 patch rows instead of 12. The model itself is far smaller than AST's (section 2),
# and our features skip Kaldi's pre-emphasis. The forward pass of the same small AST on 32 clips, timed:

# %%
print(f"ASTFeatureExtractor's AudioSet statistics: mean {fe.mean:.2f}, std {fe.std:.2f}")
N_MELS = 40
specs = audio.log_mel_spectrogram(waves, n_mels=N_MELS, **MEL)                                  # (352, 40, 98)
MEAN, STD = specs[is_train].mean().item(), specs[is_train].std().item()
X = (specs - MEAN) / (2 * STD)                                                                  # (352, M, T)
print(f"our training clips: mean {MEAN:.2f}, std {STD:.2f}; normalised values "
      f"{X[is_train].mean():.2f} +- {X[is_train].std():.2f}")
step_ms = {}
for m in (128, N_MELS):
    probe = at.AST(at.ASTConfig(n_mels=m, depth=2)).eval()
    x = torch.randn(32, m, 98)
    with torch.no_grad():
        probe(x)
        t0 = time.perf_counter()
        for _ in range(3):
            probe(x)
    step_ms[m] = 1000 * (time.perf_counter() - t0) / 3
    print(f"{m:3d} mel bins: grid {probe.cfg.grid}, {2 + probe.cfg.grid[0] * probe.cfg.grid[1]} tokens, "
          f"forward of 32 clips {step_ms[m]:.0f} ms")

# %% [markdown]
# ## 2. An AST trained on spoken words, initialised from an image ViT
#
# The AST: 64-wide tokens, 2 encoder blocks of `utils.vit` (the same `EncoderBlock` as notebook 02's ViT; its
# logits equal transformers' `ASTForAudioClassification` with copied weights, see
# `tests/test_audio_transformer.py`), the head on the mean of the CLS and distillation outputs. As in the paper
# it starts from an image ViT: the tiny ViT of notebook 02, trained on ShapesWorld images (4 x 4 patches,
# 8 x 8 grid). Its patch projection's RGB channels are averaged (a spectrogram has one channel) and resized to
# 16 x 16, its position embeddings are interpolated from the 8 x 8 image grid to the 3 x 9 spectrogram grid,
# its first two blocks copied. **SpecAugment** (torchaudio's `FrequencyMasking` and `TimeMasking`) hides a
# random band of 0 to 7 mel bins and of 0 to 9 frames of each training clip, each step anew (torchaudio draws
# the width uniformly below `freq_mask_param=8` and `time_mask_param=10`).

# %%
state, vit_config = load_checkpoint(DATA_DIR / "checkpoints" / "vit_shapes")
image_vit = vit.ViT(vit.ViTConfig(**vit_config["model"]))
image_vit.load_state_dict(state)
AST_CFG = at.ASTConfig(n_mels=N_MELS, max_length=98, dim=64, depth=2, heads=4, mlp_dim=128, num_classes=len(WORDS))
freq_mask = torchaudio.transforms.FrequencyMasking(freq_mask_param=8, iid_masks=True)
time_mask = torchaudio.transforms.TimeMasking(time_mask_param=10, iid_masks=True)
AST_STEPS = 250
AST_TRAIN = training.TrainConfig(steps=AST_STEPS, batch_size=32, lr=3e-3, warmup=20, weight_decay=0.05, eval_every=50)


def ast_loss(model, batch):
    x, labels = batch
    x = time_mask(freq_mask(x[:, None]))[:, 0]                   # SpecAugment, (B, M, T)
    return F.cross_entropy(model(x), labels)


@torch.no_grad()
def held_out_accuracy(model):
    return {"held-out": training.accuracy(model(X[~is_train]), y[~is_train])}


torch.manual_seed(0)
ast_image = at.init_from_vit(at.AST(AST_CFG), image_vit)
print(f"AST: {sum(p.numel() for p in ast_image.parameters()):,} parameters; before training "
      f"{held_out_accuracy(ast_image)['held-out']:.1%} on the held-out voices")
hist_image = training.train(ast_image, (X[is_train], y[is_train]), ast_loss, AST_TRAIN, eval_fn=held_out_accuracy)
acc_image = hist_image.eval[-1]["held-out"]
with torch.no_grad():
    train_acc_image = training.accuracy(ast_image(X[is_train]), y[is_train])
print(f"{hist_image.seconds:.1f} s; accuracy on the {int((~is_train).sum())} clips of the held-out voices: "
      f"{acc_image:.1%} (training clips {train_acc_image:.1%})")
assert acc_image >= 0.90, acc_image  # the course's target; one held-out clip is 1.1%, so runs differ by a few points

# %% [markdown]
# Which words does it confuse? The confusion matrix on the held-out voices (rows: the word said):

# %%
with torch.no_grad():
    pred = ast_image(X[~is_train]).argmax(1)
confusion = training.confusion_matrix(y[~is_train], pred, len(WORDS))   # (said, predicted)
fig, ax = plt.subplots(figsize=(5.2, 4.4), layout="constrained")
ax.imshow(confusion, cmap="Blues")
for i in range(len(WORDS)):
    for j in range(len(WORDS)):
        if confusion[i, j]:
            ax.text(j, i, int(confusion[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if confusion[i, j] > 4 else "black")
ax.set_xticks(range(len(WORDS)), WORDS, rotation=90), ax.set_yticks(range(len(WORDS)), WORDS)
ax.set(xlabel="predicted", ylabel="said", title="held-out voices");
mistakes = [(WORDS[i], WORDS[j], int(confusion[i, j])) for i in range(len(WORDS)) for j in range(len(WORDS))
            if i != j and confusion[i, j]]
print("mistakes (said, heard, count):", sorted(mistakes, key=lambda m: -m[2]))

# %% [markdown]
# **Where does the CLS token look?** The attention of the CLS token over the 3 x 9 patches in the last block
# (heads averaged), painted on the spectrogram's grid beside it: each patch's weight paints its 16 x 16 area,
# and where patches overlap the weights add up (the brighter horizontal bands at bins 10-15 and 20-25 are such
# overlaps, not attention). Bins 36-39 and frames 96-97 fall in no patch: with stride 10, a 16-wide patch
# grid ends there.

# %%
with torch.no_grad():
    _, maps = ast_image(X[EXAMPLE:EXAMPLE + 1], return_attention=True)
f_, t_ = AST_CFG.grid
cls_attention = maps[-1][0].mean(0)[0, 2:].reshape(f_, t_)          # (f, t): CLS row, patches only
painted = torch.zeros(N_MELS, 98)
for i in range(f_):
    for j in range(t_):
        painted[i * 10:i * 10 + 16, j * 10:j * 10 + 16] += cls_attention[i, j]
energy = specs[EXAMPLE].exp().sum(0)                                 # (T,) mel power per frame
loud_frames = energy > 0.01 * energy.max()                           # within 20 dB of the loudest frame
loud_columns = torch.tensor([loud_frames[j * 10:j * 10 + 16].float().mean() > 0.5 for j in range(t_)])  # (t,)
on_loud = [(m[0].mean(0)[0, 2:].reshape(f_, t_) * loud_columns).sum().item() for m in maps]  # per block
fig, axes = plt.subplots(1, 2, figsize=(11, 3.2), layout="constrained")
axes[0].imshow(specs[EXAMPLE], origin="lower", aspect="auto", cmap="magma")
axes[0].set(title=f'"{rows[EXAMPLE]["word"]}", {N_MELS} mel bins', xlabel="frame", ylabel="mel bin")
shown = axes[1].imshow(painted, origin="lower", aspect="auto", cmap="viridis")
axes[1].set(title="CLS attention, last block (heads averaged, overlaps summed)", xlabel="frame", ylabel="mel bin")
fig.colorbar(shown, ax=axes[1], label="attention weight");
print(f"CLS attention on the {int(loud_columns.sum())} of {t_} patch columns where the word is loudest: "
      f"{on_loud[0]:.0%} in the first block, {on_loud[-1]:.0%} in the last; on the CLS and distillation tokens "
      f"themselves in the last block {maps[-1][0].mean(0)[0, :2].sum():.0%}")

# %% [markdown]
# In the first block the CLS token spreads its attention about evenly (51% on the columns where the word is
# loudest, which are 4 of the 9). In the last block only 8% goes there, to the vowel of "left" (frames 23-58).
# The map shows where the rest goes: to the word's onset, where the silence ends (frames 10-25), and to its
# quiet ending, the "ft" (frames 70-90). A classifier of 11 words can tell "left" from "lift" or "right" by such
# edges and consonants, but one map of one clip is a hint, not a proof: after the first block every token has
# mixed in the others, so a patch's token no longer holds only its own patch (attention maps of a late block
# are not a saliency map).

# %% [markdown]
# ## 3. Does image pretraining help audio?
#
# The paper's claim: an AST initialised from an ImageNet ViT beats one trained from scratch. Our image ViT is
# tiny and saw only coloured shapes; the same AST, the same data, augmentation, steps and seed, from scratch:

# %%
torch.manual_seed(0)
ast_scratch = at.AST(AST_CFG)
hist_scratch = training.train(ast_scratch, (X[is_train], y[is_train]), ast_loss, AST_TRAIN, eval_fn=held_out_accuracy)
acc_scratch = hist_scratch.eval[-1]["held-out"]
with torch.no_grad():
    train_acc_scratch = training.accuracy(ast_scratch(X[is_train]), y[is_train])
report.table(["initialisation", f"held-out voices, step {AST_STEPS}", "training clips", *[f"step {s}" for s in hist_image.eval_steps[:-1]]],
             [["image ViT (notebook 02)", f"{acc_image:.1%}", f"{train_acc_image:.1%}",
               *[f"{e['held-out']:.0%}" for e in hist_image.eval[:-1]]],
              ["scratch", f"{acc_scratch:.1%}", f"{train_acc_scratch:.1%}",
               *[f"{e['held-out']:.0%}" for e in hist_scratch.eval[:-1]]]])
fig, ax = plt.subplots(figsize=(7, 2.8), layout="constrained")
ax.plot(hist_image.eval_steps, [e["held-out"] for e in hist_image.eval], "o-", label="from the image ViT")
ax.plot(hist_scratch.eval_steps, [e["held-out"] for e in hist_scratch.eval], "s-", label="from scratch")
ax.set(xlabel="step", ylabel="held-out accuracy", title="same AST, same budget")
ax.legend();
n_test = int((~is_train).sum())
print(f"image ViT init {acc_image:.1%} vs scratch {acc_scratch:.1%} after {AST_STEPS} steps: "
      f"{round((acc_image - acc_scratch) * n_test):+d} of {n_test} held-out clips")

# %% [markdown]
# With one seed and 88 held-out clips, the image-initialised AST ends 3 clips ahead (96.6% vs 93.2%), though the
# one from scratch led at steps 100 and 150 (86% vs 78%, 90% vs 88%) and fits its training clips better (100.0% vs 98.1%). Three clips
# from one seed is a hint, not a proof; the paper's gain came from ImageNet, far richer images than our shapes.

# %% [markdown]
# ## 4. Speech into the LM, as Qwen2-Audio does
#
# Qwen2-Audio's encoder reads 128 mel bins every 10 ms; a stride-2 convolution and a stride-2 average pooling
# make each audio token cover about 40 ms (exercise 3 counts them for 30 s), and the tokens go to the LLM.
# Ours: the AST of section 2 runs on each one-second window; per window it gives its pooled token (what its
# classifier reads) and its 9 patch columns averaged over frequency (one per 100 ms), pooled with stride 2 into
# 4 tokens of about 200 ms each, five times Qwen2-Audio's 40 ms (our words are one second long, its speech is
# fluent); `mlp2x_gelu` projects them to the LM's width, and they take the `<image>` placeholder's slot in the prompt
# (the course LM has no `<audio>` token). A command of one to three words is its clips one after the other,
# padded with silent windows to 3 s, as Whisper pads every input to 30 s.

# %%
language_model, tokenizer = lm.load_pretrained("lm_shapes")
EOS = tokenizer.convert_tokens_to_ids("<|im_end|>")
audio_lm = at.AudioLM(ast_image, language_model, audio_token_id=tokenizer.convert_tokens_to_ids("<image>"))
SILENCE = torch.full((1, N_MELS, 98), (math.log(EPS) - MEAN) / (2 * STD))  # the normalised log floor
CLIPS = torch.cat([X, SILENCE])                                            # row len(rows): a silent window
clip_index = {}
for i, r in enumerate(rows):
    clip_index.setdefault((r["voice"], r["word"]), []).append(i)


def make_commands(n, split, seed):
    """n commands of 1-3 words, each said by one voice of `split`: (n, 3) clip indices and their text."""
    g = np.random.default_rng(seed)
    idx, texts = np.full((n, 3), len(rows)), []
    for k in range(n):
        voice = voices[split][g.integers(len(voices[split]))]
        said = [WORDS[g.integers(len(WORDS))] for _ in range(g.integers(1, 4))]
        for p, word in enumerate(said):
            idx[k, p] = g.choice(clip_index[voice, word])
        texts.append(" ".join(said))
    return torch.tensor(idx), texts


train_idx, train_text = make_commands(1500, "train", seed=1)
test_idx, test_text = make_commands(150, "test", seed=2)
windows = CLIPS[test_idx[:2]]                                               # (B, W, M, T)
print("windows", tuple(windows.shape), "= (B, W, M, T)")
print("encoded", tuple(audio_lm.encode(windows).shape), "= (B, W x (1 + 9 // 2), D_a)")
print("projected", tuple(audio_lm.get_audio_features(windows).shape), "= (B, N, D): the LM's audio tokens")
print(f"{len(train_text)} training commands (training voices), {len(test_text)} held-out commands "
      f"(held-out voices); e.g. {test_text[:4]}")

# %% [markdown]
# **Stage 1, alignment; the LM frozen.** Qwen2-Audio's first stage trains the audio side so that its tokens
# make sense to the LLM. Our LM is tiny and learned only ShapesWorld captions: its tokenizer, learned on the same
# text, spells most of our 11 words piece by piece (counted below), a sign that it rarely or never saw them, and a
# frozen LM cannot learn them. So we align the audio tokens with what the LM already has, its own **input
# embeddings of the words**: every audio token of a window (the pooled one and the 4 pooled patch columns), once
# projected, should equal the mean of the LM's token embeddings of the word said there (a squared error; no pass
# through the LM is needed). First only the projector learns, on the frozen encoder's outputs for 8
# SpecAugment-ed copies of every training clip (computed once), then the projector and the encoder on freshly
# masked clips. We check it by the nearest word embedding to each projected token of the held-out clips, and
# score the generated text by **word accuracy**: the fraction of the words said that the text has at the same
# place (and the share of commands written exactly). The instruction is "Write the words." (4 tokens; "What was
# said?" would be 10, counted below: every token the LM reads costs time on this CPU).

# %%
SAID = "Write the words."
test_prompt = llava_data.prompt_ids(tokenizer, len(test_text), SAID)
K_AUG = 8
PER_WINDOW = 1 + AST_CFG.grid[1] // audio_lm.pool_stride                        # 5 audio tokens per window
with torch.no_grad():
    E = language_model.embed_tokens.weight                                     # (V, D) the LM's input embeddings
    word_embedding = torch.stack([E[tokenizer(" " + w)["input_ids"]].mean(0) for w in WORDS])  # (11, D)


def augmented_cache(model, k=K_AUG):
    """The frozen encoder's output for every clip (and the silent window): clean (clips + 1, 5, D_a), and
    k SpecAugment-ed copies (k, clips + 1, 5, D_a) for training."""
    with torch.no_grad():
        clean = model.encode(CLIPS[:, None])
        masked = torch.stack([model.encode(time_mask(freq_mask(CLIPS[:, None]))) for _ in range(k)])
    masked[:, -1] = clean[-1]                                                  # silence stays silence
    return clean, masked


def generate(model, idx, prompt, max_new_tokens=16):                           # 3 words are up to 12 tokens
    with torch.no_grad():
        out = model.generate(model.encode(CLIPS[idx]), prompt, max_new_tokens=max_new_tokens, eos_token_id=EOS)
    return [t.strip() for t in tokenizer.batch_decode(out, skip_special_tokens=True)]


def word_accuracy(texts, truth):
    right = sum(a == b for t, u in zip(texts, truth) for a, b in zip(t.split(), u.split()))
    return right / sum(len(u.split()) for u in truth), float(np.mean([t == u for t, u in zip(texts, truth)]))


@torch.no_grad()
def nearest_word_accuracy(model):
    """Held-out clips: is each of a window's projected tokens nearest to the embedding of the word said?"""
    projected = model.multi_modal_projector(model.encode(X[~is_train][:, None]))   # (n, 5, D)
    return training.accuracy(-torch.cdist(projected.flatten(0, 1), word_embedding),
                             y[~is_train].repeat_interleave(PER_WINDOW))


def align_loss_cached(projector, batch):
    tokens, labels = batch                                                     # (B, D_a), (B,)
    return F.mse_loss(projector(tokens), word_embedding[labels])


def align_loss_windows(model, batch):
    x, labels = batch
    projected = model.get_audio_features(time_mask(freq_mask(x[:, None])))    # (B, 5, D): each clip's 5 tokens
    return F.mse_loss(projected, word_embedding[labels, None].expand_as(projected))


print("tokens per word:", {w: len(tokenizer(" " + w)["input_ids"]) for w in WORDS})
print(f"tokens of the instruction {SAID!r}: {len(tokenizer(SAID)['input_ids'])}; of 'What was said?': "
      f"{len(tokenizer('What was said?')['input_ids'])}")
said = {"before training": generate(audio_lm, test_idx, test_prompt)}
nearest = {"before training": nearest_word_accuracy(audio_lm)}
language_model.requires_grad_(False), ast_image.requires_grad_(False)
clean, masked = augmented_cache(audio_lm)
train_clips = is_train.nonzero()[:, 0]
hist_1a = training.train(audio_lm.multi_modal_projector,
                         (masked[:, train_clips].flatten(0, 2), y[train_clips].repeat_interleave(PER_WINDOW).repeat(K_AUG)),
                         align_loss_cached, training.TrainConfig(steps=300, batch_size=64, lr=3e-3, warmup=20,
                                                                 weight_decay=0.0))
said["stage 1a: projector"] = generate(audio_lm, test_idx, test_prompt)
nearest["stage 1a: projector"] = nearest_word_accuracy(audio_lm)
ast_image.requires_grad_(True)
hist_1b = training.train(audio_lm, (X[is_train], y[is_train]), align_loss_windows,
                         training.TrainConfig(steps=150, batch_size=32, lr=1e-3, warmup=10, weight_decay=0.0))
said["stage 1b: projector + encoder"] = generate(audio_lm, test_idx, test_prompt)
nearest["stage 1b: projector + encoder"] = nearest_word_accuracy(audio_lm)
for k, v in said.items():
    print(f"{k:>30}: projected tokens nearest the right word {nearest[k]:.1%}; word accuracy "
          f"{word_accuracy(v, test_text)[0]:.1%}; first: {v[:3]} (said: {test_text[:3]})")

# %% [markdown]
# Two numbers per stage above. The first: with the encoder frozen, the projector alone puts 70.9% of the
# held-out audio tokens nearest the right word; training the encoder as well, as Qwen2-Audio's first stage does,
# 95.9%. The second, what the frozen LM writes, is another matter: nothing in this stage asks it to transcribe,
# and it learned to write captions of shapes.
#
# **Stage 2, supervised fine-tuning on instructions about the audio; the LM trains too.** Three instructions:
# write the words (drawn with probability 85% for each training command), whether the command holds a direction
# (up, down, left, right), and how many words (7.5% each; the shares drawn are printed). The transcript is written with a leading space, as Whisper's text
# tokens are: the tokenizer spells "right" at the start of a text as `ri` `ght` but after a space as `Ġright`,
# and with the space every word has one spelling wherever it stands. The encoder is frozen here, so its outputs
# are computed once: clean, and again for 8 SpecAugment-ed copies of each clip; each training command draws, per
# window, the clean tokens or one of the copies (half and half), as the held-out clips come clean.

# %%
DIRECTIONS = {"up", "down", "left", "right"}
COUNT = {1: "one", 2: "two", 3: "three"}
QUESTIONS = {SAID: lambda t: " " + t, "Is it a direction?": lambda t: "yes" if DIRECTIONS & set(t.split()) else "no",
             "How many words?": lambda t: COUNT[len(t.split())]}
g = np.random.default_rng(3)
asked = [list(QUESTIONS)[k] for k in g.choice(3, len(train_text), p=[0.85, 0.075, 0.075])]  # mostly transcripts
rows_sft = at.instruction_rows(tokenizer, asked, [QUESTIONS[q](t) for q, t in zip(asked, train_text)])
print("training commands per instruction:", {q: f"{asked.count(q) / len(asked):.1%}" for q in QUESTIONS})
print('"right" at the start of a text:', tokenizer.tokenize("right"), '| after a space:', tokenizer.tokenize(" right"))
ast_image.requires_grad_(False), language_model.requires_grad_(True)
clean, masked = augmented_cache(audio_lm)
ref_lm = copy.deepcopy(audio_lm)                                  # the stage-1 model, DPO's pi_ref
copy_gen = torch.Generator().manual_seed(0)


def lm_loss_cached(model, batch):
    idx, ids, labels = batch                                      # (B, 3) windows, (B, L) prompt and answer
    copies = masked[torch.randint(0, K_AUG, idx.shape, generator=copy_gen), idx]    # (B, 3, 5, D_a)
    use_clean = torch.rand(idx.shape, generator=copy_gen) < 0.5                      # (B, 3)
    tokens = torch.where(use_clean[..., None, None], clean[idx], copies)
    return model(tokens.flatten(1, 2), *llava_data.trim_to_labels(ids, labels)).loss  # without all-padding columns


hist_2 = training.train(audio_lm, (train_idx, *rows_sft), lm_loss_cached,
                        training.TrainConfig(steps=260, batch_size=16, lr=2e-3, warmup=20, weight_decay=0.0))
said["stage 2: SFT"] = generate(audio_lm, test_idx, test_prompt)
answers = {q: generate(audio_lm, test_idx, llava_data.prompt_ids(tokenizer, len(test_text), q))
           for q in list(QUESTIONS)[1:]}
qa_accuracy = {q: float(np.mean([a == QUESTIONS[q](t) for a, t in zip(answers[q], test_text)])) for q in answers}
always_yes = float(np.mean([QUESTIONS["Is it a direction?"](t) == "yes" for t in test_text]))
stage_accuracy = {k: word_accuracy(v, test_text) for k, v in said.items()}
report.table(["stage", "word accuracy", "exact commands"],
             [[k, f"{w:.1%}", f"{e:.1%}"] for k, (w, e) in stage_accuracy.items()])
print({q: f"{a:.1%}" for q, a in qa_accuracy.items()}, f"(always 'yes' to the direction question: {always_yes:.1%})")
print("e.g.", [{"said": t, "a direction?": answers["Is it a direction?"][i], "how many words?": answers["How many words?"][i]}
              for i, t in enumerate(test_text[:3])])
print("mistakes (said, written):", [(t, s) for t, s in zip(test_text, said["stage 2: SFT"]) if t != s][:6])
swaps = Counter((a, b) for t, s in zip(test_text, said["stage 2: SFT"]) for a, b in zip(t.split(), s.split()) if a != b)
print(f"{sum(swaps.values())} words written as another word; the commonest (said, written, times):",
      [(a, b, n) for (a, b), n in swaps.most_common(3)])
assert stage_accuracy["stage 2: SFT"][0] >= 0.90, stage_accuracy  # the course's target for held-out voices
assert nearest["stage 1b: projector + encoder"] >= 0.85, nearest

# %% [markdown]
# After fine-tuning, the LM writes 93.9% of the words said by the held-out voices at their place, and 88.0% of
# the commands exactly. Its mistakes (printed above) swap one word for another, most often "right" written as "left".
# It counts the words (100.0%), but the direction question is barely learned: 70.7%, where always answering
# "yes" gets 60.0%. It asks the LM to check every window against a set of four words, and it had 7.8% of the
# training commands. (Word accuracy compares the words at their places, so a word written in excess at the end
# is not counted against it there; the share of commands written exactly counts it.) The losses of the three
# runs, stage 1 in squared error and stage 2 in nats, so on two axes:

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 2.8), layout="constrained")
axes[0].plot(hist_1a.loss, lw=0.8, label="1a: projector")
axes[0].plot(range(len(hist_1a.loss), len(hist_1a.loss) + len(hist_1b.loss)), hist_1b.loss, lw=0.8, label="1b: + encoder")
axes[0].set(xlabel="step", ylabel="squared error", yscale="log", title="stage 1: audio tokens to word embeddings")
axes[0].legend()
axes[1].plot(hist_2.loss, lw=0.8, color="C2")
axes[1].set(xlabel="step", ylabel="nats per answer token", yscale="log", title="stage 2: SFT (projector + LM)");

# %% [markdown]
# **Stage 3, DPO (Rafailov et al., 2023).** Qwen2-Audio's last stage learns from pairs of a preferred answer
# $y_w$ and a rejected one $y_l$, with the frozen earlier model $\pi_{ref}$ as an anchor:
# $L = -\log\sigma\big(\beta[\log\frac{\pi(y_w|x)}{\pi_{ref}(y_w|x)} - \log\frac{\pi(y_l|x)}{\pi_{ref}(y_l|x)}]\big)$.
# `at.dpo_loss` writes it (exercise 2 asks you to), `at.sequence_logprob` gives $\log\pi(y|x)$. In real DPO,
# Qwen2-Audio's stage 3 included, $\pi_{ref}$ is the SFT model and $\pi$ starts as a copy of it, so the loss
# starts at $\log 2$ and training moves $\pi$ away from it. We do not train with it. We evaluate it on held-out
# pairs (the right transcript vs the same with its first word replaced) with the SFT model as $\pi$ and the
# stage-1 model, which transcribes nothing, as $\pi_{ref}$: so the number measures how far SFT moved the
# probabilities toward the right transcripts, what a DPO stage would start from if SFT were skipped.

# %%
g = np.random.default_rng(4)
rejected = []
for t in test_text:
    first, *rest = t.split()
    rejected.append(" ".join([WORDS[(WORDS.index(first) + 1 + g.integers(len(WORDS) - 1)) % len(WORDS)], *rest]))
logps = {}
with torch.no_grad():
    for name, model in [("policy", audio_lm), ("ref", ref_lm)]:
        for kind, texts in [("chosen", test_text), ("rejected", rejected)]:
            ids, labels = at.instruction_rows(tokenizer, [SAID] * len(texts), [" " + t for t in texts])
            out = model(model.encode(CLIPS[test_idx]), ids, labels)
            spliced_labels = torch.cat([torch.full((len(texts), out.logits.shape[1] - ids.shape[1]), lm.IGNORE_INDEX),
                                        labels], 1)
            # every label up to the placeholder is IGNORE_INDEX, so shifting the row right by N - 1 is the splice
            logps[name, kind] = at.sequence_logprob(out.logits, spliced_labels)
beta = 0.1
dpo = at.dpo_loss(logps["policy", "chosen"], logps["policy", "rejected"], logps["ref", "chosen"],
                  logps["ref", "rejected"], beta=beta)
as_ref = at.dpo_loss(logps["policy", "chosen"], logps["policy", "rejected"], logps["policy", "chosen"],
                     logps["policy", "rejected"], beta=beta)           # pi = pi_ref: where real DPO starts
prefers = (logps["policy", "chosen"] > logps["policy", "rejected"]).float().mean().item()
print(f"pair 0: chosen {test_text[0]!r}, rejected {rejected[0]!r}; log pi - log pi_ref: "
      f"{(logps['policy', 'chosen'][0] - logps['ref', 'chosen'][0]).item():+.2f} nats for the chosen, "
      f"{(logps['policy', 'rejected'][0] - logps['ref', 'rejected'][0]).item():+.2f} for the rejected")
print(f"DPO loss over {len(test_text)} held-out pairs: {dpo:.4f}; with pi = pi_ref {as_ref:.4f} "
      f"(log 2 = {math.log(2):.4f}); the SFT model gives the right transcript the higher probability in "
      f"{prefers:.0%} of the pairs")
assert abs(as_ref.item() - math.log(2)) < 1e-6 and dpo < math.log(2)

# %% [markdown]
# ## 5. Online (opt-in): the real AST on our words
#
# With a network connection, this cell loads `MIT/ast-finetuned-speech-commands-v2` (AST fine-tuned on the 35
# words of Speech Commands V2) at a pinned revision (`at.AST_REVISION`) through transformers and classifies our held-out clips whose word is among its
# 35. Offline it says so in one line. (`tests/test_audio_transformer.py` runs the same code on a tiny local AST.)

# %%
online_accuracy = None
if env.is_online():
    hf_ast, hf_fe = at.load_hf_ast()
    known = [w for w in WORDS if w in set(hf_ast.config.id2label.values())]
    pick = [i for i in range(len(rows)) if not is_train[i] and rows[i]["word"] in known]
    guesses = at.hf_ast_predict(hf_ast, hf_fe, waves[pick])
    online_accuracy = float(np.mean([gw == rows[i]["word"] for gw, i in zip(guesses, pick)]))
    print(f"{len(known)} of our {len(WORDS)} words are among its {len(hf_ast.config.id2label)}: {known}; "
          f"not: {sorted(set(WORDS) - set(known))}; accuracy on {len(pick)} held-out clips: {online_accuracy:.1%}")
else:
    print("offline: skipped the online AST section (set HF_HUB_OFFLINE=0 with a network to run it)")

# %% [markdown]
# ## What we measured

# %%
report.measured("10_audio_spectrogram_transformer", {
    "ours vs ASTFeatureExtractor, mean |difference| all / loud frames (nats)": f"{feat_all:.2f} / {feat_loud:.2f}",
    "  after pre-emphasis and DFT size are accounted for (nats per bin)": round(residual, 2),
    "AST accuracy on held-out voices, initialised from the image ViT": f"{acc_image:.1%}",
    "AST accuracy on held-out voices, from scratch (same budget)": f"{acc_scratch:.1%}",
    **{f"audio-LM, {k}: projected tokens nearest the right word / word accuracy": f"{nearest[k]:.1%} / {w:.1%}"
       if k in nearest else f"- / {w:.1%}" for k, (w, _) in stage_accuracy.items()},
    "audio-LM after SFT: commands written exactly": f"{stage_accuracy['stage 2: SFT'][1]:.1%}",
    **{f"audio-LM after SFT: {q}": f"{a:.1%}" for q, a in qa_accuracy.items()},
    "  always answering 'yes' to the direction question": f"{always_yes:.1%}",
    "DPO loss, SFT model vs stage-1 model as pi_ref (held-out pairs)": round(dpo.item(), 4),
    "real AST (online) on our held-out clips": "skipped (offline)" if online_accuracy is None else f"{online_accuracy:.1%}",
    "notebook CPU time (s)": round(time.process_time() - cpu_start, 1),
    "notebook time (s)": round(time.perf_counter() - t_start, 1),
    "peak memory (GB)": round(report.peak_memory_gb(), 2),
})

# %% [markdown]
# ## Exercises
#
# Each exercise cell ends with a one-line check. Untouched, it says "not attempted yet"; the reference answers
# live in the repository's `solutions/` folder (open `solutions/nb10.py` only after you tried).
#
# **1.** How many tokens does AST's transformer read (patches + CLS + distillation) for (a) a 10 s AudioSet clip,
# 1024 frames of 128 mel bins, and (b) the same clip cut into 16 x 16 patches with no overlap (stride 16)?

# %%
ast_tokens = ...  # (a, b)
checks.exercise("10.ast_tokens", ast_tokens);

# %% [markdown]
# **2.** Write the DPO loss from the formula of section 4: `my_dpo_loss(pc, pr, rc, rr, beta)` takes four (B,)
# tensors of sequence log-probabilities (policy chosen / rejected, reference chosen / rejected) and returns the
# mean loss (not by calling `at.dpo_loss`, which the checker compares it with).

# %%
def my_dpo_loss(pc, pr, rc, rr, beta):
    raise NotImplementedError  # your code here


checks.exercise("10.dpo_loss", my_dpo_loss);

# %% [markdown]
# **3.** Qwen2-Audio's encoder takes 30 s of audio as 10 ms log-mel frames; a convolution of stride 2 and then an
# average pooling of stride 2 shorten the sequence. How many audio tokens does the LLM receive for 30 s?

# %%
qwen_audio_tokens = ...
checks.exercise("10.qwen_audio_tokens", qwen_audio_tokens);
