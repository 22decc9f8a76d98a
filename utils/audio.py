"""Speech front end: from a raw waveform to 80-dimensional log-mel vectors (notebook 09).

Jurafsky & Martin, *Speech and Language Processing*, 3rd ed., Section 16.2, as in the lecture: sampling and
quantization, 25 ms windows every 10 ms (rectangular or Hamming), the DFT, the mel filter bank with
mel(f) = 1127 ln(1 + f / 700) (Davis & Mermelstein, 1980), and the log.
Shapes: T samples, C channels, F = n_fft // 2 + 1 frequency bins, M mel bins. Units: Hz, samples, ms, dB.
"""
from __future__ import annotations

import math
import struct
import wave
from pathlib import Path

import numpy as np
import torch

from . import DATA_DIR, validate

WINDOWS = ("hamming", "hann", "rectangular")


# ----------------------------------------------------------------------------- reading and writing WAV
def _bits_per_sample(path: Path) -> int | None:
    """The bits per sample its 'fmt ' chunk claims (Python's wave module rounds 17 up to 3 bytes)."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        while len(chunk := f.read(8)) == 8:
            name, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if name == b"fmt ":
                body = f.read(size)
                return struct.unpack("<H", body[14:16])[0] if len(body) >= 16 else None
            f.seek(size + (size & 1), 1)
    return None


def read_wav(path: str | Path) -> tuple[torch.Tensor, int]:
    """Read an 8- or 16-bit PCM WAV file with the standard library.

    Files under data/ are shipped: their sha256 is checked against data/MANIFEST first (once per process),
    so a changed sample or header is refused with the file's name, and a missing one names its script.

    Returns:
        waveform (C, T) float32 in [-1, 1) and the sample rate in Hz. 8-bit WAV is unsigned (128 = silence),
        16-bit is signed little-endian.
    """
    if not isinstance(path, (str, Path)):
        raise TypeError(f"path must be a file path (str or Path), got {type(path).__name__}")
    path = Path(path)
    shipped = DATA_DIR.resolve() in path.resolve().parents
    if shipped:
        from .checkpoints import verify_file

        verify_file(path)  # FileNotFoundError naming scripts/make_speech_data.py, or a sha256 mismatch
    if not path.exists():
        raise FileNotFoundError(f"no WAV file at {path.name}")
    bits = _bits_per_sample(path)
    if bits is not None and not 1 <= bits <= 16:  # 9-16 bits sit left-justified in 16-bit words, 1-8 in bytes
        raise ValueError(f"{path.name} has {bits}-bit samples (its header says so); read_wav reads 8- and 16-bit PCM")
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            raw = w.readframes(n)
    except wave.Error as e:
        raise ValueError(f"{path.name} is not a PCM WAV file ({e}); convert it to 8- or 16-bit PCM") from None
    except EOFError:
        raise ValueError(f"{path.name} is truncated: its header is incomplete") from None
    if width not in (1, 2):
        raise ValueError(f"{path.name} has {8 * width}-bit samples; read_wav reads 8- and 16-bit PCM")
    if rate <= 0:
        raise ValueError(f"{path.name} has a sample rate of {rate} Hz in its header; it must be positive")
    if len(raw) < n * channels * width:
        raise ValueError(f"{path.name} is truncated: its header promises {n} frames, it holds "
                         f"{len(raw) // (channels * width)}")
    if width == 1:
        data = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    else:
        data = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    return torch.from_numpy(data.reshape(-1, channels).T.copy()), rate  # (C, T)


def write_wav(path: str | Path, waveform: torch.Tensor, sample_rate: int) -> None:
    """Write (C, T) or (T,) floats in [-1, 1] as 16-bit PCM."""
    if not isinstance(path, (str, Path)):
        raise TypeError(f"path must be a file path (str or Path), got {type(path).__name__}")
    waveform = _check_float(waveform, dims=(1, 2))
    validate.integer("sample_rate", sample_rate, min=1)
    x = waveform if waveform.dim() == 2 else waveform[None]
    codes = quantize(x.double().clamp(-1, 1 - 2 ** -15), 16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(x.shape[0])
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(codes.T.numpy().astype("<i2").tobytes())


# ----------------------------------------------------------------------------- quantization
def _check_float(waveform, name: str = "waveform", dims=None) -> torch.Tensor:
    """A float tensor of samples with no NaN or inf (NumPy arrays are converted); else a clear error."""
    waveform = validate.tensor(name, waveform, dim=dims, convert=True)
    if not waveform.is_floating_point():
        raise ValueError(f"{name} must hold float samples in [-1, 1], got {waveform.dtype}; "
                         "divide integer PCM codes by 2**(bits-1) first (see dequantize)")
    if waveform.numel() == 0:
        raise ValueError(f"{name} must hold samples, got an empty tensor of shape {tuple(waveform.shape)}")
    if waveform.dim() == 0:
        raise ValueError(f"{name} must have a time axis, (..., T) samples, got a 0-d tensor (one number)")
    return validate.tensor(name, waveform, finite=True)


def _check_bits(bits) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 32:
        raise ValueError(f"bits must be an int in [2, 32], got {bits!r}")
    return bits


def full_scale(bits: int) -> float:
    """The largest amplitude a b-bit signed code represents: (2^(b-1) - 1) / 2^(b-1)."""
    return (2 ** (bits - 1) - 1) / 2 ** (bits - 1)


def quantize(waveform: torch.Tensor, bits: int) -> torch.Tensor:
    """Round floats in [-1, 1] to b-bit signed integer codes: round(x * 2^(b-1)), clipped to the code range.

    The step between levels is 2^(1-b); the rounding error is uniform in +-half a step, which gives a
    full-scale sine an SNR of about 6.02 b + 1.76 dB.
    """
    waveform = _check_float(waveform)
    _check_bits(bits)
    scale = 2 ** (bits - 1)
    codes = torch.round(waveform.double() * scale).clamp(-scale, scale - 1)
    return codes.to(torch.int16 if bits <= 16 else torch.int64)


def dequantize(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Integer codes -> float32 samples: codes / 2^(b-1)."""
    _check_bits(bits)
    codes = validate.tensor("codes", codes, convert=True)
    if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
        raise ValueError(f"codes must be integer codes (e.g. from quantize), got dtype {codes.dtype}")
    return (codes.double() / 2 ** (bits - 1)).float()


def snr_db(signal: torch.Tensor, approximation: torch.Tensor) -> float:
    """Signal-to-noise ratio in dB: 10 log10(sum signal^2 / sum (signal - approximation)^2)."""
    signal = _check_float(signal, "signal")
    approximation = _check_float(approximation, "approximation")
    if signal.shape != approximation.shape:
        raise ValueError(f"signal and approximation must have the same shape, got {tuple(signal.shape)} "
                         f"and {tuple(approximation.shape)}")
    if not signal.abs().max() > 0:
        raise ValueError("signal must not be all zeros (its power is the numerator of the SNR)")
    noise = (signal.double() - approximation.double()).pow(2).sum()
    return 10 * math.log10(signal.double().pow(2).sum().item() / max(noise.item(), 1e-300))


# ----------------------------------------------------------------------------- the mel scale
def _check_scale(name: str, value, minimum: float) -> None:
    """A number or a float tensor, finite and >= minimum (a negative frequency or mel has no meaning here)."""
    if isinstance(value, torch.Tensor):
        validate.tensor(name, value, finite=True)
        if value.numel() and value.min() < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got a minimum of {value.min().item()}")
    else:
        validate.number(name, value, min=minimum)


def mel_scale(f_hz):
    """mel(f) = 1127 ln(1 + f / 700), f in Hz (a float or a tensor)."""
    _check_scale("f_hz", f_hz, 0.0)
    return 1127.0 * (torch.log1p(f_hz / 700.0) if isinstance(f_hz, torch.Tensor) else math.log1p(f_hz / 700.0))


def inverse_mel_scale(m):
    """f = 700 (exp(m / 1127) - 1), the inverse of `mel_scale`."""
    _check_scale("m", m, 0.0)
    return 700.0 * (torch.expm1(m / 1127.0) if isinstance(m, torch.Tensor) else math.expm1(m / 1127.0))


# ----------------------------------------------------------------------------- framing and filters
def frame_signal(waveform: torch.Tensor, win_length: int, hop_length: int) -> torch.Tensor:
    """Cut (..., T) into overlapping frames (..., frames, win_length).

    Frames start at sample 0 and every `hop_length` samples after, with no padding:
    frames = 1 + (T - win_length) // hop_length.
    """
    waveform = validate.tensor("waveform", waveform, convert=True)
    if waveform.dim() == 0:
        raise ValueError("waveform must have a time axis (..., T), got a 0-d tensor")
    validate.integer("win_length", win_length)
    validate.integer("hop_length", hop_length)
    if hop_length < 1:
        raise ValueError(f"hop_length must be >= 1 sample, got {hop_length}")
    if win_length < 1 or win_length > waveform.shape[-1]:
        raise ValueError(f"win_length={win_length} samples must be between 1 and the signal length {waveform.shape[-1]}")
    return waveform.unfold(-1, win_length, hop_length)  # (..., frames, win_length)


def window_function(name: str, length: int) -> torch.Tensor:
    """A periodic window as torch's window functions make it: 'hamming', 'hann' or 'rectangular'."""
    validate.choice("window", name, WINDOWS)
    validate.integer("length", length, min=1)
    if name == "hamming":
        return torch.hamming_window(length)  # 0.54 - 0.46 cos(2 pi n / N), periodic
    if name == "hann":
        return torch.hann_window(length)
    if name == "rectangular":
        return torch.ones(length)
    raise ValueError(f"window must be one of {WINDOWS}, got {name!r}")


def mel_filterbank(n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int) -> torch.Tensor:
    """Triangular filters evenly spaced on the mel scale (the lecture's Figure 16.7).

    Args:
        n_freqs: F, the number of DFT bins from 0 Hz to sample_rate / 2 (n_fft // 2 + 1).
        f_min, f_max: the band the filters cover, Hz.
        n_mels: M, the number of filters.
        sample_rate: Hz.
    Returns:
        (F, M): column m rises linearly from 0 at the (m)-th mel point to 1 at the (m+1)-th and falls back to
        0 at the (m+2)-th, over M + 2 points evenly spaced from mel(f_min) to mel(f_max).
    """
    validate.integer("n_freqs", n_freqs, min=2)
    validate.integer("n_mels", n_mels, min=1)
    validate.integer("sample_rate", sample_rate)
    f_min, f_max = validate.number("f_min", f_min), validate.number("f_max", f_max)
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if f_max > sample_rate / 2:
        raise ValueError(f"f_max={f_max} Hz is above the Nyquist frequency {sample_rate / 2} Hz")
    if not 0 <= f_min < f_max:
        raise ValueError(f"f_min must satisfy 0 <= f_min < f_max, got f_min={f_min}, f_max={f_max}")
    all_freqs = torch.linspace(0, sample_rate / 2, n_freqs, dtype=torch.float64)           # (F,) bin centres
    m_pts = torch.linspace(mel_scale(float(f_min)), mel_scale(float(f_max)), n_mels + 2, dtype=torch.float64)
    f_pts = inverse_mel_scale(m_pts)                                                        # (M+2,) Hz
    f_diff = f_pts[1:] - f_pts[:-1]                                                         # (M+1,)
    slopes = f_pts[None, :] - all_freqs[:, None]                                            # (F, M+2)
    rising = -slopes[:, :-2] / f_diff[:-1]                                                  # (F, M)
    falling = slopes[:, 2:] / f_diff[1:]                                                    # (F, M)
    fb = torch.clamp(torch.minimum(rising, falling), min=0.0).float()                       # (F, M)
    empty = (fb.amax(0) == 0).nonzero().flatten()
    if len(empty):
        raise ValueError(f"n_mels={n_mels} is too many for {n_freqs} frequency bins between {f_min} and {f_max} Hz: "
                         f"filter(s) {empty.tolist()[:5]} cover no bin; use fewer mel bins or a longer n_fft")
    return fb


def log_mel_spectrogram(waveform: torch.Tensor, sample_rate: int, win_ms: float = 25.0, hop_ms: float = 10.0,
                        n_mels: int = 80, window: str = "hamming", n_fft: int | None = None, f_min: float = 0.0,
                        f_max: float | None = None, eps: float = 1e-10) -> torch.Tensor:
    """The lecture's pipeline: frame -> window -> |DFT|^2 -> mel filter bank -> natural log.

    Args:
        waveform: (..., T) float samples.
        sample_rate: Hz.
        win_ms, hop_ms: window length and stride in ms (25 and 10: 400 and 160 samples at 16 kHz).
        n_mels: M, mel bins per frame.
        window: 'hamming' (periodic), 'hann' or 'rectangular'.
        n_fft: DFT size; defaults to the window length; a longer one zero-pads each windowed frame.
        f_min, f_max: band of the filter bank in Hz (f_max defaults to sample_rate / 2).
        eps: floor of the mel power before the log.
    Returns:
        (..., M, frames) log mel power, frames = 1 + (T - win) // hop.
    """
    waveform = _check_float(waveform)
    validate.integer("sample_rate", sample_rate)
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    win_ms, hop_ms = validate.number("win_ms", win_ms, 0.0, strict_min=True), validate.number("hop_ms", hop_ms)
    validate.integer("n_mels", n_mels, min=1)
    validate.choice("window", window, WINDOWS)
    validate.number("eps", eps, 0.0, strict_min=True)
    if n_fft is not None:
        validate.integer("n_fft", n_fft, min=1)
    if f_max is not None:
        validate.number("f_max", f_max)
    win, hop = round(sample_rate * win_ms / 1000), round(sample_rate * hop_ms / 1000)
    if hop < 1:
        raise ValueError(f"hop_ms={hop_ms} gives a hop of {hop} samples at {sample_rate} Hz; it must be >= 1")
    if win < 1 or win > waveform.shape[-1]:
        raise ValueError(f"win_ms={win_ms} gives a window of {win} samples, longer than the signal "
                         f"({waveform.shape[-1]} samples)")
    n_fft = n_fft or win
    if n_fft < win:
        raise ValueError(f"n_fft={n_fft} must be at least the window length {win}")
    f_max = sample_rate / 2 if f_max is None else f_max
    w = window_function(window, win)
    frames = frame_signal(waveform, win, hop) * w                     # (..., frames, win)
    spectrum = torch.fft.rfft(frames, n=n_fft)                        # (..., frames, F)
    power = spectrum.real.pow(2) + spectrum.imag.pow(2)               # (..., frames, F)
    fb = mel_filterbank(n_fft // 2 + 1, f_min, f_max, n_mels, sample_rate)  # (F, M)
    mel = power @ fb                                                   # (..., frames, M)
    return torch.log(torch.clamp(mel, min=eps)).transpose(-1, -2)     # (..., M, frames)
