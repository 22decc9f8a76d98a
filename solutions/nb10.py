"""Notebook 10 (the Audio Spectrogram Transformer, speech into the LM): reference answers. Open after you tried."""
import torch
import torch.nn.functional as F

from . import Exercise, register


def _token_counts_by_running_the_models():
    # (a) counted with transformers' own AST embedding (its get_shape), (b) by running our log-mel and windows
    from transformers import ASTConfig
    from transformers.models.audio_spectrogram_transformer.modeling_audio_spectrogram_transformer import ASTEmbeddings

    from utils import audio
    from utils import speech_lm as sl

    cfg = ASTConfig(num_mel_bins=128, max_length=1024, frequency_stride=10, time_stride=12)
    f, t = ASTEmbeddings.get_shape(None, cfg)
    spec = audio.log_mel_spectrogram(torch.zeros(1, 12 * 16000), n_mels=sl.N_MELS, **sl.MEL)     # (1, 40, T)
    return (f * t + 2, sl.frame_windows(spec).shape[1])


register(Exercise(
    key="10.token_counts", kind="value",
    expected=_token_counts_by_running_the_models,
    solution=lambda: (((128 - 16) // 10 + 1) * ((1024 - 16) // 12 + 1) + 2,
                      1 + ((1 + (12 * 16000 - 400) // 160) - 98) // 20),
    wrong=[(1020, 56), (1022, 60), (1022, 55), (12 * 86 + 2, 56), (1212 + 2, 56), (1022, 57)],
    notes="(a) (M - P) // stride + 1 per axis: 12 x 85 = 1020 patches + 2 = 1022; (b) 1 + (192000 - 400) // 160 "
          "= 1198 frames, 1 + (1198 - 98) // 20 = 56 windows, one audio token each.",
))


def _cdpo_as_trl_writes_it(pc, pr, rc, rr, beta, eps):
    # TRL's DPOTrainer, loss_type="sigmoid" with label_smoothing: logsigmoid on both sides
    logits = (pc - pr) - (rc - rr)
    return (-F.logsigmoid(beta * logits) * (1 - eps) - F.logsigmoid(-beta * logits) * eps).mean()


def _cdpo_solution(pc, pr, rc, rr, beta, eps):
    z = beta * ((pc - rc) - (pr - rr))
    return ((1 - eps) * torch.log1p(torch.exp(-z)) + eps * torch.log1p(torch.exp(z))).mean()


def _cdpo_cases():
    g = torch.Generator().manual_seed(10)
    cases = [(torch.tensor([-1.0, -4.0]), torch.tensor([-3.0, -2.0]), torch.tensor([-2.0, -3.0]),
              torch.tensor([-2.0, -2.5]), 0.1, 0.0)]
    for B, beta, eps in [(5, 0.5, 0.1), (8, 0.1, 0.3), (3, 2.0, 0.25), (4, 1.0, 0.5)]:
        pc, pr, rc, rr = (-10 * torch.rand(B, generator=g) for _ in range(4))
        cases.append((pc, pr, rc, rr, beta, eps))
    return cases


register(Exercise(
    key="10.cdpo_loss", kind="function",
    expected=_cdpo_as_trl_writes_it,
    solution=_cdpo_solution,
    cases=_cdpo_cases,
    atol=1e-5,
    wrong=[lambda pc, pr, rc, rr, beta, eps: torch.log1p(torch.exp(-beta * ((pc - rc) - (pr - rr)))).mean(),  # no eps
           lambda pc, pr, rc, rr, beta, eps: ((1 - eps) * torch.log1p(torch.exp(beta * ((pc - rc) - (pr - rr))))
                                              + eps * torch.log1p(torch.exp(-beta * ((pc - rc) - (pr - rr))))).mean(),
           lambda pc, pr, rc, rr, beta, eps: ((1 - eps) * torch.log1p(torch.exp(-beta * (pc - pr)))
                                              + eps * torch.log1p(torch.exp(beta * (pc - pr)))).mean(),  # no reference
           lambda pc, pr, rc, rr, beta, eps: ((1 - eps) * torch.log1p(torch.exp(-beta * ((pc - rc) - (pr - rr))))
                                              + eps * torch.log1p(torch.exp(beta * ((pc - rc) - (pr - rr))))).sum()],
    notes="-(1 - eps) log sigma(z) - eps log sigma(-z), z = beta [(log pi(yw) - log ref(yw)) - (log pi(yl) - "
          "log ref(yl))]; at z = 0 it is log 2 whatever eps, and its gradient in z is -(1 - 2 eps) / 2: smoothing "
          "weakens the push (eps = 0.5 stops it).",
))


def _qwen_tokens_from_transformers():
    # transformers' Qwen2AudioEncoder computes the LLM's audio tokens from the clip's own frames this way
    from transformers.models.qwen2_audio.modeling_qwen2_audio import Qwen2AudioEncoder
    frames = torch.tensor([int(12.5 * 16000) // 160])                          # the feature attention mask's length
    return int(Qwen2AudioEncoder._get_feat_extract_output_lengths(None, frames)[1])


register(Exercise(
    key="10.qwen_audio_tokens", kind="value",
    expected=_qwen_tokens_from_transformers,
    solution=lambda: ((1250 - 1) // 2 + 1 - 2) // 2 + 1,
    wrong=[313, 625, 750, 1250 // 4 + 1, 311],
    notes="1250 frames of 10 ms -> (1250 + 2 - 3) // 2 + 1 = 625 after the convolution -> (625 - 2) // 2 + 1 = 312 "
          "after the pooling; 25 tokens a second, one per 40 ms, rounded down at the end.",
))
