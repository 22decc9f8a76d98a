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
# turns it into the audio encoder of a speech LM trained in Qwen2-Audio's three stages on whole utterances.
#
# **What you need:** about 72 s on a 2-core CPU (the median of three runs; it uses one thread), about 1.0 GB of memory at peak, no GPU. It trains
# two small ASTs (250 steps each) and evaluates the speech LM that `scripts/train_speech_lm.py` trained (about
# 40 minutes on one thread: the stages, the baselines and the ASTs over 5 seeds; the notebook answers 2,400 held-out
# questions with it live). It reads the spoken words of `data/speech/` (made by `scripts/make_speech_data.py`),
# the tiny ViT of notebook 02 (`vit_shapes`) and the course LM (`lm_shapes`), so no earlier notebook need have run.

# %%
from collections import Counter
import math
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torchaudio
from transformers import ASTFeatureExtractor

from IPython.display import Audio, display

from utils import DATA_DIR, audio, checks, env, report, training, vit
from utils import audio_transformer as at
from utils import speech_lm as sl
from utils.assistant import wilson_interval
from utils.checkpoints import load_checkpoint

device = env.setup(seed=0, threads=1)  # one thread: these matrices are small, and a second thread waits on a busy CPU
t_start, cpu_start = time.perf_counter(), time.process_time()
SR = sl.SAMPLE_RATE
clips = sl.load_word_clips()                        # every clip read from data/speech/, checked against data/MANIFEST
rows, waves, WORDS, y, is_train, voices = clips.rows, clips.waves, clips.words, clips.y, clips.is_train, clips.voices
print(f"{len(rows)} one-second clips of {len(WORDS)} words: {WORDS}")
print(f"training voices {voices['train']}; held-out voices, never heard in training: {voices['test']}")
print(f"{int(is_train.sum())} training clips, {int((~is_train).sum())} held-out clips; per word and voice, "
      f"{Counter((r['word'], r['voice']) for r in rows).most_common(1)[0][1]} clips: pitches "
      f"{sorted({r['pitch'] for r in rows})}, speeds {sorted({r['speed'] for r in rows})} (words per minute)")

# %% [markdown]
# **The speech is synthetic.** Every clip is espeak-ng's (a formant synthesiser, Debian's package), made by
# `scripts/make_speech_data.py`: 8 of its voices, each word at 2 pitches and 2 speeds, cut or padded to 1 s
# with the word in the middle. Speech Commands V2, where AST reached 98.1%, holds 105,829 recordings of 35
# words by 2,618 people, with their microphones, rooms and accents. Our accuracies are on a small, clean,
# synthetic task of 11 words, and say nothing about how the same models would do on recorded speech.

# %% [markdown]
# ## 1. From notebook 09's log-mel to AST's input
#
# Notebook 09 built `log_mel_spectrogram`: frames of 25 ms every 10 ms, a window, $|DFT|^2$, a mel filter bank,
# the log. AST asks for 128 mel bins and a Hann window. With 128 bins the lowest triangles are narrower than
# the 31 Hz bin spacing of a 512-point DFT and would cover no bin (our `mel_filterbank` refuses that), so we
# zero-pad each 400-sample frame to a 1024-point DFT. One second gives $1 + \lfloor(16000 - 400)/160\rfloor$ frames.

# %%
MEL = sl.MEL                                                       # 25 ms Hann windows every 10 ms, 1024-point DFT
EPS = MEL["eps"]                                                   # the log floor Kaldi uses
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
N_MELS = sl.N_MELS                                                                              # 40
specs = audio.log_mel_spectrogram(waves, n_mels=N_MELS, **MEL)                                  # (352, 40, 98)
MEAN, STD = specs[is_train].mean().item(), specs[is_train].std().item()
X = sl.normalise(specs, MEAN, STD)                                                              # (352, M, T)
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
AST_CFG = sl.ast_config(len(WORDS))        # 40 mel bins x 98 frames, dim 64, 2 blocks, 4 heads, MLP 128
freq_mask, time_mask = sl.spec_augment()   # FrequencyMasking(8), TimeMasking(10), a new mask for every clip
print(AST_CFG)
print("SpecAugment:", freq_mask, time_mask)
# sl.train_word_ast: AdamW (lr 3e-3, warm-up 20, weight decay 0.05), batch 32, 250 steps, the loss
# F.cross_entropy(model(time_mask(freq_mask(x))), labels); seeded, so scripts/train_speech_lm.py repeats it
ast_image, hist_image = sl.train_word_ast(X, y, is_train, seed=0, image_vit=image_vit)
acc_image = hist_image.eval[-1]["held-out"]
with torch.no_grad():
    train_acc_image = training.accuracy(ast_image(X[is_train]), y[is_train])
print(f"AST: {sum(p.numel() for p in ast_image.parameters()):,} parameters; {hist_image.seconds:.1f} s; accuracy on "
      f"the {int((~is_train).sum())} clips of the held-out voices: {acc_image:.1%} (training clips {train_acc_image:.1%})")
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
# **Where does the CLS token look?** The attention of the CLS token over the 3 x 9 patch grid (rows: the three
# bands of mel bins; columns: the nine patch columns, one every 100 ms), averaged over the heads and over the 88
# held-out clips, in the first and in the last block. Each cell is one patch's weight, drawn on the grid itself
# (no patch is painted over its neighbours). A word clip has its word in the middle, so we also measure how much
# of the attention falls on the columns where each clip is loud, against the share those columns would get from
# attention spread evenly.

# %%
held = (~is_train).nonzero()[:, 0]
with torch.no_grad():
    _, maps = ast_image(X[held], return_attention=True)                  # per block (n, heads, tokens, tokens)
f_, t_ = AST_CFG.grid
cls_grid = [m.mean(1)[:, 0, 2:].reshape(len(held), f_, t_) for m in maps]  # per block (n, f, t): CLS row, patches
energy = specs[held].exp().sum(1)                                          # (n, T) mel power per frame
loud_frames = energy > 0.01 * energy.amax(1, keepdim=True)                 # within 20 dB of the clip's loudest frame
loud_cols = torch.stack([loud_frames[:, j * 10:j * 10 + 16].float().mean(1) > 0.5 for j in range(t_)], 1)  # (n, t)
on_loud = [(g.sum(1) * loud_cols).sum(1).div(g.sum((1, 2))).mean().item() for g in cls_grid]
even = loud_cols.float().mean().item()
fig, axes = plt.subplots(1, 2, figsize=(11, 2.6), layout="constrained")
vmax = max(g.mean(0).max().item() for g in cls_grid)
for ax, g, name in zip(axes, (cls_grid[0], cls_grid[-1]), ("first block", "last block")):
    shown = ax.imshow(g.mean(0), origin="lower", aspect="auto", cmap="viridis", vmin=0, vmax=vmax,
                      extent=(-0.5, t_ - 0.5, -0.5, f_ - 0.5))
    ax.set(title=f"CLS attention, {name}", xlabel="patch column (one every 100 ms)", ylabel="band of mel bins",
           xticks=range(t_), yticks=range(f_))
fig.colorbar(shown, ax=axes, label="attention weight\n(mean over heads and 88 clips)");
print(f"share of the CLS token's attention on the patches, on the columns where the clip is loud: "
      f"{on_loud[0]:.0%} in the first block, {on_loud[-1]:.0%} in the last; spread evenly it would be {even:.0%}")
print(f"on the CLS and distillation tokens themselves: {maps[0].mean((0, 1))[0, :2].sum():.0%} in the first block, "
      f"{maps[-1].mean((0, 1))[0, :2].sum():.0%} in the last")

# %% [markdown]
# The numbers above say where the attention goes, not why the classifier is right: after the first block every
# token has mixed in the others, so a late block's attention to a patch is not attention to that patch's sound
# alone (attention maps are not saliency maps).

# %% [markdown]
# ## 3. Does image pretraining help audio?
#
# The paper's claim: an AST initialised from an ImageNet ViT beats one trained from scratch. Our image ViT is
# tiny and saw only coloured shapes. The same AST, the same data, augmentation, steps and seed, from scratch,
# trained here; then both recipes over 5 seeds, trained by `scripts/train_speech_lm.py` (the same function,
# seeds 0 to 4):

# %%
ast_scratch, hist_scratch = sl.train_word_ast(X, y, is_train, seed=0, image_vit=None)
acc_scratch = hist_scratch.eval[-1]["held-out"]
n_test = int((~is_train).sum())
speech_record = load_checkpoint(DATA_DIR / "checkpoints" / "speech_lm")[1]   # the script's record
runs = speech_record["ast"]["runs"]
final = {init: np.array([runs[f"{init}/{s}"]["held_out"][-1] for s in speech_record["recipe"]["seeds"]])
         for init in ("image", "scratch")}
paired = final["image"] - final["scratch"]
print(f"here, seed 0: image ViT init {acc_image:.1%}, scratch {acc_scratch:.1%}; the script's seed 0: "
      f"{runs['image/0']['held_out'][-1]:.1%} and {runs['scratch/0']['held_out'][-1]:.1%}")
report.table(["initialisation", *[f"seed {s}" for s in speech_record["recipe"]["seeds"]], "mean +- sd"],
             [[init, *[f"{v:.1%}" for v in final[init]], f"{final[init].mean():.1%} +- {final[init].std(ddof=1):.1%}"]
              for init in ("image", "scratch")]
             + [["image - scratch (paired)", *[f"{v:+.1%}" for v in paired],
                 f"{paired.mean():+.1%} +- {paired.std(ddof=1):.1%}"]])
steps = runs["image/0"]["steps"]
fig, ax = plt.subplots(figsize=(7, 2.8), layout="constrained")
for init, marker in (("image", "o"), ("scratch", "s")):
    curves = np.array([runs[f"{init}/{s}"]["held_out"] for s in speech_record["recipe"]["seeds"]])
    ax.plot(steps, curves.mean(0), marker + "-", label=f"from {'the image ViT' if init == 'image' else 'scratch'} (mean of 5)")
    ax.fill_between(steps, curves.min(0), curves.max(0), alpha=0.2)
ax.set(xlabel="step", ylabel="held-out accuracy", ylim=(0, 1), title="same AST, same budget: 5 seeds (band: min to max)")
ax.legend();
better = int((paired > 0).sum())
print(f"image init ahead in {better} of {len(paired)} seeds; mean paired difference {paired.mean():+.1%} "
      f"= {paired.mean() * n_test:+.1f} of {n_test} held-out clips, sd {paired.std(ddof=1):.1%}")

# %% [markdown]
# Over 5 seeds the two initialisations end within a few clips of each other, and which one leads changes from
# seed to seed (the table above): with 88 held-out clips one clip is 1.1 points, and a seed moves either recipe
# by more than the mean difference. So our tiny image ViT, which saw only coloured shapes, gives no measurable
# head start here; the paper's gain came from ImageNet, far richer images, and a far larger model.

# %% [markdown]
# ## 4. Speech into the LM, as Qwen2-Audio does
#
# Qwen2-Audio hears whole utterances, not words cut out for it, and learns to write what it hears before it
# learns to follow instructions. Ours, scaled to this CPU (`utils/speech_lm.py`):
# - **the speech**: utterances of 2 to 5 different words, each one of the shipped 1-s clips of one voice, joined
#   end to end with 0.1-0.5 s of silence between them and padded with silence to 7 s (Whisper pads to 30 s).
#   No model is told where a word starts. Training utterances use the 6 training voices, the test the 2 held-out ones;
# - **the encoder**: the AST of section 2's recipe (the script's seed-0 run, frozen: it learned the 11 words
#   there, and nothing below trains it) slides over the utterance, a 1-s window every 200 ms, and each
#   window gives one audio token, the mean of its CLS and distillation outputs. Qwen2-Audio gives one token
#   per 40 ms; ours is five times coarser, so that 7 s (31 tokens), the prompt and the answer fit the course
#   LM's 128-token context, and each step costs a fifth of the LM's time;
# - **the connector and the LM**: `mlp2x_gelu` projects each token to the course LM's width, and the tokens take the
#   `<image>` placeholder's slot in the prompt (the course LM has no `<audio>` token).

# %%
encoder, speech_models, tokenizer, speech_record = sl.load_speech_lm()   # data/checkpoints/speech_lm.*
recipe = speech_record["recipe"]
assert abs(speech_record["normalisation"]["mean"] - MEAN) < 1e-3   # the script normalised as section 1 does
test_utts = sl.make_utterances(clips, "test", recipe["n_test"], seed=recipe["utterance_seeds"]["test"])
demo = test_utts[0]
x = sl.utterance_waveform(waves, demo)                                          # (112000,) 7 s at 16 kHz
spec = sl.normalise(audio.log_mel_spectrogram(x, n_mels=N_MELS, **MEL), MEAN, STD)   # (40, 698)
windows = sl.frame_windows(spec[None])                                          # (1, 31, 40, 98)
print(f"utterance 0: {demo.voice} says {demo.text!r}; gaps {[round(g / SR, 2) for g in demo.gaps]} s")
print(f"waveform {tuple(x.shape)} -> log-mel {tuple(spec.shape)} = (M, T) -> windows {tuple(windows.shape)} "
      f"= (B, W, M, 98): {windows.shape[1]} audio tokens, one per {sl.HOP_FRAMES * 10} ms")
display(Audio(x.numpy(), rate=SR))
fig, ax = plt.subplots(figsize=(10, 2.8), layout="constrained")
ax.imshow(spec, origin="lower", aspect="auto", cmap="magma")
start = 0
for k, (c, w) in enumerate(zip(demo.clips, demo.words)):
    ax.text(start / 160 + 49, N_MELS - 3, w, color="white", ha="center", fontsize=10)
    start += SR + (demo.gaps[k] if k < len(demo.gaps) else 0)
for j in range(windows.shape[1]):
    ax.plot([j * sl.HOP_FRAMES, j * sl.HOP_FRAMES], [-1.5, -0.5], color="tab:cyan", lw=1.2, clip_on=False)
ax.set(xlabel="frame (10 ms); ticks below: where each of the 31 windows starts", ylabel="mel bin",
       title="an utterance of held-out voice; the words are written here for you, the model is not given them");

# %% [markdown]
# Every test utterance is encoded once (the encoder is frozen); 400 of them, the same ones the script scored.

# %%
tokens_test = sl.encode_utterances(encoder, waves, test_utts, MEAN, STD, progress=True)   # (400, 31, D_a)
print(f"audio tokens {tuple(tokens_test.shape)} = (n, W, D_a); words per utterance: "
      f"{dict(sorted(Counter(len(u.words) for u in test_utts).items()))}")
print("tokens per word, as the LM writes them:", {w: len(tokenizer(" " + w)["input_ids"]) for w in WORDS})

# %% [markdown]
# **Stage 1, audio-text pretraining.** Qwen2-Audio's first stage is next-token prediction of text from audio,
# over many tasks, each named by a natural-language prompt instead of Qwen-Audio's task tags. Ours has three:
# "Transcribe the speech." (the words, in order), "How many words are said?" and "What is the first word?",
# drawn uniformly for each training utterance. The loss is on the answer tokens only. The transcript starts with a space, as
# Whisper's text tokens do: the tokenizer spells "right" at the start of a text as `ri` `ght`, but after a
# space as `Ġright`.
#
# **Which parameters train.** Qwen-Audio froze its LLM in this stage and trained the audio encoder. Ours keeps
# the encoder frozen and trains the projector and the LM. The course LM learned only ShapesWorld captions: its
# tokenizer spells most of our words in pieces (counted above), and a frozen course LM cannot learn to write
# them. The script measured that choice: the same stage with the LM frozen (the projector alone, 300 steps), and
# with the LM trained.

# %%
trainable = {k: v["trainable"] for k, v in speech_record["stages"].items() if "trainable" in v}
report.table(["run", "encoder", "projector", "LM", "steps", "ms per step"],
             [[k, f"{v['encoder']:,}", f"{v['projector']:,}", f"{v['LM']:,}",
               len(speech_record["stages"][k]["loss"]), speech_record["stages"][k]["ms_per_step"]]
              for k, v in trainable.items()])
print(f"the frozen encoder: {sum(p.numel() for p in encoder.parameters()):,} parameters, "
      f"{sum(p.requires_grad for p in encoder.parameters())} of them trainable")
# to stay inside this notebook's time, the two stage-1 rows, SFT only and blind are the script's scores on the
# same 400 utterances; stage 1 + SFT and DPO answer live below (and are checked against the script's answers)
results = {name: {k: {"score": v} for k, v in speech_record["results"][name].items()}
           for name in ("stage1_frozen_lm", "stage1", "sft_only", "blind")}
for name, label in (("stage1_frozen_lm", "LM frozen"), ("stage1", "LM trained")):
    r = results[name]
    print(f"stage 1, {label} (script): WER {r['transcribe']['score']:.1%}, count {r['count']['score']:.1%}, first "
          f"word {r['first']['score']:.1%}; e.g. {speech_record['results'][name + '_answers']['transcribe'][0]!r} "
          f"for {test_utts[0].text!r}")

# %% [markdown]
# The word error rate (WER) counts the fewest word substitutions, deletions and insertions that turn the
# answer into the truth, over the words said (`sl.word_error_rate`, tested against torchaudio's
# `edit_distance`). It can pass 100% when the answer is longer than the truth, as the frozen LM's captions of shapes are.
#
# **Stage 2, supervised fine-tuning on instructions.** Three instructions about the utterance, answered in
# words: "Which word comes after 'X'?", "Is 'X' said?" (X said or not, half and half) and "Say the words in
# reverse order.", plus transcription, a quarter each; the projector and the LM train, from the stage-1 model.
# Two baselines trained with the same recipe: **SFT only** (from the fresh projector and the course LM, no
# stage 1) and **blind** (every audio token replaced by the token of a silent utterance, so it learns the
# answers' statistics and nothing of the speech). The **cascade** is the AST classifying each word clip
# and writing the words in order: it is given where each word is, which the speech LM never is.

# %%
for name in ("sft", "dpo"):                                          # 2 models x 6 kinds x 400 utterances, live
    results[name] = sl.evaluate(speech_models[name], tokenizer, tokens_test, test_utts, WORDS)
cascade = sl.cascade_transcripts(encoder, X, test_utts, WORDS)
cascade_wer = sl.word_error_rate(cascade, [u.text for u in test_utts])
live_equal = {k: float(np.mean([a == b for a, b in zip(results[k]["transcribe"]["answers"][:40],
                                                       speech_record["results"][k + "_answers"]["transcribe"])]))
              for k in ("sft", "dpo")}
print("the script's first 40 transcripts, equal to the ones written here: "
      + ", ".join(f"{k} {v:.0%}" for k, v in live_equal.items()))

assert min(live_equal.values()) >= 0.9, live_equal
ROWS = [("stage 1, LM frozen (script)", "stage1_frozen_lm"), ("stage 1 (script)", "stage1"),
        ("SFT only, no stage 1 (script)", "sft_only"), ("stage 1 + SFT", "sft"), ("stage 1 + SFT + DPO", "dpo"),
        ("blind: silence in, SFT recipe (script)", "blind")]


def cell(name, kind):
    r = results[name].get(kind)
    if r is None:
        return "-"
    if kind == "transcribe":
        return f"{r['score']:.1%}"
    lo, hi = wilson_interval(r["score"], len(test_utts))
    return f"{r['score']:.1%} [{lo:.0%}, {hi:.0%}]"


report.table(["model", "transcription WER", *[f"{k} (exact)" for k in sl.ALL_KINDS[1:]]],
             [[label, *[cell(name, k) for k in sl.ALL_KINDS]] for label, name in ROWS]
             + [["cascade: the AST's word per clip (boundaries given)", f"{cascade_wer:.1%}", *["-"] * 5]])

# %% [markdown]
# Each exact-match cell has its 95% interval (Wilson, 400 utterances): differences inside the two intervals'
# overlap are not differences we measured. What the rows show, computed from the table:

# %%
sft, sft_only, dpo_r = results["sft"], results["sft_only"], results["dpo"]
instructions = ["after", "said", "reverse"]
print(f"stage 1's effect (stage 1 + SFT minus SFT only): WER {sft['transcribe']['score'] - sft_only['transcribe']['score']:+.1%}; "
      + ", ".join(f"{k} {sft[k]['score'] - sft_only[k]['score']:+.1%}" for k in instructions))
print(f"the speech LM's WER {sft['transcribe']['score']:.1%} against the cascade's {cascade_wer:.1%}, which is given "
      f"the word boundaries; the blind model's instructions: "
      + ", ".join(f"{k} {results['blind'][k]['score']:.1%}" for k in instructions))
targets = {"transcription WER <= 10% (after DPO)": dpo_r["transcribe"]["score"] <= 0.10,
           **{f"{k} >= 80% (after DPO)": dpo_r[k]["score"] >= 0.80 for k in instructions},
           "DPO not worse than SFT on any kind": all(
               (dpo_r[k]["score"] <= sft[k]["score"]) if k == "transcribe" else (dpo_r[k]["score"] >= sft[k]["score"])
               for k in sl.ALL_KINDS)}
print("the course's targets:", {k: "met" if v else "missed" for k, v in targets.items()})

# %% [markdown]
# **Stage 3, DPO (Rafailov et al., 2023).** Qwen2-Audio's last stage learns from pairs of a preferred answer
# $y_w$ and a rejected one $y_l$ to the same audio and prompt, with the SFT model as the frozen reference
# $\pi_{ref}$ and as the start of the policy $\pi$:
# $L = -\log\sigma\big(\beta[\log\frac{\pi(y_w|x)}{\pi_{ref}(y_w|x)} - \log\frac{\pi(y_l|x)}{\pi_{ref}(y_l|x)}]\big)$,
# where $\beta \log\frac{\pi(y|x)}{\pi_{ref}(y|x)}$ is the answer's implicit reward. Since $\pi = \pi_{ref}$ at
# the start, both log-ratios are 0 and the loss is $\log 2$. Our pairs come from the SFT model's own mistakes on
# training utterances (its greedy answers and two sampled ones per question, temperature 1): chosen = the right
# answer, rejected = its wrong one. The script trained it (AdamW, $\beta = 0.1$) and picked the step on
# validation utterances of the training voices:

# %%
dpo_log = speech_record["stages"]["dpo"]
log_steps = [e["step"] for e in dpo_log["log"]]
print(f"{dpo_log['pairs']} pairs (chosen, rejected), per kind {dpo_log['pairs_by_kind']}; "
      f"e.g. {dpo_log['examples'][:3]}")
print(f"loss at step 0: {dpo_log['log'][0]['loss']:.4f} (log 2 = {math.log(2):.4f}); picked step "
      f"{dpo_log['picked_step']} of {len(log_steps)} by validation:")
report.table(["step", *[k for k in dpo_log["validation"][0] if k != "step"]],
             [[v["step"], *[f"{x:.1%}" for k, x in v.items() if k != "step"]] for v in dpo_log["validation"]])
assert abs(dpo_log["log"][0]["loss"] - math.log(2)) < 1e-4
smooth = lambda v, k=10: np.convolve(v, np.ones(k) / k, mode="valid")      # a moving mean over 10 steps
fig, axes = plt.subplots(1, 3, figsize=(12, 2.8), layout="constrained")
axes[0].plot(log_steps[9:], smooth([e["loss"] for e in dpo_log["log"]]))
axes[0].axhline(math.log(2), ls="--", color="gray", label="log 2")
axes[0].set(xlabel="DPO step", ylabel="loss", title="DPO loss (mean of 10 steps)")
axes[0].legend()
axes[1].plot(log_steps[9:], smooth([e["chosen_reward"] for e in dpo_log["log"]]), label="chosen")
axes[1].plot(log_steps[9:], smooth([e["rejected_reward"] for e in dpo_log["log"]]), label="rejected")
axes[1].set(xlabel="DPO step", ylabel="beta log(pi / pi_ref)", title="implicit rewards")
axes[1].legend()
axes[2].plot(log_steps[9:], smooth([e["margin"] for e in dpo_log["log"]]), color="C2")
axes[2].set(xlabel="DPO step", ylabel="chosen - rejected", title="reward margin");

# %% [markdown]
# The same loss, live, on held-out utterances: pairs from the SFT model's wrong greedy answers to the 400 test
# utterances. With the SFT model as both policy and reference it is $\log 2$ exactly; with the DPO policy:

# %%
pairs_live = {k: sl.wrong_answer_rows(sft[k]["truth"], sft[k]["answers"]) for k in sl.ALL_KINDS}
rows_live = [(k, i) for k, idx in pairs_live.items() for i in idx]
prompts_live = [sft[k]["prompts"][i] for k, i in rows_live]
chosen = at.instruction_rows(tokenizer, prompts_live, [" " + sft[k]["truth"][i] for k, i in rows_live])
rejected = at.instruction_rows(tokenizer, prompts_live, [" " + sft[k]["answers"][i] for k, i in rows_live])
feats_live = tokens_test[[i for _, i in rows_live]]
with torch.no_grad():
    same, _ = sl.dpo_batch_loss(speech_models["sft"], speech_models["sft"], feats_live, chosen, rejected, beta=0.1)
    after, info = sl.dpo_batch_loss(speech_models["dpo"], speech_models["sft"], feats_live, chosen, rejected, beta=0.1)
print(f"{len(rows_live)} held-out pairs: loss with pi = pi_ref {same:.4f}; with the DPO policy {after:.4f}, reward "
      f"margin {info['margin']:+.3f}, the chosen answer's reward higher in {info['reward_accuracy']:.0%} of the pairs")
assert abs(same.item() - math.log(2)) < 1e-5

# %% [markdown]
# What DPO changed in the held-out answers, per kind: the questions SFT got wrong and DPO right (fixed), and the
# other way round (caused):

# %%
change_rows = []
for k in sl.ALL_KINDS:
    ok_sft = np.array([a == t for a, t in zip(sft[k]["answers"], sft[k]["truth"])])
    ok_dpo = np.array([a == t for a, t in zip(dpo_r[k]["answers"], dpo_r[k]["truth"])])
    fixed, caused = np.flatnonzero(~ok_sft & ok_dpo), np.flatnonzero(ok_sft & ~ok_dpo)
    example = lambda i: f"{dpo_r[k]['prompts'][i]} {sft[k]['answers'][i]!r} -> {dpo_r[k]['answers'][i]!r}"
    change_rows.append([k, len(fixed), len(caused), example(fixed[0]) if len(fixed) else "-",
                        example(caused[0]) if len(caused) else "-"])
report.table(["kind", "fixed", "caused", "a fix (SFT -> DPO)", "a new mistake (SFT -> DPO)"], change_rows)

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
    "AST accuracy on held-out voices, seed 0 here: image ViT init / scratch": f"{acc_image:.1%} / {acc_scratch:.1%}",
    "AST over 5 seeds (script): image init / scratch, mean +- sd": " / ".join(
        f"{final[i].mean():.1%} +- {final[i].std(ddof=1):.1%}" for i in ("image", "scratch")),
    "  paired difference image - scratch, mean +- sd": f"{paired.mean():+.1%} +- {paired.std(ddof=1):.1%}",
    "CLS attention on the loud columns, first / last block (even: share of loud columns)":
        f"{on_loud[0]:.0%} / {on_loud[-1]:.0%} ({even:.0%})",
    **{f"speech LM, {label}: transcription WER": f"{results[name]['transcribe']['score']:.1%}" for label, name in ROWS},
    **{f"speech LM, {label}: after / said / reverse (exact)": " / ".join(
        f"{results[name][k]['score']:.1%}" for k in instructions) for label, name in ROWS if "after" in results[name]},
    "cascade WER (the AST's word per clip, boundaries given)": f"{cascade_wer:.1%}",
    "DPO: pairs / loss at step 0 / picked step": f"{dpo_log['pairs']} / {dpo_log['log'][0]['loss']:.4f} / {dpo_log['picked_step']}",
    "DPO on held-out pairs: loss with pi = pi_ref / DPO policy": f"{same:.4f} / {after:.4f}",
    "DPO vs SFT, held-out answers fixed / caused (all kinds)": f"{sum(r[1] for r in change_rows)} / {sum(r[2] for r in change_rows)}",
    "the course's targets": ", ".join(f"{k}: {'met' if v else 'missed'}" for k, v in targets.items()),
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
# **1.** Count tokens by hand. (a) AST's transformer reads its patches plus the CLS and distillation tokens: how
# many tokens for a 10 s AudioSet clip (1024 frames of 128 mel bins), 16 x 16 patches with a stride of 10 across
# frequency and 12 along time? (b) Our speech LM's encoder slides a 98-frame window every 20 frames over the
# log-mel (25 ms windows every 10 ms, no centre padding): how many audio tokens does it give for 12 s of audio at 16 kHz?

# %%
token_counts = ...  # (a, b)
checks.exercise("10.token_counts", token_counts);

# %% [markdown]
# **2.** Conservative DPO (Mitchell, 2023; TRL's `sigmoid` loss with `label_smoothing`) assumes each preference
# label is flipped with probability $\varepsilon$: with $z = \beta[(\log\pi(y_w) - \log\pi_{ref}(y_w)) -
# (\log\pi(y_l) - \log\pi_{ref}(y_l))]$, the loss of a pair is $-(1 - \varepsilon)\log\sigma(z) - \varepsilon\log\sigma(-z)$.
# Write `my_cdpo_loss(pc, pr, rc, rr, beta, eps)`: four (B,) tensors of sequence log-probabilities (policy
# chosen / rejected, reference chosen / rejected), the mean loss over the pairs. Then look at what it does at
# the start of training, where $z = 0$.

# %%
def my_cdpo_loss(pc, pr, rc, rr, beta, eps):
    raise NotImplementedError  # your code here


checks.exercise("10.cdpo_loss", my_cdpo_loss);

# %% [markdown]
# **3.** Qwen2-Audio's encoder reads 10 ms log-mel frames of the clip (transformers' processor counts the
# clip's own frames, not the padding to 30 s), then a convolution (kernel 3, stride 2, padding 1) and an
# average pooling (kernel 2, stride 2) shorten the sequence. How many audio tokens does the LLM receive for a
# 12.5 s clip?

# %%
qwen_audio_tokens = ...
checks.exercise("10.qwen_audio_tokens", qwen_audio_tokens);
