"""Notebook 09 (speech: from a waveform to log-mel vectors): reference answers. Open after you tried."""
import torch

from utils import audio

from . import Exercise, register


def _frames_and_window():
    # counted by framing a real 30 s signal, independently of the formula a student uses
    frames = audio.frame_signal(torch.zeros(30 * 16000), 400, 160).shape[0]
    return (frames, 44100 * 0.025)  # 1102.5 samples: 1102 and 1103 are both right (atol 0.5)


register(Exercise(
    key="09.frames_and_window", kind="value",
    expected=_frames_and_window,
    solution=lambda: (1 + (30 * 16000 - 400) // 160, round(44100 * 0.025)),
    atol=0.5,  # the window is 1102.5 samples: rounding half up (1103) and half to even (1102) are both right
    wrong=[(3000, 1102), (2940, 1102), (2997, 1103), (2998, 1100), (2998, 1104), (2998, 441)],  # 2940 = 30 x 98
    notes="frames = 1 + floor((T - win) / hop) = 1 + (480000 - 400) // 160; 25 ms at 44.1 kHz is 1102.5 samples.",
))


register(Exercise(
    key="09.inverse_mel", kind="function",
    expected=audio.inverse_mel_scale,
    solution=lambda m: 700 * (torch.exp(m / 1127) - 1),
    cases=lambda: [(torch.tensor([0.0, 500.0, 1000.0, 2840.0]),), (torch.linspace(0, 3000, 31, dtype=torch.float64),)],
    atol=1e-2, rtol=1e-5,  # Hz; float32 rounding at 8 kHz is about 1e-3 Hz
    wrong=[lambda m: 700 * (torch.exp(m / 2595) - 1),       # mixes the log10 constant with the natural log
           lambda m: 700 * torch.exp(m / 1127),             # forgets the -1
           lambda m: 1127 * torch.log(1 + m / 700)],        # the forward mel scale, not its inverse
    notes="solve m = 1127 ln(1 + f/700) for f: f = 700 (e^(m/1127) - 1).",
))


register(Exercise(
    key="09.hamming", kind="function",
    expected=lambda N: torch.hamming_window(N, dtype=torch.float64),  # periodic, as the pipeline uses it
    solution=lambda N: 0.54 - 0.46 * torch.cos(2 * torch.pi * torch.arange(N, dtype=torch.float64) / N),
    cases=lambda: [(400,), (512,), (7,)],
    atol=1e-6,
    wrong=[lambda N: 0.54 - 0.46 * torch.cos(2 * torch.pi * torch.arange(N) / (N - 1)),  # symmetric window
           lambda N: 0.5 - 0.5 * torch.cos(2 * torch.pi * torch.arange(N) / N),           # Hann
           lambda N: 0.54 + 0.46 * torch.cos(2 * torch.pi * torch.arange(N) / N),         # sign flipped
           lambda N: torch.ones(N)],                                                      # rectangular
    notes="w[n] = a - b cos(2 pi n / N) with w[0] = a - b = 0.08 and w[N/2] = a + b = 1, so a = 0.54, b = 0.46: "
          "w[n] = 0.54 - 0.46 cos(2 pi n / N) for n = 0..N-1 (periodic: w would repeat at n = N); dividing by "
          "N - 1 gives the symmetric window of filter design, which differs.",
))
