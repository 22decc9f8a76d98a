"""Benchmark (notebook 02, section 6): a training step of utils.vit.ViT costs at most 15% more than the same
network as torchvision's VisionTransformer. It lives here, not in the notebook, so that a busy laptop never
fails a teaching notebook; `make test` runs it.

Both models are timed alternately in one process (the best of several rounds), so both see the same machine
state; a round that a burst of load slows down is discarded by taking the minimum.
"""
import torch

from utils import training, vit


def test_training_step_is_within_15_percent_of_torchvision():
    torch.manual_seed(0)
    cfg = vit.ViTConfig(**vit.SHAPES_VIT)
    ours, tv = vit.ViT(cfg), vit.to_torchvision(vit.ViT(cfg))
    x, y = torch.rand(64, 3, 32, 32), torch.randint(0, cfg.num_classes, (64,))
    training.step_seconds(ours, x, y, 3), training.step_seconds(tv, x, y, 3)  # warm-up
    times = {"ours": [], "torchvision": []}
    for _ in range(5):
        times["ours"].append(training.step_seconds(ours, x, y, 10))
        times["torchvision"].append(training.step_seconds(tv, x, y, 10))
    ratio = min(times["ours"]) / min(times["torchvision"])
    assert ratio <= 1.15, f"a training step of ours takes {ratio:.2f}x torchvision's (best of 5 rounds: {times})"
