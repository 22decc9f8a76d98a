"""Notebook 06 (LLaVA from the parts): reference answers. Open after you tried."""
import torch

from utils import llava

from . import Exercise, register


def _spliced_lengths_by_splicing():
    # measured by splicing real tensors, independently of the arithmetic a student does
    def length(L, N, placeholders):
        ids = torch.zeros(L, dtype=torch.long)
        ids[torch.arange(placeholders) * 3 + 1] = 4                        # placeholders at 1, 4, ...
        embeds, feats = torch.zeros(L, 2), torch.zeros(N, 2)
        parts, last = [], 0
        for p in (ids == 4).nonzero().flatten().tolist():                  # each placeholder -> the N features
            parts += [embeds[last:p], feats]
            last = p + 1
        out = torch.cat(parts + [embeds[last:]])
        if placeholders == 1:                                              # the library's splice agrees
            assert llava.splice_image_features(ids[None], embeds[None], feats[None], 4)[0].shape[1] == len(out)
        return len(out)
    patches = (336 // 14) ** 2                                             # CLIP ViT-L/14 at 336 px
    return (length(30, 64, 2), length(40, patches, 1))


register(Exercise(
    key="06.spliced_length", kind="value",
    expected=_spliced_lengths_by_splicing,
    solution=lambda: (30 - 2 + 2 * 64, 40 - 1 + (336 // 14) ** 2),
    wrong=[(30 + 2 * 64, 40 + 576), (30 - 1 + 64, 40 - 1 + 576), (30 - 2 + 2 * 65, 40 - 1 + 577),
           (30 - 2 + 2 * 64, 40 - 1 + 256), (30 - 2 + 2 * 64, 40 - 1 + 24)],
    notes="each placeholder is replaced, not kept: L - P + P N for P images of N tokens; (336 / 14)^2 = 576 "
          "tokens an image for LLaVA-1.5, which dominate its sequence.",
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
