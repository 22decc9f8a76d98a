"""Notebook 04 (CLIP zero-shot): reference answers. Open after you tried."""
import zlib

import torch
import torch.nn.functional as F

from utils import clip, shapes

from . import Exercise, register


# ----------------------------------------------------------------------------- 1. Recall@K
def _recall_solution(similarity, k):
    ranked = similarity.argsort(dim=1, descending=True)[:, :k]            # (n, k) best columns per row
    hits = [i in ranked[i].tolist() for i in range(len(similarity))]
    return sum(hits) / len(hits)


def _recall_cases():
    g = torch.Generator().manual_seed(4)
    big = torch.randn(12, 12, generator=g)
    big[torch.arange(12), torch.arange(12)] += 1.0   # a matching pair is usually, not always, the best
    return [(torch.randn(6, 6, generator=g), 1), (torch.randn(6, 6, generator=g), 3), (big, 1), (big, 2),
            (big, 5), (torch.randn(5, 5, generator=g), 5)]


register(Exercise(
    key="04.recall_at_k", kind="function",
    expected=clip.recall_at_k,
    solution=_recall_solution,
    cases=_recall_cases,
    atol=1e-6,
    wrong=[lambda s, k: (s.topk(k, dim=0).indices == torch.arange(len(s))[None]).any(0).float().mean().item(),  # ranks queries per item
           lambda s, k: (s.argmax(1) == torch.arange(len(s))).float().mean().item(),                      # ignores k
           lambda s, k: (s.topk(k, dim=1, largest=False).indices == torch.arange(len(s))[:, None]).any(1).float().mean().item()],
    notes="row i is query i, its match is column i; a hit when i is among the row's k largest entries.",
))


# ----------------------------------------------------------------------------- 2. zero-shot classifier
def _classifier_solution(prompt_embeds):
    unit = prompt_embeds / prompt_embeds.norm(dim=-1, keepdim=True)       # (K, T, d_e) each prompt on the sphere
    mean = unit.mean(dim=1)                                               # (K, d_e) the template average
    return mean / mean.norm(dim=-1, keepdim=True)


def _classifier_cases():
    g = torch.Generator().manual_seed(5)
    cases = []
    for K, T, d in ((4, 3, 8), (24, 6, 64), (3, 1, 5)):
        scale = torch.rand(K, T, 1, generator=g) * 5 + 0.2              # prompts of very different lengths
        cases.append((torch.randn(K, T, d, generator=g) * scale,))
    return cases


register(Exercise(
    key="04.zero_shot_classifier", kind="function",
    expected=lambda e: F.normalize(F.normalize(e, dim=-1).mean(1), dim=-1),
    solution=_classifier_solution,
    cases=_classifier_cases,
    atol=1e-5,
    wrong=[lambda e: F.normalize(e.mean(1), dim=-1),            # long prompts outweigh short ones
           lambda e: F.normalize(e, dim=-1).mean(1),            # rows are not unit vectors
           lambda e: F.normalize(e[:, 0], dim=-1)],             # one template only
    notes="CLIP's prompt ensembling: normalize each prompt embedding, average over templates, normalize again.",
))


# ----------------------------------------------------------------------------- 3. a new prompt's accuracy
def _colour_thing_accuracy(encode_texts, image_embeds, colour_labels):
    W = clip.zero_shot_classifier(encode_texts, list(shapes.COLOR_NAMES), ["a {} thing"])        # (6, d_e)
    return (clip.zero_shot_predict(image_embeds, W).argmax(1) == colour_labels).float().mean().item()


def _colour_thing_solution(encode_texts, image_embeds, colour_labels):
    text = F.normalize(encode_texts([f"a {c} thing" for c in shapes.COLOR_NAMES]), dim=-1)     # (6, d_e)
    pred = (F.normalize(image_embeds, dim=-1) @ text.T).argmax(1)
    return (pred == colour_labels).float().mean().item()


def _colour_thing_context():
    """A cheap stand-in for the notebook's model: a fixed random embedding per text, and images whose
    embedding is their colour prompt's plus noise (most, not all, are classified right)."""
    def encode_texts(texts):
        return torch.stack([torch.randn(16, generator=torch.Generator().manual_seed(zlib.crc32(t.encode())))
                            for t in texts])
    g = torch.Generator().manual_seed(6)
    labels = torch.arange(60) % 6
    text = F.normalize(encode_texts([f"a {c} thing" for c in shapes.COLOR_NAMES]), dim=-1)
    images = text[labels] * 3 + torch.randn(60, 16, generator=g) * 1.6
    return {"encode_texts": encode_texts, "image_embeds": images, "colour_labels": labels}


register(Exercise(
    key="04.colour_thing", kind="value",
    expected=_colour_thing_accuracy,
    solution=_colour_thing_solution,
    atol=2e-3,   # one image in 1,600 either way (a tie broken differently)
    wrong=[1 / 6, 1.0, 0.0],
    test_context=_colour_thing_context,
    notes="a classifier from six prompts 'a {colour} thing', then top-1 accuracy of the colour on all test scenes.",
))
