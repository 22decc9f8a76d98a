"""Notebook 06 (LLaVA from the parts): reference answers. Open after you tried."""
import torch

from utils import llava

from . import Exercise, register


def _spliced_lengths_by_splicing():
    # measured by splicing real tensors, independently of the arithmetic a student does
    def length(L, N):
        ids = torch.zeros(1, L, dtype=torch.long)
        ids[0, 1] = 4
        out, _ = llava.splice_image_features(ids, torch.zeros(1, L, 2), torch.zeros(1, N, 2), 4)
        return out.shape[1]
    return (length(23, 64), length(40, 576))


register(Exercise(
    key="06.spliced_length", kind="value",
    expected=_spliced_lengths_by_splicing,
    solution=lambda: (23 - 1 + 64, 40 - 1 + 576),
    wrong=[(23 + 64, 40 + 576), (64, 576), (23, 40), (22 + 65, 39 + 577)],
    notes="the placeholder is replaced, not kept: L - 1 + N; image tokens dominate LLaVA-1.5's sequence.",
))


def _projector_params_by_counting():
    ours = llava.make_projector("mlp2x_gelu", 64, 128)
    with torch.device("meta"):  # LLaVA's 1024 -> 4096 Linear, counted without allocating it
        theirs = llava.make_projector("linear", 1024, 4096)
    return (sum(p.numel() for p in ours.parameters()), sum(p.numel() for p in theirs.parameters()))


register(Exercise(
    key="06.projector_params", kind="value",
    expected=_projector_params_by_counting,
    solution=lambda: (64 * 128 + 128 + 128 * 128 + 128, 1024 * 4096 + 4096),
    wrong=[(64 * 128 + 128 * 128, 1024 * 4096), (64 * 128 + 128, 1024 * 4096 + 4096), (24832, 4096 * 4096 + 4096)],
    notes="two Linear layers with biases: D_v*D + D + D*D + D; LLaVA's linear projection: 1024*4096 + 4096 = 4.2M.",
))


def _splice_row_solution(ids, embeds, feats, image_token_id):
    p = int((ids == image_token_id).nonzero()[0])
    return torch.cat([embeds[:p], feats, embeds[p + 1:]])                 # (L - 1 + N, D)


def _splice_row_cases():
    g = torch.Generator().manual_seed(6)
    cases = []
    for L, N, D, p in [(7, 3, 4, 2), (5, 1, 8, 0), (9, 4, 2, 8), (6, 64, 3, 3)]:
        ids = torch.randint(5, 50, (L,), generator=g)
        ids[p] = 4
        cases.append((ids, torch.randn(L, D, generator=g), torch.randn(N, D, generator=g), 4))
    return cases


register(Exercise(
    key="06.splice_row", kind="function",
    expected=lambda ids, embeds, feats, image_token_id: llava.splice_image_features(
        ids[None], embeds[None], feats[None], image_token_id)[0][0],
    solution=_splice_row_solution,
    cases=_splice_row_cases,
    atol=1e-6,
    wrong=[lambda ids, embeds, feats, t: torch.cat([feats, embeds]),                      # prepends, keeps <image>
           lambda ids, embeds, feats, t: torch.cat([feats, embeds[ids != t]]),            # always at the front
           lambda ids, embeds, feats, t: torch.cat([embeds[:int((ids == t).nonzero()[0])], feats.flip(0),
                                                    embeds[int((ids == t).nonzero()[0]) + 1:]])],  # reversed order
    notes="the placeholder can be anywhere in the row; its embedding is replaced by the N features in order.",
))
