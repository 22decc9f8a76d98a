"""utils.audio against torchaudio: mel scale, filter bank, log-mel spectrogram; WAV reading; bad inputs."""
import math
import struct
import wave

import numpy as np
import pytest
import torch
import torchaudio

from utils import audio

RATES = [8000, 16000, 22050, 44100]
WINDOWS = {"hamming": torch.hamming_window, "hann": torch.hann_window, "rectangular": lambda n: torch.ones(n)}


def test_mel_scale_is_the_lectures_formula_and_inverts():
    f = torch.tensor([0.0, 700.0, 1000.0, 8000.0])
    torch.testing.assert_close(audio.mel_scale(f), 1127 * torch.log(1 + f / 700))
    torch.testing.assert_close(audio.inverse_mel_scale(audio.mel_scale(f)), f, rtol=1e-5, atol=1e-3)
    assert abs(audio.mel_scale(1000.0) - 1000.0) < 0.1  # 1000 Hz is about 1000 mel
    # torchaudio's htk scale writes 2595 log10(1 + f/700): the same curve
    torch.testing.assert_close(audio.mel_scale(f), 2595 * torch.log10(1 + f / 700), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("sr", RATES)
@pytest.mark.parametrize("n_mels,f_min,f_max", [(40, 0.0, None), (80, 0.0, None), (64, 50.0, 4000.0), (23, 300.0, 3400.0)])
def test_mel_filterbank_matches_torchaudio(sr, n_mels, f_min, f_max):
    n_fft = int(sr * 0.025) if sr != 8000 else 256
    n_freqs = n_fft // 2 + 1
    f_max = f_max if f_max is not None else sr / 2
    ours = audio.mel_filterbank(n_freqs, f_min, f_max, n_mels, sr)
    ref = torchaudio.functional.melscale_fbanks(n_freqs, f_min, f_max, n_mels, sr, norm=None, mel_scale="htk")
    assert ours.shape == (n_freqs, n_mels)
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)


def test_frame_signal():
    x = torch.arange(10.0)
    frames = audio.frame_signal(x, 4, 3)
    assert frames.tolist() == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    assert audio.frame_signal(torch.randn(2, 16000), 400, 160).shape == (2, 1 + (16000 - 400) // 160, 400)


def speechlike(sr: int, seconds: float = 0.6, seed: int = 0) -> torch.Tensor:
    """Harmonics of a gliding pitch plus noise: energy over the whole band, like voiced speech."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(sr * seconds)) / sr
    f0 = 120 + 60 * t
    phase = 2 * math.pi * torch.cumsum(f0, 0) / sr
    x = sum(torch.sin(k * phase) / k for k in range(1, 30) if k * 180 < sr / 2)
    return (0.3 * x + 0.05 * torch.randn(len(t), generator=g)).float()


def reference_log_mel(x, sr, win, hop, n_mels, window, f_min, f_max, eps):
    spec = torchaudio.transforms.MelSpectrogram(sr, n_fft=win, win_length=win, hop_length=hop, window_fn=WINDOWS[window],
                                                power=2.0, center=False, n_mels=n_mels, mel_scale="htk",
                                                f_min=f_min, f_max=f_max)(x)
    return spec, torch.log(torch.clamp(spec, min=eps))


@pytest.mark.parametrize("sr", RATES)
@pytest.mark.parametrize("window", list(WINDOWS))
@pytest.mark.parametrize("n_mels,f_min,f_max", [(80, 0.0, None), (40, 100.0, 3500.0)])
@pytest.mark.parametrize("signal", ["speech", "noise"])
def test_log_mel_matches_torchaudio(sr, window, n_mels, f_min, f_max, signal):
    x = speechlike(sr) if signal == "speech" else torch.randn(int(sr * 0.5), generator=torch.Generator().manual_seed(1))
    if sr == 8000 and n_mels == 80:
        n_mels = 40  # 80 filters on a 200-sample window at 8 kHz leave some filters empty
    ours = audio.log_mel_spectrogram(x, sr, n_mels=n_mels, window=window, f_min=f_min, f_max=f_max)
    win, hop = round(sr * 0.025), round(sr * 0.010)
    power, ref = reference_log_mel(x, sr, win, hop, n_mels, window, f_min, f_max if f_max else sr / 2, 1e-10)
    assert ours.shape == ref.shape == (n_mels, 1 + (len(x) - win) // hop)
    # compared where the reference power exceeds 1e-6 and lies within 60 dB of its frame's strongest bin
    valid = (power > 1e-6) & (power >= power.amax(0, keepdim=True) * 1e-6)
    assert valid.float().mean() > 0.5
    err = (ours - ref).abs()[valid].max().item()
    assert err <= 1e-2, err


def test_log_mel_batch_and_defaults():
    x = torch.stack([speechlike(16000, seed=s) for s in range(3)])  # (B, T)
    out = audio.log_mel_spectrogram(x, 16000)
    frames = 1 + (x.shape[-1] - 400) // 160
    assert out.shape == (3, 80, frames) and out.dtype == torch.float32
    torch.testing.assert_close(out[1], audio.log_mel_spectrogram(x[1], 16000))


def test_log_mel_with_longer_fft_zero_pads_each_frame():
    x = speechlike(16000)
    a = audio.log_mel_spectrogram(x, 16000, n_fft=512)
    assert a.shape[0] == 80 and a.shape[1] == 1 + (len(x) - 400) // 160


@pytest.mark.parametrize("kwargs,match", [
    (dict(sample_rate=0), "sample_rate"), (dict(sample_rate=-16000), "sample_rate"),
    (dict(win_ms=2000.0), "win"), (dict(hop_ms=0.0), "hop"), (dict(f_max=9000.0), "f_max"),
    (dict(f_min=4000.0, f_max=3000.0), "f_min"), (dict(n_mels=300), "n_mels"), (dict(window="kaiser"), "window"),
])
def test_log_mel_bad_inputs(kwargs, match):
    args = dict(waveform=torch.randn(16000), sample_rate=16000)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        audio.log_mel_spectrogram(**args)


def test_log_mel_refuses_integer_samples():
    with pytest.raises(ValueError, match="float"):
        audio.log_mel_spectrogram(torch.randint(-100, 100, (16000,), dtype=torch.int16), 16000)


def test_filterbank_bad_inputs():
    with pytest.raises(ValueError, match="n_mels"):
        audio.mel_filterbank(201, 0.0, 8000.0, 200, 16000)
    with pytest.raises(ValueError, match="f_max"):
        audio.mel_filterbank(201, 0.0, 9000.0, 40, 16000)
    with pytest.raises(ValueError, match="sample_rate"):
        audio.mel_filterbank(201, 0.0, 8000.0, 40, 0)


def test_frame_signal_bad_inputs():
    with pytest.raises(ValueError, match="hop_length"):
        audio.frame_signal(torch.randn(100), 10, 0)
    with pytest.raises(ValueError, match="win_length"):
        audio.frame_signal(torch.randn(100), 101, 10)


@pytest.mark.parametrize("bits", [8, 16])
def test_quantization_snr_is_6_02_b_plus_1_76(bits):
    sr = 16000
    t = torch.arange(sr * 2, dtype=torch.float64) / sr
    x = torch.sin(2 * math.pi * 441.3 * t) * audio.full_scale(bits)
    codes = audio.quantize(x, bits)
    assert codes.dtype == torch.int16 and codes.long().abs().max().item() <= 2 ** (bits - 1)
    y = audio.dequantize(codes, bits)
    snr = audio.snr_db(x, y)
    assert abs(snr - (6.02 * bits + 1.76)) <= 1.0, snr


def test_quantize_bad_inputs():
    with pytest.raises(ValueError, match="bits"):
        audio.quantize(torch.zeros(4), 1)
    with pytest.raises(ValueError, match="float"):
        audio.quantize(torch.zeros(4, dtype=torch.int32), 8)


def write_pcm(path, data: np.ndarray, sr: int, width: int):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(data.shape[0])
        w.setsampwidth(width)
        w.setframerate(sr)
        w.writeframes(data.T.astype("<i2" if width == 2 else "u1").tobytes())


@pytest.mark.parametrize("channels", [1, 2])
def test_read_wav_16_bit(tmp_path, channels):
    data = (np.random.default_rng(0).uniform(-1, 1, (channels, 1000)) * 32767).astype(np.int16)
    write_pcm(tmp_path / "a.wav", data, 16000, 2)
    x, sr = audio.read_wav(tmp_path / "a.wav")
    assert sr == 16000 and x.shape == (channels, 1000) and x.dtype == torch.float32
    torch.testing.assert_close(x, torch.from_numpy(data / 32768.0).float())


def test_read_wav_8_bit_is_unsigned(tmp_path):
    data = np.array([[0, 128, 255]], dtype=np.uint8)
    write_pcm(tmp_path / "b.wav", data, 8000, 1)
    x, sr = audio.read_wav(tmp_path / "b.wav")
    torch.testing.assert_close(x, torch.tensor([[-1.0, 0.0, 127 / 128]]))


def test_write_then_read_round_trip(tmp_path):
    x = torch.sin(torch.arange(800) / 10.0)[None] * 0.5
    audio.write_wav(tmp_path / "c.wav", x, 8000)
    y, sr = audio.read_wav(tmp_path / "c.wav")
    assert sr == 8000 and (y - x).abs().max() < 1 / 32768 + 1e-6


def test_read_wav_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        audio.read_wav(tmp_path / "missing.wav")
    # a 32-bit float WAV (format 3) is not PCM
    header = b"RIFF" + struct.pack("<I", 36 + 8) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 3, 1, 16000, 64000, 4, 32)
    (tmp_path / "float.wav").write_bytes(header + b"data" + struct.pack("<I", 8) + b"\x00" * 8)
    with pytest.raises(ValueError, match="PCM"):
        audio.read_wav(tmp_path / "float.wav")
    data = (np.zeros((1, 1000))).astype(np.int16)
    write_pcm(tmp_path / "t.wav", data, 16000, 2)
    raw = (tmp_path / "t.wav").read_bytes()
    (tmp_path / "t.wav").write_bytes(raw[:-500])
    with pytest.raises(ValueError, match="truncated"):
        audio.read_wav(tmp_path / "t.wav")
