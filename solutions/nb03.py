"""Notebook 03 (CLIP contrastive pretraining): reference answers. Open after you tried."""
import math

import torch
import torch.nn.functional as F

from utils import clip

from . import Exercise, register


def _loss_floors():
    # a constant model: every logit equal, computed with the course's clip_loss
    constant = clip.clip_loss(torch.ones(32, 4), torch.ones(32, 4), torch.tensor(0.0)).item()
    # a perfect model at the initial temperature: one row of logits [s, 0, ..., 0] (its loss is every row's)
    n, s = 32768, 1 / 0.07
    row = torch.zeros(n, dtype=torch.float64)
    row[0] = s
    perfect = (torch.logsumexp(row, 0) - row[0]).item()
    return constant, perfect


register(Exercise(
    key="03.loss_floors", kind="value",
    expected=_loss_floors,
    solution=lambda: (math.log(32), math.log(1 + 32767 * math.exp(-1 / 0.07))),
    rtol=0.03,  # accepts exp(t) rounded to 14.3 and a few digits of rounding
    wrong=[(math.log(32) / 2, math.log(1 + 32767 * math.exp(-1 / 0.07))),   # half the symmetric loss
           (math.log(32), 0.0),                                              # "a perfect model has loss 0"
           (math.log(32), math.log(1 + math.exp(-1 / 0.07))),                # one negative instead of n-1
           (1 / 32, math.log(1 + 32767 * math.exp(-1 / 0.07)))],             # chance accuracy, not the loss
    notes="log n for a model that knows nothing; log(1 + (n-1) e^{-s}) for a perfect one at scale s: "
          "0.020 at s = 14.3 and n = 32,768, 1e-39 at s = 100. The temperature has to grow.",
))


def _symmetric_loss_solution(logits, match):
    image_of = torch.argsort(match)                 # caption j belongs to image image_of[j]: match inverted
    loss_i = F.cross_entropy(logits.T, image_of)    # axis=0: each caption picks its image among the n images
    loss_t = F.cross_entropy(logits, match)         # axis=1: each image picks its caption among the n captions
    return (loss_i + loss_t) / 2


def _symmetric_loss_cases():
    g = torch.Generator().manual_seed(3)
    cycle = torch.tensor([1, 2, 3, 0])              # not its own inverse: caption 0 is image 3's, not image 1's
    sharp = torch.randperm(16, generator=g)
    while torch.equal(torch.argsort(sharp), sharp):
        sharp = torch.randperm(16, generator=g)
    peaked = torch.tensor([2, 0, 1])
    return [(torch.randn(4, 4, generator=g), cycle),
            (torch.randn(16, 16, generator=g) * 10, sharp),
            (torch.randn(3, 3, generator=g) + 5 * torch.eye(3)[peaked], peaked),   # the true pairs score highest
            (torch.randn(5, 5, generator=g), torch.arange(5))]                         # the pseudocode's own batch


def _reference_symmetric_loss(logits, match):
    # the true pairs are the entries (i, match[i]); each is scored once by its row's softmax (image i choosing
    # among the captions) and once by its column's (caption match[i] choosing among the images)
    pairs = (torch.arange(len(logits)), match)
    return -(logits.log_softmax(dim=1)[pairs].mean() + logits.log_softmax(dim=0)[pairs].mean()) / 2


def _arange(logits):
    return torch.arange(len(logits))


register(Exercise(
    key="03.symmetric_loss", kind="function",
    expected=_reference_symmetric_loss,
    solution=_symmetric_loss_solution,
    cases=_symmetric_loss_cases,
    atol=1e-5,
    wrong=[lambda logits, match: (F.cross_entropy(logits.T, _arange(logits))                   # ignores match
                                  + F.cross_entropy(logits, _arange(logits))) / 2,
           lambda logits, match: (F.cross_entropy(logits.T, match)                            # match both ways
                                  + F.cross_entropy(logits, match)) / 2,
           lambda logits, match: F.cross_entropy(logits, match),                              # one direction only
           lambda logits, match: F.cross_entropy(logits.T, torch.argsort(match))             # sum, not the mean
           + F.cross_entropy(logits, match)],
    notes="image i's caption is column match[i], so the axis=1 term takes match as labels and the axis=0 term "
          "its inverse, argsort(match) (caption j belongs to image argsort(match)[j]); the same as reordering "
          "the columns, logits[:, match], and using arange. With match = arange it is the pseudocode's loss.",
))
