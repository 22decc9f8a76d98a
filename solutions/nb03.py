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


def _symmetric_loss_solution(logits):
    labels = torch.arange(len(logits))
    loss_i = F.cross_entropy(logits.T, labels)   # axis=0: each caption picks among the n images
    loss_t = F.cross_entropy(logits, labels)     # axis=1: each image picks among the n captions
    return (loss_i + loss_t) / 2


def _symmetric_loss_cases():
    g = torch.Generator().manual_seed(3)
    return [(torch.randn(4, 4, generator=g),), (torch.randn(16, 16, generator=g) * 10,),
            (torch.randn(3, 3, generator=g) + 5 * torch.eye(3),)]


def _reference_symmetric_loss(logits):
    # the pseudocode's softmaxes written out: axis=0 -> log_softmax(dim=0), axis=1 -> log_softmax(dim=1)
    return -(logits.log_softmax(dim=0).diagonal().mean() + logits.log_softmax(dim=1).diagonal().mean()) / 2


register(Exercise(
    key="03.symmetric_loss", kind="function",
    expected=_reference_symmetric_loss,
    solution=_symmetric_loss_solution,
    cases=_symmetric_loss_cases,
    atol=1e-5,
    wrong=[lambda logits: F.cross_entropy(logits, torch.arange(len(logits))),            # one direction only
           lambda logits: F.cross_entropy(logits, torch.arange(len(logits)))             # sum, not the mean
           + F.cross_entropy(logits.T, torch.arange(len(logits))),
           lambda logits: -logits.softmax(dim=1).diagonal().log().sum()],                # sum over pairs, one way
    notes="(loss_i + loss_t) / 2 with cross-entropy over columns (axis=0) and over rows (axis=1).",
))
