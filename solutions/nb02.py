"""Notebook 02 (the Vision Transformer): reference answers. Open after you tried."""
import torch

from utils import vit

from . import Exercise, register


def _count_block_params(dim: int, mlp_dim: int) -> int:
    # counted on real modules, independently of the formula a student derives
    return sum(p.numel() for p in vit.EncoderBlock(dim, 4, mlp_dim).parameters())


def _block_params_formula(D: int, M: int) -> int:
    # qkv (D, 3D) + bias, output projection (D, D) + bias, MLP (D, M) + bias and (M, D) + bias, 2 LayerNorms
    return (3 * D * D + 3 * D) + (D * D + D) + (D * M + M) + (M * D + D) + 2 * (2 * D)  # = 4D^2 + 2DM + 9D + M


register(Exercise(
    key="02.block_params", kind="value",
    expected=lambda: (_count_block_params(64, 128), _count_block_params(768, 3072)),
    solution=lambda: (_block_params_formula(64, 128), _block_params_formula(768, 3072)),
    wrong=[(4 * 64**2 + 2 * 64 * 128, 4 * 768**2 + 2 * 768 * 3072),                 # weights only, no biases or norms
           (4 * 64**2 + 2 * 64 * 128 + 7 * 64 + 128, 4 * 768**2 + 2 * 768 * 3072 + 7 * 768 + 3072),  # no LayerNorms
           (3 * 64**2 + 2 * 64 * 128 + 8 * 64 + 128, 3 * 768**2 + 2 * 768 * 3072 + 8 * 768 + 3072),  # forgot W_O
           (33472, 7087872 // 12)],
    notes="4D^2 + 2DM + 9D + M: 33,472 for the tiny ViT, 7,087,872 for ViT-B (12 blocks = 85M of its 86M).",
))


def _split_heads_solution(x, H):
    B, N, D = x.shape
    return x.reshape(B, N, H, D // H).permute(0, 2, 1, 3)  # (B, H, N, D/H)


def _split_heads_cases():
    g = torch.Generator().manual_seed(2)
    return [(torch.randn(2, 5, 8, generator=g), 2), (torch.randn(1, 65, 64, generator=g), 4),
            (torch.randn(3, 7, 12, generator=g), 3)]


register(Exercise(
    key="02.split_heads", kind="function",
    expected=lambda x, H: x.reshape(x.shape[0], x.shape[1], H, x.shape[2] // H).transpose(1, 2),
    solution=_split_heads_solution,
    cases=_split_heads_cases,
    wrong=[lambda x, H: x.reshape(x.shape[0], H, x.shape[1], x.shape[2] // H),              # mixes tokens
           lambda x, H: x.reshape(x.shape[0], x.shape[1], x.shape[2] // H, H).permute(0, 3, 1, 2),  # strided slices
           lambda x, H: x.reshape(x.shape[0], x.shape[1], H, x.shape[2] // H)],              # no transpose
    notes="head h gets the features h*D/H to (h+1)*D/H of every token: reshape the last axis, then move H forward.",
))
