"""Notebook 05's additions to utils.vqa_model: the Jabri-style baseline's global image token, and the tokens
under each object that its linear probe reads."""
import numpy as np
import pytest
import torch

from utils import shapes, vit, vqa, vqa_model


@pytest.fixture(scope="module")
def tower():
    torch.manual_seed(0)
    cfg = vit.ViTConfig(image_size=32, patch_size=4, dim=16, depth=2, heads=2, mlp_dim=32, num_classes=0)
    return vit.ViT(cfg).eval()


def test_global_image_tokens_is_the_cls_feature_of_the_whole_image(tower):
    ds = vqa.make_vqa_dataset(5, seed=0)
    images = ds.with_format("numpy")["image"]
    tokens, valid = vqa_model.global_image_tokens(images, tower)
    assert tokens.shape == (5, 1, 16 + 3) and valid.all() and valid.shape == (5, 1)
    with torch.no_grad():
        cls = tower(shapes.images_to_tensor(images))
    torch.testing.assert_close(tokens[:, 0, :-3], cls, atol=1e-6, rtol=0)
    torch.testing.assert_close(tokens[:, 0, -3:], torch.tensor([0.5, 0.5, 1.0]).expand(5, 3))


def test_global_image_tokens_refuses_bad_input(tower):
    with pytest.raises(TypeError, match="vision_tower"):
        vqa_model.global_image_tokens(torch.rand(2, 3, 32, 32), "tower")
    with pytest.raises(ValueError, match="images"):
        vqa_model.global_image_tokens(torch.rand(3, 32, 32), tower)


def test_tokens_under_objects_picks_the_nearest_valid_token():
    scene = shapes.Scene((shapes.ShapeObject("circle", "red", "small", 4.0, 4.0),
                          shapes.ShapeObject("cross", "blue", "small", 28.0, 20.0)), 32)
    tokens = torch.zeros(1, 3, 2 + 3)
    tokens[0, :, :2] = torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    tokens[0, :, 2:4] = torch.tensor([[0.1, 0.1], [0.875, 0.625], [0.8, 0.7]])
    valid = torch.tensor([[True, False, True]])  # the nearest token to the cross is not valid
    feats, labels = vqa_model.tokens_under_objects([scene.to_json()], tokens, valid)
    torch.testing.assert_close(feats, torch.tensor([[1.0, 1.0], [3.0, 3.0]]))
    assert labels["shape"].tolist() == [shapes.SHAPES.index("circle"), shapes.SHAPES.index("cross")]
    assert labels["colour"].tolist() == [shapes.COLOR_NAMES.index("red"), shapes.COLOR_NAMES.index("blue")]
    with pytest.raises(ValueError, match="scenes"):
        vqa_model.tokens_under_objects([scene, scene], tokens, valid)
    with pytest.raises(ValueError, match="valid"):
        vqa_model.tokens_under_objects([scene], tokens, valid.float())


def test_encode_items_with_given_image_tokens_equals_live_encoding():
    """encode_items(image_features=...) skips the tower and returns the same dict as the live encoding."""
    import torch
    from utils import DATA_DIR, clip_shapes, vqa, vqa_model
    ds = vqa.make_vqa_dataset(12, seed=3)
    tower = clip_shapes.load_shipped("minilm", DATA_DIR / "checkpoints").vision_tower
    text = lambda texts: torch.stack([torch.full((384,), float(len(t))) for t in texts])  # noqa: E731
    live = vqa_model.encode_items(ds, tower, text)
    given = vqa_model.encode_items(ds, None, text, image_features=(live["tokens"], live["valid"]))
    for k in ("tokens", "valid", "question", "answers", "answer"):
        assert torch.equal(live[k], given[k]), k
    assert live["qtype"] == given["qtype"]
    import pytest
    with pytest.raises(ValueError, match="image_features"):
        vqa_model.encode_items(ds, None, text, image_features=(live["tokens"][:5], live["valid"][:5]))


def test_shipped_vqa_train_features_match_a_live_encoding():
    """The shipped features (scripts/encode_vqa_features.py) equal the live encoding of their first items."""
    import torch
    from utils import DATA_DIR, checkpoints, clip_shapes, vqa, vqa_model
    shipped, cfg = checkpoints.load_checkpoint(DATA_DIR / "checkpoints" / "vqa_train_features")
    n = cfg["recipe"]["n"]
    assert shipped["tokens"].shape[:2] == shipped["valid"].shape == (n, 4)
    ds = vqa.make_vqa_dataset(40, seed=cfg["recipe"]["seed"])   # the first 40 items of the same stream
    tower = clip_shapes.load_shipped("minilm", DATA_DIR / "checkpoints").vision_tower
    images = ds.with_format("numpy")["image"]
    tokens, valid = vqa_model.frozen_image_tokens(images, tower, "objects")
    g_tokens, _ = vqa_model.global_image_tokens(images, tower)
    torch.testing.assert_close(tokens, shipped["tokens"][:40], atol=1e-5, rtol=0)
    assert torch.equal(valid, shipped["valid"][:40])
    torch.testing.assert_close(g_tokens, shipped["global_tokens"][:40], atol=1e-5, rtol=0)
