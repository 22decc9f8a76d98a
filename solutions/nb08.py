"""Notebook 08 (video: uniform frame sampling and a Perceiver resampler): reference answers. Open after you tried."""
import math

import torch

from utils import video

from . import Exercise, register


def _uniform_solution(num_frames, k=64):
    if num_frames < k:
        return torch.arange(num_frames)
    return torch.tensor([math.floor((i + 0.5) * num_frames / k) for i in range(k)])


register(Exercise(
    key="08.uniform_frame_indices", kind="function",
    expected=video.uniform_frame_indices,
    solution=_uniform_solution,
    cases=lambda: [(300, 64), (64, 64), (40, 64), (1000, 64), (97, 7), (5, 8), (1, 1), (129, 64)],
    wrong=[lambda n, k=64: torch.linspace(0, n - 1, min(n, k)).long(),                      # includes both ends
           lambda n, k=64: torch.arange(min(n, k)) * n // k,                                # segment starts
           lambda n, k=64: torch.tensor([round((i + 0.5) * n / k) for i in range(k)]),     # rounds; k even if n < k
           lambda n, k=64: (torch.arange(k) * n // k + n // (2 * k)).clamp(max=n - 1)],     # floor(n/2k) offset
    notes="centre of each of k equal segments, floor((i + 0.5) T / k); short clips keep every frame.",
))


def _llama_tokens_by_counting():
    # measured by merging tensors of Llama 3.2's sizes, independently of the arithmetic a student does
    patches = (224 // 14) ** 2
    frames = torch.zeros(1, 64, patches, 1)
    merged = frames.reshape(1, 2, 32, patches, 1)[:, :, 0]                # one frame's worth of tokens per chunk
    return (frames.shape[1] * frames.shape[2], merged.shape[1] * merged.shape[2])


register(Exercise(
    key="08.llama_video_tokens", kind="value",
    expected=_llama_tokens_by_counting,
    solution=lambda: (64 * 16 * 16, 2 * 16 * 16),
    wrong=[(64 * 224, 2 * 224), (64 * 14 * 14, 2 * 14 * 14), (64 * 256, 256), (64 * 257, 2 * 257), (16384, 32)],
    notes="224 / 14 = 16 patches a side, 256 per frame: 64 x 256 = 16,384 tokens, merged 2 x 256 = 512 (32x fewer).",
))


def _apparent_step(v, num_frames, k, canvas=32):
    step = v * num_frames / k
    return (step + canvas / 2) % canvas - canvas / 2


register(Exercise(
    key="08.apparent_step", kind="function",
    expected=_apparent_step,
    solution=lambda v, T, k, canvas=32: math.remainder(v * T / k, canvas) if math.remainder(v * T / k, canvas) != canvas / 2
    else -canvas / 2,
    cases=lambda: [(0.9, 256, 64, 32), (0.9, 256, 8, 32), (1.0, 256, 8, 32), (1.5, 240, 16, 32), (0.3, 100, 10, 32),
                   (2.0, 120, 4, 24), (0.5, 64, 64, 32)],
    atol=1e-9,
    wrong=[lambda v, T, k, c=32: v * T / k,                                  # no wrap
           lambda v, T, k, c=32: (v * T / k) % c,                            # wraps but never negative
           lambda v, T, k, c=32: (v * k / T + c / 2) % c - c / 2],           # stride upside down
    notes="the true step v T / k, folded into [-canvas/2, canvas/2): a step near a whole canvas looks like a small step back.",
))
