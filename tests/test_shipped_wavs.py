"""Shipped WAV files are verified where they are read: audio.read_wav checks files under data/ against
data/MANIFEST (each file hashed once per process). Tampering happens on copies in a temporary data/ folder,
never on the shipped files."""
import shutil
import struct
import time
import wave

import pytest
import torch

from utils import DATA_DIR, REPO_ROOT, audio, checkpoints

SPEECH = DATA_DIR / "speech"
WAV = "baby_en-us-f2_p65_s140.wav"


def test_every_shipped_wav_is_listed_verified_and_read_fast():
    manifest = checkpoints.read_manifest()
    wavs = sorted(SPEECH.glob("*.wav"))
    assert len(wavs) > 100 and all(f"data/speech/{p.name}" in manifest for p in wavs)
    start = time.perf_counter()
    for p in wavs:
        x, sr = audio.read_wav(p)
        assert sr == 16000 and x.shape[0] == 1
    first = time.perf_counter() - start
    start = time.perf_counter()
    for p in wavs:  # the second pass reuses the hashes of the first
        audio.read_wav(p)
    assert time.perf_counter() - start < max(first, 1.0)


@pytest.fixture
def fake_data(tmp_path, monkeypatch):
    """A repository root in tmp_path whose data/speech holds one copy of a shipped WAV, listed in its MANIFEST."""
    data = tmp_path / "data"
    (data / "speech").mkdir(parents=True)
    monkeypatch.setattr(audio, "DATA_DIR", data)
    monkeypatch.setattr(checkpoints, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(checkpoints, "MANIFEST", data / "MANIFEST")

    def ship(name: str = WAV, tamper=None):
        dst = data / "speech" / name
        shutil.copy(SPEECH / WAV, dst)
        (data / "MANIFEST").write_text(f"{checkpoints.sha256(SPEECH / WAV)}  data/speech/{name}\n")
        if tamper is not None:
            raw = bytearray(dst.read_bytes())
            tamper(raw)
            dst.write_bytes(bytes(raw))
        return dst

    return ship


def test_an_untouched_copy_reads_like_the_original(fake_data):
    x, sr = audio.read_wav(fake_data("ok.wav"))
    y, sr_y = audio.read_wav(SPEECH / WAV)
    assert sr == sr_y and torch.equal(x, y)


def flip_sample(raw: bytearray) -> None:
    raw[len(raw) // 2] ^= 0x01  # one bit of one 16-bit sample in the middle of the data chunk


def change_rate(raw: bytearray) -> None:
    raw[24:28] = struct.pack("<I", 22050)  # the fmt chunk's sample rate


@pytest.mark.parametrize("tamper", [flip_sample, change_rate], ids=["flipped sample", "header sample rate"])
def test_a_tampered_shipped_wav_is_refused_naming_the_file(fake_data, tamper):
    path = fake_data(f"tampered_{tamper.__name__}.wav", tamper)
    with pytest.raises(ValueError, match=rf"sha256 mismatch for data/speech/{path.name}.*scripts/make_speech_data.py"):
        audio.read_wav(path)


def test_a_missing_shipped_wav_names_the_script_that_makes_it(fake_data):
    path = fake_data("gone.wav")
    path.unlink()
    with pytest.raises(FileNotFoundError, match=r"data/speech/gone.wav.*scripts/make_speech_data.py"):
        audio.read_wav(path)


def write_header(path, bits: int, width: int) -> None:
    """A PCM WAV whose fmt chunk claims `bits` per sample in `width` bytes per sample."""
    data = bytes(width * 8)
    fmt = struct.pack("<HHIIHH", 1, 1, 16000, 16000 * width, width, bits)
    path.write_bytes(b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
                     + b"data" + struct.pack("<I", len(data)) + data)


@pytest.mark.parametrize("bits,width", [(17, 3), (24, 3), (32, 4)])
def test_the_bit_depth_is_reported_as_the_header_states(tmp_path, bits, width):
    path = tmp_path / f"b{bits}.wav"
    write_header(path, bits, width)
    with pytest.raises(ValueError, match=rf"b{bits}.wav has {bits}-bit samples"):
        audio.read_wav(path)


def test_12_bit_samples_in_16_bit_words_are_read(tmp_path):
    write_header(tmp_path / "b12.wav", 12, 2)
    x, sr = audio.read_wav(tmp_path / "b12.wav")
    assert sr == 16000 and x.shape == (1, 8)


def test_a_file_outside_data_is_read_without_a_manifest(tmp_path):
    audio.write_wav(tmp_path / "mine.wav", torch.zeros(1, 160), 16000)
    x, sr = audio.read_wav(tmp_path / "mine.wav")
    assert sr == 16000 and x.shape == (1, 160)
    with wave.open(str(tmp_path / "mine.wav")) as w:
        assert w.getsampwidth() == 2


def test_each_file_is_hashed_once_per_process(tmp_path, monkeypatch):
    calls = []
    real = checkpoints.hashlib.sha256
    monkeypatch.setattr(checkpoints.hashlib, "sha256", lambda *a: calls.append(1) or real(*a))
    path = tmp_path / "once.bin"
    path.write_bytes(b"abc")
    digest = checkpoints.sha256(path)
    assert checkpoints.sha256(path) == digest and len(calls) == 1
    assert REPO_ROOT.exists()
