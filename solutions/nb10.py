"""Notebook 10 (the Audio Spectrogram Transformer, audio into the LM): reference answers. Open after you tried."""
import math

import torch
import torch.nn as nn

from utils import audio_transformer as at

from . import Exercise, register


def _ast_tokens_from_transformers():
    # counted with transformers' own AST embedding (its get_shape), independently of ast_patch_grid
    from transformers import ASTConfig
    from transformers.models.audio_spectrogram_transformer.modeling_audio_spectrogram_transformer import ASTEmbeddings

    def tokens(stride):
        cfg = ASTConfig(num_mel_bins=128, max_length=1024, frequency_stride=stride, time_stride=stride)
        f, t = ASTEmbeddings.get_shape(None, cfg)
        return f * t + 2
    return (tokens(10), tokens(16))


register(Exercise(
    key="10.ast_tokens", kind="value",
    expected=_ast_tokens_from_transformers,
    solution=lambda: (((128 - 16) // 10 + 1) * ((1024 - 16) // 10 + 1) + 2, (128 // 16) * (1024 // 16) + 2),
    wrong=[(1212, 512), (1214, 512), (1212, 514), (12 * 102 + 2, 514), (1310, 514)],
    notes="(M - P) // stride + 1 per axis: 12 x 101 = 1212 patches + 2 tokens; without overlap 8 x 64 + 2 = 514, "
          "2.4 times fewer.",
))


def _dpo_solution(pc, pr, rc, rr, beta):
    z = beta * ((pc - rc) - (pr - rr))
    return torch.log1p(torch.exp(-z)).mean()                # -log sigmoid(z) = log(1 + e^-z)


def _dpo_cases():
    g = torch.Generator().manual_seed(10)
    cases = [(torch.tensor([-1.0, -4.0]), torch.tensor([-3.0, -2.0]), torch.tensor([-2.0, -3.0]),
              torch.tensor([-2.0, -2.5]), 0.1)]
    for B, beta in [(5, 0.5), (8, 0.1), (3, 2.0)]:
        pc, pr, rc, rr = (-10 * torch.rand(B, generator=g) for _ in range(4))
        cases.append((pc, pr, rc, rr, beta))
    return cases


register(Exercise(
    key="10.dpo_loss", kind="function",
    expected=lambda pc, pr, rc, rr, beta: at.dpo_loss(pc, pr, rc, rr, beta=beta),
    solution=_dpo_solution,
    cases=_dpo_cases,
    atol=1e-5,
    wrong=[lambda pc, pr, rc, rr, beta: torch.log1p(torch.exp(-beta * (pc - pr))).mean(),          # no reference
           lambda pc, pr, rc, rr, beta: torch.log1p(torch.exp(beta * ((pc - rc) - (pr - rr)))).mean(),  # sign
           lambda pc, pr, rc, rr, beta: torch.log1p(torch.exp(-((pc - rc) - (pr - rr)))).mean(),  # no beta
           lambda pc, pr, rc, rr, beta: torch.log1p(torch.exp(-beta * ((pc - rc) - (pr - rr)))).sum()],  # sum
    notes="L = -log sigma(beta [(log pi(yw) - log ref(yw)) - (log pi(yl) - log ref(yl))]), averaged over pairs.",
))


def _qwen_tokens_by_running_layers():
    # 30 s of 10 ms frames through a stride-2 convolution (Whisper's second conv) and a stride-2 average pooling
    frames = torch.zeros(1, 1, 30 * 100)
    x = nn.Conv1d(1, 1, kernel_size=3, stride=2, padding=1)(frames)
    return nn.AvgPool1d(2, 2)(x).shape[-1]


register(Exercise(
    key="10.qwen_audio_tokens", kind="value",
    expected=_qwen_tokens_by_running_layers,
    solution=lambda: 30 * 1000 // 10 // 2 // 2,
    wrong=[1500, 3000, 375, 749, 30 * 1000 // 40 + 1],
    notes="3000 frames of 10 ms -> 1500 after the stride-2 conv -> 750 tokens of 40 ms each.",
))
