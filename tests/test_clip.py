"""utils.clip.clip_loss against a NumPy transcription of the paper's pseudocode and transformers' clip_loss."""
import math

import numpy as np
import pytest
import torch
from transformers.models.clip import modeling_clip

# transformers' CLIP loss on logits_per_text: `clip_loss` in 4.x, renamed `image_text_contrastive_loss` in 5.x
hf_clip_loss = getattr(modeling_clip, "image_text_contrastive_loss", None) or modeling_clip.clip_loss

from utils import clip, vit


def numpy_pseudocode(I_f, T_f, t):
    """Radford et al. 2021, Figure 3, with W_i = W_t = identity (the inputs are already projected)."""
    I_e = I_f / np.linalg.norm(I_f, axis=1, keepdims=True)
    T_e = T_f / np.linalg.norm(T_f, axis=1, keepdims=True)
    logits = I_e @ T_e.T * np.exp(t)
    n = len(logits)
    labels = np.arange(n)

    def cross_entropy(logits, axis):  # mean over examples of -log softmax at the label
        logp = logits - np.log(np.exp(logits - logits.max(axis, keepdims=True)).sum(axis, keepdims=True)) \
            - logits.max(axis, keepdims=True)
        return -np.mean(logp[labels, labels])

    return (cross_entropy(logits, 0) + cross_entropy(logits, 1)) / 2


@pytest.mark.parametrize("n,d,t,scale", [(8, 16, math.log(1 / 0.07), 1.0), (5, 3, 0.0, 30.0), (16, 32, math.log(100), 0.01),
                                         (4, 8, 8.0, 5.0)])
def test_clip_loss_matches_pseudocode_and_transformers(n, d, t, scale):
    torch.manual_seed(n)
    I = torch.randn(n, d, dtype=torch.float64) * scale  # not normalized
    T = torch.randn(n, d, dtype=torch.float64) * scale
    ours = clip.clip_loss(I, T, torch.tensor(t, dtype=torch.float64))
    assert ours.dim() == 0
    ref_np = numpy_pseudocode(I.numpy(), T.numpy(), min(t, math.log(clip.MAX_LOGIT_SCALE)))  # exp(t) clipped at 100
    assert abs(ours.item() - ref_np) <= 1e-5
    # transformers' clip_loss takes logits_per_text = logits_per_image.T
    logits_per_image = clip.clip_logits(I, T, torch.tensor(t, dtype=torch.float64))
    assert abs(ours.item() - hf_clip_loss(logits_per_image.T).item()) <= 1e-5


def test_clip_loss_float32_matches_float64():
    torch.manual_seed(0)
    I, T = torch.randn(32, 64), torch.randn(32, 64)
    t = torch.tensor(math.log(1 / 0.07))
    assert abs(clip.clip_loss(I, T, t).item() - clip.clip_loss(I.double(), T.double(), t.double()).item()) <= 1e-5


def test_clip_loss_is_small_for_aligned_pairs_and_symmetric():
    I = torch.eye(6)
    assert clip.clip_loss(I, I, torch.tensor(math.log(100.0))).item() < 1e-3
    I, T = torch.randn(6, 4), torch.randn(6, 4)
    t = torch.tensor(1.0)
    assert torch.allclose(clip.clip_loss(I, T, t), clip.clip_loss(T, I, t))


@pytest.mark.parametrize("I,T,match", [(torch.randn(4, 8), torch.randn(5, 8), "batch"), (torch.randn(4, 8), torch.randn(4, 7), "width"),
                                       (torch.randn(1, 8), torch.randn(1, 8), "batch of 1"), (torch.randn(4), torch.randn(4), "2-D"),
                                       (torch.randn(2, 4, 8), torch.randn(2, 4, 8), "2-D")])
def test_clip_loss_bad_inputs(I, T, match):
    with pytest.raises(ValueError, match=match):
        clip.clip_loss(I, T, torch.tensor(0.0))


def test_tiny_clip_temperature_is_initialized_and_clamped():
    cfg = clip.CLIPConfig(vision=vit.ViTConfig(dim=32, depth=1, heads=2, mlp_dim=64, num_classes=0),
                          text_width=32, text_depth=1, text_heads=2, embed_dim=16, vocab_size=100)
    model = clip.TinyCLIP(cfg)
    assert abs(model.t.item() - math.log(1 / 0.07)) < 1e-6
    with torch.no_grad():
        model.t.fill_(10.0)
    assert abs(model.logit_scale().item() - 100.0) < 1e-4  # exp(t) <= 100
    ids = torch.randint(1, 100, (3, 6))
    out = model(torch.rand(3, 3, 32, 32), ids, torch.ones_like(ids))
    assert out["logits_per_image"].shape == (3, 3) and out["loss"].dim() == 0
    out["loss"].backward()
    assert model.t.grad is None or model.t.grad.abs() == 0  # clamped: no gradient pushes t past the cap


def test_text_transformer_ignores_padding():
    cfg = clip.CLIPConfig(vision=vit.ViTConfig(dim=32, depth=1, heads=2, mlp_dim=64, num_classes=0),
                          text_width=32, text_depth=2, text_heads=2, embed_dim=16, vocab_size=50)
    tower = clip.TextTransformer(cfg).eval()
    ids = torch.tensor([[5, 6, 7, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 0, 0]])
    short = tower(ids[:, :3], mask[:, :3])
    padded = tower(torch.tensor([[5, 6, 7, 9, 9]]), mask)  # whatever sits in padded places is ignored
    torch.testing.assert_close(short, padded, atol=1e-5, rtol=0)


def test_first_occurrences():
    keys = torch.tensor([3, 1, 3, 2, 1, 5])
    assert clip.first_occurrences(keys).tolist() == [0, 1, 3, 5]
    with pytest.raises(ValueError, match="1-D"):
        clip.first_occurrences(torch.zeros(2, 2))


def test_zero_shot_classifier_averages_normalized_prompts():
    table = {"a cat": torch.tensor([3.0, 0.0]), "a photo of a cat": torch.tensor([0.0, 1.0]),
             "a dog": torch.tensor([-1.0, 0.0]), "a photo of a dog": torch.tensor([-2.0, 0.0])}
    W = clip.zero_shot_classifier(lambda texts: torch.stack([table[t] for t in texts]), ["cat", "dog"],
                                  ["a {}", "a photo of a {}"])
    torch.testing.assert_close(W, torch.tensor([[1.0, 1.0], [-1.0, 0.0]]) / torch.tensor([[2 ** 0.5], [1.0]]))
    pred = clip.zero_shot_predict(torch.tensor([[5.0, 4.0], [-1.0, 0.1]]), W).argmax(1)
    assert pred.tolist() == [0, 1]
    with pytest.raises(ValueError, match="template"):
        clip.zero_shot_classifier(lambda t: torch.zeros(len(t), 2), ["cat"], ["a cat"])


def test_recall_at_k():
    sim = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.5, 0.0], [0.0, 0.7, 0.6]])
    assert clip.recall_at_k(sim, 1) == pytest.approx(1 / 3)
    assert clip.recall_at_k(sim, 2) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="square"):
        clip.recall_at_k(torch.zeros(2, 3), 1)
