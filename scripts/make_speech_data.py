"""Synthesize the spoken-word data set in data/speech/ with Debian's espeak-ng (apt-get install espeak-ng).

The ten Speech Commands keywords plus "baby" (the lecture's [iy] example), in 8 voices x 2 pitches x
2 speeds, resampled to 16 kHz, 16-bit mono PCM WAV, 1 s per word clip (the word centred); and two short
sentences in two voices. The test split's voices are never heard in training. Writes data/speech/metadata.csv
(file, word, voice, pitch, speed, split) and updates data/MANIFEST. Notebooks and tests only read the files.
"""
import csv
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torchaudio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from utils import DATA_DIR, audio  # noqa: E402

WORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "baby"]
SENTENCES = {"sentence_baby": "The baby sees the sea.", "sentence_commands": "Go left, then stop, then go right."}
TRAIN_VOICES = ["en-us+m1", "en-us+f2", "en+m3", "en+f4", "en-gb-scotland+m2", "en-029+f1"]  # ("en-gb+f4" would ignore its variant)
TEST_VOICES = ["en-gb-x-rp+m7", "en-gb-x-gbcwmd+f5"]
PITCHES = [35, 65]     # espeak-ng -p, 0-99
SPEEDS = [140, 175]    # espeak-ng -s, words per minute
SR = 16000
OUT = DATA_DIR / "speech"


def synthesize(text: str, voice: str, pitch: int, speed: int) -> torch.Tensor:
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "out.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed), "-w", str(wav), text], check=True)
        x, sr = audio.read_wav(wav)
    return torchaudio.functional.resample(x[0], sr, SR)  # (T,) at 16 kHz


def centre_in_one_second(x: torch.Tensor) -> torch.Tensor:
    """Cut or pad to exactly 1 s with the voiced part (frames above 2% of the peak energy) in the middle."""
    energy = audio.frame_signal(x, 160, 160).pow(2).mean(-1)  # (frames,) 10 ms frames
    voiced = (energy > 0.02 * energy.max()).nonzero().flatten()
    start, end = voiced[0].item() * 160, (voiced[-1].item() + 1) * 160
    centre = (start + end) // 2
    padded = torch.nn.functional.pad(x, (SR, SR))
    return padded[centre + SR - SR // 2: centre + SR + SR // 2]


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    rows = []
    for split, voices in (("train", TRAIN_VOICES), ("test", TEST_VOICES)):
        for voice in voices:
            for word in WORDS:
                for pitch in PITCHES:
                    for speed in SPEEDS:
                        name = f"{word}_{voice.replace('+', '-')}_p{pitch}_s{speed}.wav"
                        clip = centre_in_one_second(synthesize(word, voice, pitch, speed))
                        audio.write_wav(OUT / name, clip * (0.7 / clip.abs().max()), SR)
                        rows.append((name, word, voice, pitch, speed, split))
    for name, text in SENTENCES.items():
        for voice in (TRAIN_VOICES[0], TRAIN_VOICES[1]):
            x = synthesize(text, voice, 50, 150)
            fname = f"{name}_{voice.replace('+', '-')}.wav"
            audio.write_wav(OUT / fname, x * (0.7 / x.abs().max()), SR)
            rows.append((fname, text, voice, 50, 150, "sentence"))
    with open(OUT / "metadata.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "word", "voice", "pitch", "speed", "split"])
        w.writerows(rows)
    size = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {len(rows)} files to data/speech ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
