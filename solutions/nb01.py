"""Notebook 01 (ViT patch embeddings): reference answers. Open after you tried."""
import torch

from utils import vit

from . import Exercise, register


def _patch_counts_by_patchify():
    # counted by cutting real tensors, independently of the arithmetic a student does
    a = vit.patchify(torch.zeros(1, 3, 96, 128), 8)
    b = vit.patchify(torch.zeros(1, 3, 336, 336), 14)
    return (a.shape[1], a.shape[2], b.shape[1])


register(Exercise(
    key="01.patch_counts", kind="value",
    expected=_patch_counts_by_patchify,
    solution=lambda: ((96 // 8) * (128 // 8), 8 * 8 * 3, (336 // 14) ** 2),
    wrong=[(192, 64, 576), (12 * 16, 192, 24), (96 * 128 // 8, 192, 576)],
    notes="N = (H/P)(W/P) patches of P*P*C numbers; LLaVA-1.5's ViT-L/14 at 336 px gives 576 tokens.",
))


def _unpatchify_solution(patches, P, H, W, C):
    x = patches.reshape(-1, H // P, W // P, P, P, C)           # (B, h, w, P, P, C)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(-1, C, H, W)    # (B, C, H, W)


def _unpatchify_cases():
    g = torch.Generator().manual_seed(1)
    return [(vit.patchify(torch.rand(2, 3, 32, 32, generator=g), 4), 4, 32, 32, 3),
            (vit.patchify(torch.rand(1, 1, 8, 12, generator=g), 2), 2, 8, 12, 1),
            (vit.patchify(torch.rand(1, 3, 12, 6, generator=g), 3), 3, 12, 6, 3)]


register(Exercise(
    key="01.unpatchify", kind="function",
    expected=lambda p, P, H, W, C: vit.unpatchify(p, P, (H, W), C),
    solution=_unpatchify_solution,
    cases=_unpatchify_cases,
    wrong=[lambda p, P, H, W, C: p.reshape(-1, C, H, W),                       # ignores the patch layout
           lambda p, P, H, W, C: p.reshape(-1, H // P, W // P, P, P, C)       # pixel rows and columns
           .permute(0, 5, 1, 4, 2, 3).reshape(-1, C, H, W)],                   # swapped inside each patch
    notes="the inverse of patchify: undo the last reshape, then the permute, then the first reshape.",
))
