"""Notebook 05 (multiple-choice VQA): reference answers. Open after you tried."""
import torch
import torch.nn as nn

from . import Exercise, register


# ----------------------------------------------------------------------------- 1. always "yes"
register(Exercise(
    key="05.always_yes", kind="value",
    # the generator offers "yes" in every yes/no item and makes it the right answer in a quarter of them
    # (utils.vqa.make_item), so picking it whenever it is offered is right 25% of the time
    expected=lambda: 0.25,
    solution=lambda: 0.25,
    atol=0.02,   # what a student who measures the rate on the training set gets
    wrong=[0.5, 1.0, 0.0, 0.75],
    notes="a language prior is worth nothing when the tempting answer is right exactly as often as chance.",
))


# ----------------------------------------------------------------------------- 2. the baseline's scorer
def _score_reference(image, question, answers, mlp):
    B, A, _ = answers.shape
    x = torch.cat([image[:, None].expand(B, A, -1), question[:, None].expand(B, A, -1), answers], -1)  # (B, A, D+2E)
    return mlp(x).squeeze(-1)                                                                        # (B, A)


def _score_solution(image, question, answers, mlp):
    scores = []
    for a in range(answers.shape[1]):       # one (image, question, answer) triple per candidate
        triple = torch.cat([image, question, answers[:, a]], dim=1)       # (B, D + 2E)
        scores.append(mlp(triple)[:, 0])                                  # (B,)
    return torch.stack(scores, dim=1)                                     # (B, A)


def _score_cases():
    cases = []
    for seed, (B, A, D, E) in enumerate(((3, 4, 6, 5), (2, 5, 4, 4), (1, 4, 8, 3))):
        g = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        mlp = nn.Sequential(nn.Linear(D + 2 * E, 16), nn.GELU(), nn.Linear(16, 1))
        cases.append((torch.randn(B, D, generator=g), torch.randn(B, E, generator=g), torch.randn(B, A, E, generator=g), mlp))
    return cases


register(Exercise(
    key="05.score_candidates", kind="function",
    expected=_score_reference,
    solution=_score_solution,
    cases=_score_cases,
    atol=1e-5,
    wrong=[lambda i, q, a, mlp: _score_reference(q, i, a, mlp),                                 # [question; image; answer]
           lambda i, q, a, mlp: _score_reference(i, q, a.mean(1, keepdim=True).expand_as(a), mlp),   # candidates blurred
           lambda i, q, a, mlp: _score_reference(i, q, a, mlp)[..., None]],                         # (B, A, 1)
    notes="Jabri et al.'s scorer: the same MLP on [image; question; answer] for each candidate, scores (B, A).",
))


# ----------------------------------------------------------------------------- 3. accuracy by scene size
def _by_objects(correct, n_objects):
    return tuple(correct[n_objects == k].float().mean().item() for k in (2, 3, 4))


def _by_objects_solution(correct, n_objects):
    out = []
    for k in (2, 3, 4):
        picked = [bool(c) for c, n in zip(correct.tolist(), n_objects.tolist()) if n == k]
        out.append(sum(picked) / len(picked))
    return tuple(out)


def _by_objects_context():
    g = torch.Generator().manual_seed(7)
    n_objects = torch.randint(2, 5, (90,), generator=g)
    correct = torch.rand(90, generator=g) < 1.1 - 0.2 * n_objects      # busier scenes, more errors
    return {"correct": correct, "n_objects": n_objects}


register(Exercise(
    key="05.accuracy_by_objects", kind="value",
    expected=_by_objects,
    solution=_by_objects_solution,
    atol=1e-4,
    wrong=[(1.0, 1.0, 1.0), (0.25, 0.25, 0.25), (0.0, 0.0, 0.0)],
    test_context=_by_objects_context,
    notes="select the items by the number of objects in their scene, then average the correctness.",
))
