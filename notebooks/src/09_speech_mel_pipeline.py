# %% [markdown]
# # 09 · Speech: from a raw waveform to log-mel spectrum vectors
#
# Speech models (Whisper, the Audio Spectrogram Transformer, Qwen2-Audio's encoder) do not read raw
# samples; they read a sequence of 80-dimensional log-mel vectors, one every 10 ms. This notebook builds that
# front end step by step, as the lecture does after Jurafsky & Martin, Section 16.2: sampling and
# quantization, windowing (25 ms windows, 10 ms stride, rectangular vs Hamming), the discrete Fourier
# transform, the mel filter bank $mel(f) = 1127 \ln(1 + f/700)$, and the log. Each step has a picture and a
# number, and the finished pipeline is checked against torchaudio.
#
# **What you need:** about 13 s on a 2-core CPU, 0.75 GB of memory at peak, no GPU, no network, nothing to
# train. The recordings are synthesized speech shipped in `data/speech/` (made once by
# `scripts/make_speech_data.py` with espeak-ng; here they are only read).

# %%
import csv
import math
import time

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
import torchaudio
from IPython.display import Audio, display

from utils import DATA_DIR, audio, checks, env, report

device = env.setup(seed=0)
t_start = time.perf_counter()
SPEECH = DATA_DIR / "speech"
with open(SPEECH / "metadata.csv") as f:
    metadata = list(csv.DictReader(f))
print(f"{len(metadata)} recordings; words: {sorted({r['word'] for r in metadata if r['split'] != 'sentence'})}")

# %% [markdown]
# ## 1. The waveform
#
# A microphone measures air pressure over time: compression above zero, rarefaction below. Here is the word
# "baby", read from a 16-bit WAV file with the standard library (`utils.audio.read_wav`; no FFmpeg needed).

# %%
x, sr = audio.read_wav(SPEECH / "baby_en-us-f2_p65_s140.wav")  # (C, T), Hz
baby = x[0]                                                       # (T,)
print(f"shape {tuple(x.shape)}, sample rate {sr} Hz, duration {len(baby) / sr:.2f} s, range [{baby.min():.2f}, {baby.max():.2f}]")
t = torch.arange(len(baby)) / sr
fig, ax = plt.subplots(figsize=(10, 2.5))
ax.plot(t, baby, lw=0.6)
ax.set(xlabel="time (s)", ylabel="amplitude", title='"baby"')
display(Audio(baby.numpy(), rate=sr))

# %% [markdown]
# **The vowel [iy].** The lecture's Figure 16.2 shows the last vowel of "baby": a wave that repeats regularly.
# Voicing ends with the [iy]; we take 40 ms centred 80 ms before the last 10 ms frame whose energy is above
# 10% of the peak, and measure the period with the normalized autocorrelation: the lag, between 2.5 and
# 16.7 ms, at which the signal best matches a shifted copy of itself. Its inverse is the pitch $F_0$.

# %%
energy = audio.frame_signal(baby, 160, 160).pow(2).mean(-1)               # (frames,) one per 10 ms
voicing_end = (torch.nonzero(energy > 0.1 * energy.max()).flatten()[-1].item() + 1) * 160  # samples
mid = voicing_end - 1280                                                  # 80 ms before voicing ends
iy = baby[mid - 320: mid + 320]                                           # 40 ms of [iy]
lags = torch.arange(40, 267)                                              # 2.5-16.7 ms: pitches of 60-400 Hz
ac = torch.stack([(iy[:-lag] @ iy[lag:]) / (iy[:-lag].norm() * iy[lag:].norm()) for lag in lags.tolist()])
period = lags[ac.argmax()].item()
f0 = sr / period
print(f"[iy] around {mid / sr:.3f} s; period {period} samples = {1000 * period / sr:.2f} ms -> pitch F0 = {f0:.0f} Hz "
      f"(autocorrelation {ac.max():.2f})")
fig, ax = plt.subplots(figsize=(10, 2.5))
ax.plot(1000 * torch.arange(len(iy)) / sr, iy, lw=1)
for k in range(0, len(iy) // period + 1):
    ax.axvline(1000 * k * period / sr, color="tab:red", lw=0.6, ls="--")
ax.set(xlabel="time (ms)", ylabel="amplitude", title=f"40 ms of [iy]: the wave repeats every {1000 * period / sr:.1f} ms (red lines)");
assert 80 <= f0 <= 400 and ac.max() > 0.8

# %% [markdown]
# ## 2. Sampling: how often we measure
#
# Sampling turns the continuous wave into numbers at regular intervals, 16,000 a second here. A sampled
# signal can only represent frequencies up to half the sampling rate, the Nyquist frequency. A tone above it
# does not disappear: it *aliases*, folding down to $|f - \text{round}(f / f_s) f_s|$. A 7 kHz tone sampled
# at 8 kHz is indistinguishable from a 1 kHz tone.

# %%
fs, f_tone = 8000, 7000.0
predicted_alias = abs(f_tone - round(f_tone / fs) * fs)
n = torch.arange(fs)                                     # one second of samples
samples = torch.sin(2 * math.pi * f_tone * n / fs)
spectrum = torch.fft.rfft(samples).abs()
measured_alias = spectrum.argmax().item() * fs / len(samples)
print(f"a {f_tone:.0f} Hz tone sampled at {fs} Hz (Nyquist {fs // 2} Hz): predicted alias {predicted_alias:.0f} Hz, "
      f"strongest DFT bin {measured_alias:.0f} Hz")
assert measured_alias == predicted_alias
fine = torch.linspace(0, 0.002, 2000)
fig, ax = plt.subplots(figsize=(10, 2.6))
ax.plot(1000 * fine, torch.sin(2 * math.pi * f_tone * fine), lw=0.7, label="7 kHz tone")
ax.plot(1000 * fine, torch.sin(2 * math.pi * (f_tone - fs) * fine), lw=1.2, ls="--", label="1 kHz alias")
ts = n[:17] / fs
ax.plot(1000 * ts, torch.sin(2 * math.pi * f_tone * ts), "o", color="k", label="samples at 8 kHz")
ax.set(xlabel="time (ms)", ylabel="amplitude", title="the samples of a 7 kHz tone lie exactly on a 1 kHz wave")
ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8);

# %% [markdown]
# ## 3. Quantization: how precisely we store each sample
#
# Each sample is stored as a $b$-bit integer: $2^b$ levels, a step of $2^{1-b}$ over $[-1, 1)$. Rounding adds
# an error of at most half a step; for a full-scale sine the theory gives a signal-to-noise ratio of
# $6.02\,b + 1.76$ dB. We measure it.

# %%
tt = torch.arange(2 * 16000, dtype=torch.float64) / 16000
snr = {}
for bits in (8, 16):
    sine = torch.sin(2 * math.pi * 441.3 * tt) * audio.full_scale(bits)  # a full-scale sine
    snr[bits] = audio.snr_db(sine, audio.dequantize(audio.quantize(sine, bits), bits))
    print(f"{bits:2d} bits: {2 ** bits:6d} levels, measured SNR {snr[bits]:.2f} dB, theory {6.02 * bits + 1.76:.2f} dB")
    assert abs(snr[bits] - (6.02 * bits + 1.76)) <= 1.0

# %% [markdown]
# Listen: "baby" at 16 bits (the file), 8 bits and 4 bits. At 4 bits the rounding error is loud hiss; the
# plot shows the staircase of 4-bit levels.

# %%
print("16 bits: the recording as stored")
display(Audio(baby.numpy(), rate=sr, normalize=False))
for bits in (8, 4):
    q = audio.dequantize(audio.quantize(baby, bits), bits)
    print(f"{bits:2d} bits: SNR on this recording {audio.snr_db(baby, q):5.1f} dB")
    display(Audio(q.numpy(), rate=sr, normalize=False))
seg = slice(mid - 80, mid + 80)
fig, ax = plt.subplots(figsize=(10, 2.5))
ax.plot(baby[seg], lw=1, label="16 bits")
ax.step(range(160), audio.dequantize(audio.quantize(baby[seg], 4), 4), where="mid", lw=1, label="4 bits")
ax.set(xlabel="sample (16 kHz)", ylabel="amplitude", title="10 ms of [iy], and its 4-bit version")
ax.legend(fontsize=8);

# %% [markdown]
# ## 4. Windowing: 25 ms windows every 10 ms
#
# Speech changes, but slowly: within about 25 ms its spectrum is roughly constant. So we cut the signal into
# 25 ms windows that start every 10 ms (they overlap). At 16 kHz a window is 400 samples and the stride 160;
# a second of audio gives $1 + \lfloor (16000 - 400) / 160 \rfloor = 98$ frames, about 100 a second.

# %%
# NBVAL_CHECK_OUTPUT
win, hop = round(sr * 0.025), round(sr * 0.010)
frames = audio.frame_signal(baby, win, hop)   # (frames, win)
print(f"window {win} samples, stride {hop} samples -> frames {tuple(frames.shape)} from {len(baby)} samples")

# %%
fig, ax = plt.subplots(figsize=(10, 2.6))
start = mid - 800
ax.plot(torch.arange(start, start + 1200) / sr * 1000, baby[start:start + 1200], lw=0.6, color="gray")
for k, colour in zip(range(4), ("tab:blue", "tab:orange", "tab:green", "tab:red")):
    s = start + k * hop
    ax.axvspan(1000 * s / sr, 1000 * (s + win) / sr, ymin=0.05 + 0.22 * k, ymax=0.22 + 0.22 * k, color=colour, alpha=0.35)
ax.set(xlabel="time (ms)", ylabel="amplitude", title="25 ms windows with a 10 ms stride (the lecture's Figure 16.4)");

# %% [markdown]
# **Rectangular vs Hamming.** Cutting a window out abruptly (rectangular) multiplies the signal by a box, and
# the box's spectrum has high sidelobes: energy of one frequency leaks into distant bins. The Hamming window,
# a raised cosine (one period of a cosine over the window, shifted up so that it falls to 0.08 at the window's
# edges and rises to 1 in its middle), tapers the edges smoothly and trades a wider main lobe for much lower
# sidelobes. We measure the highest sidelobe of each window's spectrum, in dB below the main lobe.

# %%
def highest_sidelobe_db(w: torch.Tensor, pad: int = 64) -> float:
    """Highest sidelobe of |DTFT(w)| (densely sampled by zero-padding), in dB relative to the main lobe."""
    mag = torch.fft.rfft(w.double(), n=pad * len(w)).abs()
    db = 20 * torch.log10(mag / mag[0] + 1e-300)
    first_null = torch.nonzero(db[1:] > db[:-1]).flatten()[0].item()  # where the main lobe stops falling
    return db[first_null:].max().item()


sidelobe = {name: highest_sidelobe_db(audio.window_function(name, win)) for name in ("rectangular", "hamming")}
for name, v in sidelobe.items():
    print(f"{name:12s}: highest sidelobe {v:6.1f} dB")
assert sidelobe["rectangular"] > -14 and sidelobe["hamming"] < -40

tone = torch.sin(2 * math.pi * 1031.0 * torch.arange(win) / sr)  # 1031 Hz falls between two DFT bins
fig, axes = plt.subplots(1, 2, figsize=(11, 3))
for name in ("rectangular", "hamming"):
    w = audio.window_function(name, win)
    axes[0].plot(w, label=name)
    spec = torch.fft.rfft(tone * w, n=4096).abs()
    axes[1].plot(torch.arange(len(spec)) * sr / 4096, 20 * torch.log10(spec / spec.max() + 1e-12), lw=0.8, label=name)
axes[0].set(title="the two windows (400 samples)", xlabel="sample n", ylabel="weight w[n]")
axes[1].set(title="spectrum of a windowed 1031 Hz tone: leakage", xlabel="frequency (Hz)", ylabel="dB", ylim=(-100, 5), xlim=(0, 4000))
axes[0].legend(fontsize=8), axes[1].legend(fontsize=8)
fig.tight_layout();

# %% [markdown]
# ## 5. The discrete Fourier transform
#
# The DFT measures how much of each frequency a frame contains: $X[k] = \sum_n x[n]\, e^{-2\pi i k n / N}$,
# for $k = 0 \dots N/2$ (a real signal's spectrum is symmetric). Written as a matrix product it is one line;
# the FFT computes the same numbers in $O(N \log N)$ instead of $O(N^2)$.

# %%
N = win
k_idx, n_idx = torch.arange(N // 2 + 1)[:, None], torch.arange(N)[None, :]
dft_matrix = torch.exp(-2j * math.pi * k_idx * n_idx / N).to(torch.complex64)   # (F, N)
windowed = frames * audio.window_function("hamming", win)                        # (frames, N)
X_matrix = windowed.to(torch.complex64) @ dft_matrix.T                           # (frames, F)
X_fft = torch.fft.rfft(windowed)                                                 # (frames, F)
dft_err = (X_matrix - X_fft).abs().max().item() / X_fft.abs().max().item()
print(f"DFT as a matrix product vs torch.fft.rfft: max difference {dft_err:.1e} of the largest value")
assert dft_err < 1e-4


def best_time(fn, repeats=20):
    fn()
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn()
        best = min(best, (time.perf_counter() - t0) / repeats)
    return best


t_matrix = best_time(lambda: windowed.to(torch.complex64) @ dft_matrix.T)
t_fft = best_time(lambda: torch.fft.rfft(windowed))
print(f"on {len(frames)} frames of {N} samples: matrix product {1e3 * t_matrix:.2f} ms, FFT {1e3 * t_fft:.2f} ms "
      f"-> the FFT is {t_matrix / t_fft:.1f}x faster")

# %% [markdown]
# The lecture's Figure 16.6: a 25 ms Hamming-windowed piece of [iy] and its spectrum. The peaks are the
# harmonics of the pitch, every $F_0$ Hz; their envelope shows the vowel's **formants**, the resonances of
# the vocal tract. To find them we fit the frame with a smooth envelope by linear prediction (LPC: predict
# each sample from the 18 before it; the predictor's all-pole filter $1/|A(f)|$ is the envelope; 18 is the
# usual 2 + sampling rate in kHz) and take the envelope's peaks below 4 kHz: $F_1, F_2, F_3$.

# %%
def lpc_envelope(frame: torch.Tensor, order: int, n_fft: int) -> torch.Tensor:
    """|spectrum| of the all-pole model that linear prediction fits to `frame`, at n_fft // 2 + 1 bins."""
    r = torch.stack([frame[: len(frame) - k] @ frame[k:] for k in range(order + 1)])  # autocorrelation
    lag = torch.arange(order)
    a = torch.linalg.solve(r[(lag[:, None] - lag[None]).abs()], r[1:])                 # (order,) predictor
    error = r[0] - a @ r[1:]                                                            # prediction error energy
    return error.sqrt() / torch.fft.rfft(torch.cat([torch.ones(1, dtype=frame.dtype), -a]), n=n_fft).abs()


iy_frame = baby[mid - win // 2: mid + win // 2] * audio.window_function("hamming", win)
iy_spec = torch.fft.rfft(iy_frame, n=2048).abs()
freqs = torch.arange(len(iy_spec)) * sr / 2048
envelope_db = 20 * torch.log10(lpc_envelope(iy_frame.double(), 18, 2048))
is_peak = (envelope_db[1:-1] > envelope_db[:-2]) & (envelope_db[1:-1] > envelope_db[2:])
formants = [freqs[i + 1].item() for i in torch.nonzero(is_peak).flatten() if freqs[i + 1] < 4000][:3]
print("formants of this [iy]: " + ", ".join(f"F{k + 1} = {f:.0f} Hz" for k, f in enumerate(formants)))
assert len(formants) == 3 and formants[0] < 600 and formants[1] > 1900  # [iy]: low F1, high F2
fig, axes = plt.subplots(1, 2, figsize=(11, 3.3))
axes[0].plot(1000 * torch.arange(win) / sr, iy_frame, lw=0.8)
axes[0].set(xlabel="time (ms)", ylabel="amplitude", title="(a) 25 ms of [iy], Hamming-windowed")
axes[1].plot(freqs, 20 * torch.log10(iy_spec + 1e-9), lw=0.8, label="spectrum")
axes[1].plot(freqs, envelope_db, lw=1.5, color="k", label="LPC envelope")
for h in range(1, 11):
    axes[1].axvline(h * f0, color="tab:red", lw=0.4, ls="--")
for k, f in enumerate(formants):
    axes[1].annotate(f"F{k + 1}\n{f:.0f} Hz", (f, envelope_db[round(f * 2048 / sr)]), xytext=(0, 8),
                     textcoords="offset points", ha="center", fontsize=8, color="k")
axes[1].set(xlabel="frequency (Hz)", ylabel="dB", xlim=(0, 4000), ylim=(envelope_db.min().item() - 40, envelope_db.max().item() + 22),
            title=f"(b) its spectrum; red lines: multiples of F0 = {f0:.0f} Hz")
axes[1].legend(fontsize=8, loc="lower left")
fig.tight_layout();

# %% [markdown]
# [iy] (as in "baby", "see") is a front close vowel: the tongue high and forward gives a low first formant and
# a high second one, far apart. That is what tells it from, say, [aa], whose textbook formants are F1 of
# about 700-850 Hz and F2 of about 1,100-1,200 Hz (Peterson & Barney, 1952). A speech model is never told
# the formants; it reads them from the log-mel spectrum, whose wide high-frequency filters keep the envelope
# and blur the harmonics.

# %% [markdown]
# ## 6. The mel scale and the mel filter bank
#
# We hear pitch roughly linearly below 1 kHz and logarithmically above; the mel scale models that:
# $mel(f) = 1127 \ln(1 + f / 700)$, so 1000 Hz is about 1000 mel. The filter bank places triangular filters
# evenly on the mel scale, hence narrow at low frequencies and wide at high ones, and sums the power under
# each (the lecture's Figure 16.7).

# %%
# NBVAL_CHECK_OUTPUT
for f_hz in (100, 1000, 4000, 8000):
    print(f"{f_hz:5d} Hz = {audio.mel_scale(float(f_hz)):7.1f} mel")

# %%
n_freqs = win // 2 + 1
fb_small = audio.mel_filterbank(n_freqs, 0.0, sr / 2, 10, sr)   # (F, 10), for the picture
fb = audio.mel_filterbank(n_freqs, 0.0, sr / 2, 80, sr)         # (F, 80), what we use
bin_hz = torch.linspace(0, sr / 2, n_freqs)
fig, axes = plt.subplots(1, 3, figsize=(14, 3))
f_axis = torch.linspace(0, 8000, 200)
axes[0].plot(f_axis, audio.mel_scale(f_axis))
axes[0].set(xlabel="frequency (Hz)", ylabel="mel", title="mel(f) = 1127 ln(1 + f/700)")
axes[1].plot(bin_hz, fb_small)
axes[1].set(xlabel="frequency (Hz)", title="10 mel filters")
axes[2].plot(bin_hz, fb, lw=0.6)
axes[2].set(xlabel="frequency (Hz)", title="80 mel filters (the usual front end)")
fig.tight_layout()
edges = audio.inverse_mel_scale(torch.linspace(0, audio.mel_scale(sr / 2), 82))  # the 80 filters' corner frequencies
print(f"the lowest filter spans {edges[2] - edges[0]:.0f} Hz ({edges[0]:.0f}-{edges[2]:.0f} Hz), "
      f"the highest {edges[81] - edges[79]:.0f} Hz ({edges[79]:.0f}-{edges[81]:.0f} Hz)")

# %% [markdown]
# **The lowest filters are narrower than a DFT bin.** A 400-point DFT at 16 kHz has a bin every
# 16000 / 400 = 40 Hz. The filters' centres, evenly spaced on the mel scale, are much closer than that at
# the bottom, so a low filter finds only one DFT bin under its triangle, and neighbouring filters read the
# *same* bin with different weights:

# %%
bin_spacing = sr / win                                  # Hz between DFT bins
spacing = edges[2:] - edges[1:-1]                       # (80,) Hz between filter m's centre and the next corner
narrow = int((spacing < bin_spacing).sum())
rows = []
for m in range(8):
    bins = torch.nonzero(fb[:, m]).flatten()
    rows.append([m, f"{edges[m]:.0f}-{edges[m + 1]:.0f}-{edges[m + 2]:.0f}", f"{spacing[m]:.0f}",
                 ", ".join(f"{bin_hz[k]:.0f} Hz ({fb[k, m]:.2f})" for k in bins)])
report.table(["filter", "corners (Hz)", "centre spacing (Hz)", "DFT bins it reads (weight)"], rows)
lowest_bins = [torch.nonzero(fb[:, m]).flatten().tolist() for m in range(narrow)]
distinct = len({b for bins in lowest_bins for b in bins})
print(f"DFT bin spacing {bin_spacing:.0f} Hz; the lowest {narrow} filters are spaced {spacing[0]:.1f}-{spacing[narrow - 1]:.1f} Hz "
      f"apart, closer than one bin: together they read only {distinct} distinct DFT bins")
assert spacing[0] < bin_spacing / 1.5 and distinct < narrow and lowest_bins[0] == lowest_bins[1] == [1]  # see below
fig, ax = plt.subplots(figsize=(11, 2.8))
for m in range(10):
    line, = ax.plot(edges[m:m + 3], [0, 1, 0], lw=1)
    bins = torch.nonzero(fb[:, m]).flatten()
    ax.plot(bin_hz[bins], fb[bins, m], "o", color=line.get_color())
for k in range(0, 10):
    ax.axvline(k * bin_spacing, color="gray", lw=0.5, ls=":")
ax.set(xlim=(0, 330), xlabel="frequency (Hz)", ylabel="filter weight",
       title="the 10 lowest mel filters (triangles) and the DFT bins every 40 Hz (dotted): dots = what each filter reads");

# %% [markdown]
# So in section 8's spectrogram, the bottom rows come in pairs or triples that copy one DFT bin, each scaled by
# its own weight: filters 0 and 1 both read only the 40 Hz bin, with the weights in the table, so their log-mel
# rows differ by the same constant at every frame, the log of the ratio of the two weights (section 8 measures
# it on a recording and checks it against the exact weights). That is the striped look of the lowest
# mel bins. The remedies: a longer DFT (Kaldi's `fbank`, which AST uses, pads each 400-sample frame to 512
# points), fewer mel bins, or a higher lowest frequency `f_min`.

# %% [markdown]
# ## 7. The log
#
# We perceive loudness logarithmically, and the log has a practical benefit the lecture names: a
# speaker closer to or farther from the microphone scales the waveform by a constant, which the log turns
# into a constant *shift* of every value. Scaling "baby" by one half lowers every log-mel value by
# $\ln(1/4) = -1.386$ (power goes with the square of the amplitude):

# %%
lm = audio.log_mel_spectrogram(baby, sr)
lm_quiet = audio.log_mel_spectrogram(0.5 * baby, sr)
active = lm > lm.amax() - 20          # bins well above the eps floor
shift = (lm_quiet - lm)[active]
print(f"log-mel shift when the amplitude halves: mean {shift.mean():.4f}, spread {shift.std():.1e} (ln 1/4 = {math.log(0.25):.4f})")
assert abs(shift.mean().item() - math.log(0.25)) < 1e-3

# %% [markdown]
# ## 8. The whole pipeline: 80-dimensional log-mel vectors
#
# `utils.audio.log_mel_spectrogram` chains the steps: frame (25 ms / 10 ms) -> Hamming window -> power
# spectrum $|X[k]|^2$ -> 80 mel filters -> natural log. A sentence becomes a sequence of 80-dimensional
# vectors, one every 10 ms: the input of notebook 10's Audio Spectrogram Transformer.

# %%
sentence_row = next(r for r in metadata if r["file"].startswith("sentence_baby"))
sent, sr_s = audio.read_wav(SPEECH / sentence_row["file"])
sent = sent[0]
log_mel = audio.log_mel_spectrogram(sent, sr_s)   # (M, frames)
print(f'"{sentence_row["word"]}": {len(sent) / sr_s:.2f} s -> log-mel {tuple(log_mel.shape)} = (mel bins, frames)')
display(Audio(sent.numpy(), rate=sr_s))
fig, axes = plt.subplots(2, 1, figsize=(10, 5), sharex=True)
axes[0].plot(torch.arange(len(sent)) / sr_s, sent, lw=0.4)
axes[0].set(ylabel="amplitude", title=f'"{sentence_row["word"]}"')
img = axes[1].imshow(log_mel, origin="lower", aspect="auto", cmap="magma", vmin=log_mel.max().item() - 15,
                     extent=(0, log_mel.shape[1] * 0.010, 0, 80))
axes[1].set(xlabel="time (s)", ylabel="mel bin", title="80-dimensional log-mel spectrogram")
fig.colorbar(img, ax=axes, shrink=0.5, label="ln power")
plt.show()
row_gap = log_mel[1] - log_mel[0]               # (frames,) two filters that read the same 40 Hz bin
print(f"mel rows 1 and 0 differ by {row_gap.median():.2f} in the median frame (ln(fb[1, 1] / fb[1, 0]) = "
      f"{math.log(fb[1, 1] / fb[1, 0]):.2f}): the stripes at the bottom")
assert abs(row_gap.median().item() - math.log(fb[1, 1] / fb[1, 0])) < 0.05

# %% [markdown]
# ## 9. Check against torchaudio
#
# torchaudio's `MelSpectrogram` with the same settings (a 400-point DFT of 400-sample Hamming windows, stride
# 160, no centre padding, power 2, 80 HTK mel filters), then the same log. torchaudio writes the mel scale as
# $2595 \log_{10}(1 + f/700)$, the same curve. We compare every bin whose power is above $10^{-6}$ and within
# 60 dB of its frame's strongest bin.

# %%
ref_power = torchaudio.transforms.MelSpectrogram(sr_s, n_fft=win, win_length=win, hop_length=hop, window_fn=torch.hamming_window,
                                                 power=2.0, center=False, n_mels=80, mel_scale="htk")(sent)
ref_log = torch.log(torch.clamp(ref_power, min=1e-10))
valid = (ref_power > 1e-6) & (ref_power >= ref_power.amax(0, keepdim=True) * 1e-6)
parity_err = (log_mel - ref_log).abs()[valid].max().item()
fb_err = (fb - torchaudio.functional.melscale_fbanks(n_freqs, 0.0, sr / 2, 80, sr, norm=None, mel_scale="htk")).abs().max().item()
print(f"log-mel vs torchaudio: max |difference| {parity_err:.1e} over {valid.float().mean():.0%} of the bins; "
      f"filter bank: max |difference| {fb_err:.1e}")

# %%
# NBVAL_CHECK_OUTPUT
print("log-mel within 1e-2 of torchaudio:", parity_err <= 1e-2, "| filter bank within 1e-4:", fb_err <= 1e-4)


# %% [markdown]
# ## 10. Try the settings
#
# Move the sliders (in a running notebook) to change the window, the stride and the number of mel bins. A
# longer window sharpens frequency and blurs time; fewer mel bins blur frequency. The sliders need a live
# kernel; the static figure after them shows three settings side by side, so the notebook also reads
# without one.

# %%
def plot_log_mel(win_ms=25.0, hop_ms=10.0, n_mels=80, ax=None):
    ax = ax or plt.subplots(figsize=(10, 3))[1]
    try:
        lm_ = audio.log_mel_spectrogram(sent, sr_s, win_ms=win_ms, hop_ms=hop_ms, n_mels=n_mels)
    except ValueError as e:  # e.g. more mel filters than a short window has frequency bins
        ax.text(0.5, 0.5, str(e), ha="center", va="center", wrap=True, fontsize=9)
        ax.set_axis_off()
        return ax
    ax.imshow(lm_, origin="lower", aspect="auto", cmap="magma", vmin=lm_.max().item() - 15,
              extent=(0, lm_.shape[1] * hop_ms / 1000, 0, n_mels))
    ax.set(xlabel="time (s)", ylabel="mel bin", title=f"window {win_ms:g} ms, stride {hop_ms:g} ms, {n_mels} mel bins: {tuple(lm_.shape)}")
    return ax


def show_log_mel(window_ms, stride_ms, mel_bins):
    plot_log_mel(window_ms, stride_ms, mel_bins)
    plt.show()


widgets.interact(show_log_mel,
                 window_ms=widgets.FloatSlider(value=25, min=5, max=100, step=5),
                 stride_ms=widgets.FloatSlider(value=10, min=2.5, max=50, step=2.5),
                 mel_bins=widgets.IntSlider(value=80, min=10, max=128, step=2));

# %%
fig, axes = plt.subplots(3, 1, figsize=(10, 7.5))
for ax, setting in zip(axes, [(20.0, 5.0, 40), (25.0, 10.0, 80), (64.0, 10.0, 128)]):
    plot_log_mel(*setting, ax=ax)
fig.tight_layout();

# %% [markdown]
# ## What we measured

# %%
report.measured("09_speech_mel_pipeline", {
    "formants of [iy] (LPC envelope peaks)": ", ".join(f"{f:.0f}" for f in formants) + " Hz",
    "pitch of [iy] in 'baby' (autocorrelation)": f"{f0:.0f} Hz (period {1000 * period / sr:.2f} ms)",
    "7 kHz tone sampled at 8 kHz, measured alias": f"{measured_alias:.0f} Hz",
    "SNR 8 bits: measured / theory": f"{snr[8]:.2f} / {6.02 * 8 + 1.76:.2f} dB",
    "SNR 16 bits: measured / theory": f"{snr[16]:.2f} / {6.02 * 16 + 1.76:.2f} dB",
    "highest sidelobe rectangular / Hamming": f"{sidelobe['rectangular']:.1f} / {sidelobe['hamming']:.1f} dB",
    "DFT matrix vs FFT: relative difference, speed ratio": f"{dft_err:.1e}, FFT {t_matrix / t_fft:.1f}x faster",
    "frames in 1 s (25 ms / 10 ms)": frames.shape[0],
    "lowest mel filters closer than a 40 Hz DFT bin": f"{narrow} (spaced {spacing[0]:.1f}-{spacing[narrow - 1]:.1f} Hz)",
    "log-mel vs torchaudio, max abs error (log domain)": parity_err,
    "notebook time (s)": round(time.perf_counter() - t_start, 1),
    "peak memory (GB)": round(report.peak_memory_gb(), 2),
});

# %% [markdown]
# ## Exercises
#
# Each exercise cell ends with a one-line check. Untouched, it says "not attempted yet"; the reference answers
# live in the repository's `solutions/` folder (open `solutions/nb09.py` only after you tried).
#
# **1.** Work these out by hand with section 4's frame count $1 + \lfloor (T - \text{window}) / \text{stride} \rfloor$:
# how many frames does a 30 s recording at 16 kHz give, with 25 ms windows and a 10 ms stride? And how many
# samples long is a 25 ms window at 44.1 kHz, CD quality (round it to a whole number)?

# %%
frames_30s = ...   # frames of a 30 s recording at 16 kHz, 25 ms windows, 10 ms stride
win_44k = ...      # samples in a 25 ms window at 44.1 kHz
checks.exercise("09.frames_and_window", (frames_30s, win_44k));


# %% [markdown]
# **2.** Invert the mel scale: write `my_inverse_mel(m)`, the frequency in Hz of `m` mel (a tensor), by solving
# $m = 1127 \ln(1 + f/700)$ for $f$ (not by calling `audio.inverse_mel_scale`, which the checker compares it with).

# %%
def my_inverse_mel(m):
    raise NotImplementedError  # your code here


checks.exercise("09.inverse_mel", my_inverse_mel);


# %% [markdown]
# **3.** Write `my_hamming(N)`, the Hamming window of section 4, for $n = 0, \dots, N - 1$, as a float tensor
# of length `N`, with `torch.arange` and `torch.cos` (not `torch.hamming_window`). It is one period of a
# cosine, scaled and shifted: find the two coefficients from what section 4 says of it, $w[0] = 0.08$ and
# $w[N/2] = 1$. It is the *periodic* window of spectral analysis: continued past the end, it would start
# again at $n = N$. The checker compares it with the window the pipeline uses, for N = 400, 512 and 7.

# %%
def my_hamming(N):
    raise NotImplementedError  # your code here


checks.exercise("09.hamming", my_hamming);
