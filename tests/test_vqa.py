"""utils.vqa: the question generator (balance, one correct answer, determinism, impossible requests) and the scorer."""
import collections

import numpy as np
import pytest
import torch

from utils import shapes, vqa, vqa_model


@pytest.fixture(scope="module")
def items():
    return vqa.make_vqa_dataset(1000, seed=3)


def check_truth(scene: shapes.Scene, question: str, answer: str):
    """Recompute the correct answer from the scene description alone."""
    objs = scene.objects
    words = question.rstrip("?").split()
    if question.startswith("What colour is the"):
        (o,) = [o for o in objs if o.shape == words[-1]]
        return o.color == answer
    if question.startswith("What shape is the"):
        (o,) = [o for o in objs if o.color == words[-2]]
        return o.shape == answer
    if question.startswith("How many"):
        target = words[2]
        n = sum(o.color == target for o in objs) if target in shapes.COLOR_NAMES else \
            sum(vqa.PLURALS[o.shape] == target for o in objs)
        return str(n) == answer
    if question.startswith("Where is the"):
        (o,) = [o for o in objs if o.color == words[-2] and o.shape == words[-1]]
        return vqa.WHERE_ANSWERS[o.position(scene.canvas)] == answer
    if question.startswith("Is the"):
        (o,) = [o for o in objs if o.shape == words[2]]
        return answer == ("yes" if o.color == words[3] else f"no, it is {o.color}")
    raise AssertionError(question)


def test_each_item_has_exactly_one_correct_answer(items):
    for row in items:
        scene = shapes.Scene.from_json(row["scene"])
        truths = [check_truth(scene, row["question"], c) for c in row["choices"]]
        assert sum(truths) == 1 and truths[row["answer"]], (row["question"], row["choices"])
        assert len(set(row["choices"])) == 4 and 2 <= len(scene.objects) <= 4


def test_answers_are_balanced(items):
    # the correct index is uniform, and every answer value is as often right as it is offered
    index_counts = collections.Counter(items["answer"])
    assert all(abs(c / len(items) - 0.25) < 0.05 for c in index_counts.values())
    offered, right = collections.Counter(), collections.Counter()
    for row in items:
        for i, c in enumerate(row["choices"]):
            offered[c] += 1
            right[c] += i == row["answer"]
    for value, n in offered.items():
        if n >= 60:
            assert abs(right[value] / n - 0.25) < 0.1, (value, right[value] / n)


def test_question_types_are_all_present(items):
    counts = collections.Counter(items["qtype"])
    assert set(counts) == set(vqa.QUESTION_TYPES) and min(counts.values()) == 200


def test_deterministic_for_a_seed():
    a, b = vqa.make_vqa_dataset(30, seed=9), vqa.make_vqa_dataset(30, seed=9)
    assert a["question"] == b["question"] and a["choices"] == b["choices"] and a["scene"] == b["scene"]
    assert np.array_equal(np.asarray(a[5]["image"]), np.asarray(b[5]["image"]))
    assert vqa.make_vqa_dataset(30, seed=10)["scene"] != a["scene"]


def test_impossible_requests_raise():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="cannot fit"):
        vqa.place_objects(rng, [("circle", "red", None)] * 12)
    with pytest.raises(ValueError, match="qtype"):
        vqa.make_item(rng, "why")
    with pytest.raises(ValueError, match="n must"):
        vqa.make_vqa_dataset(0)


def test_place_objects_respects_positions():
    rng = np.random.default_rng(1)
    for where in vqa.POSITIONS:
        (o,) = vqa.place_objects(rng, [("square", "blue", where)])
        assert o.position(32) == where


def test_caption_matching_distractors_change_one_attribute():
    ds = vqa.make_caption_matching_dataset(50, seed=0)
    for row in ds:
        true = row["captions"][row["answer"]]
        assert row["changed"][row["answer"]] == "true" and len(set(row["captions"])) == 5
        for cap, kind in zip(row["captions"], row["changed"]):
            if kind != "true":
                assert cap != true and sorted(row["changed"]) == sorted(["true", "colour", "shape", "size", "position"])


def test_object_proposals_find_the_objects():
    ds = vqa.make_vqa_dataset(200, seed=4)
    found = [len(vqa_model.object_masks(np.asarray(im))) for im in ds["image"]]
    true = [len(shapes.Scene.from_json(s).objects) for s in ds["scene"]]
    assert np.mean(np.array(found) == np.array(true)) >= 0.95


def test_object_features_shapes_and_positions():
    from utils import vit

    scene = shapes.Scene((shapes.ShapeObject("circle", "red", "small", 8.0, 8.0),
                          shapes.ShapeObject("square", "blue", "small", 24.0, 22.0)), 32, 0.1, 0)
    image = shapes.render_scene(scene)
    tower = vit.ViT(vit.ViTConfig(dim=32, depth=1, heads=2, mlp_dim=64, num_classes=0))
    tokens, valid = vqa_model.object_features([image, image], tower)
    assert tokens.shape == (2, 4, 32 + 3) and valid.tolist() == [[True, True, False, False]] * 2
    centres = sorted(tokens[0, :2, -3:-1].tolist())
    assert np.allclose(centres, [[8 / 32, 8 / 32], [24 / 32, 22 / 32]], atol=0.03)
    isolated = vqa_model.isolate_object(image, vqa_model.object_masks(image), 0, np.random.default_rng(0))
    assert len(vqa_model.object_masks((isolated * 255).astype(np.uint8))) == 1


def test_object_features_from_several_layers_as_llama_3_2():
    """Llama 3.2 feeds its connector the final features and those of intermediate layers, concatenated:
    layers=(1,) appends the CLS state after block 1 to each region feature; the rest is unchanged."""
    from utils import vit

    scene = shapes.Scene((shapes.ShapeObject("circle", "red", "small", 8.0, 8.0),
                          shapes.ShapeObject("square", "blue", "small", 24.0, 22.0)), 32, 0.1, 0)
    image = shapes.render_scene(scene)
    torch.manual_seed(0)
    tower = vit.ViT(vit.ViTConfig(dim=32, depth=2, heads=2, mlp_dim=64, num_classes=0))
    one, valid = vqa_model.object_features([image], tower)
    several, valid2 = vqa_model.object_features([image], tower, layers=(1, 0))
    assert several.shape == (1, 4, 32 * 3 + 3) and torch.equal(valid, valid2)
    torch.testing.assert_close(several[..., :32], one[..., :32], rtol=0, atol=0)
    torch.testing.assert_close(several[..., -3:], one[..., -3:], rtol=0, atol=0)
    crop = vqa_model.isolate_object(image, vqa_model.object_masks(image), 0, np.random.default_rng(0))
    x = torch.from_numpy(crop[None]).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        states = tower.hidden_states(x)
    torch.testing.assert_close(several[0, 0, 32:64], states[1][0, 0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(several[0, 0, 64:96], states[0][0, 0], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="layers"):
        vqa_model.object_features([image], tower, layers=(3,))


def test_scorer_shapes_masks_and_config_errors():
    for pool in ("attention", "mean"):
        model = vqa_model.AnswerScorer(vqa_model.VQAConfig(token_dim=10, pool=pool))
        tokens, valid = torch.randn(3, 4, 10), torch.tensor([[True, True, False, False]] * 3)
        out = model(tokens, valid, torch.randn(3, 384), torch.randn(3, 4, 384))
        assert out.shape == (3, 4)
        changed = tokens.clone()
        changed[:, 2:] = 100.0  # what sits in invalid slots is ignored
        torch.testing.assert_close(model(changed, valid, *model_inputs_like(out)), model(tokens, valid, *model_inputs_like(out)))
    only_answers = vqa_model.AnswerScorer(vqa_model.VQAConfig(use_image=False, use_question=False, pool="mean"))
    assert only_answers(torch.randn(3, 4, 67), torch.ones(3, 4, dtype=torch.bool), torch.randn(3, 384),
                        torch.randn(3, 4, 384)).shape == (3, 4)
    with pytest.raises(ValueError, match="pool"):
        vqa_model.VQAConfig(pool="max")
    with pytest.raises(ValueError, match="use_question"):
        vqa_model.VQAConfig(use_question=False, pool="attention")


def model_inputs_like(out):
    g = torch.Generator().manual_seed(0)
    return torch.randn(3, 384, generator=g), torch.randn(3, 4, 384, generator=g)


def test_vqa_dataset_without_images_holds_the_same_items():
    with_images, without = vqa.make_vqa_dataset(20, seed=3), vqa.make_vqa_dataset(20, seed=3, images=False)
    assert "image" not in without.column_names
    for col in without.column_names:
        assert without[col] == with_images[col]
    scene = shapes.Scene.from_json(without[0]["scene"])
    assert np.array_equal(shapes.render_scene(scene, 0.04), np.asarray(with_images[0]["image"]))


def test_region_tokens_from_object_crops_equal_object_features_and_carry_gradients():
    """The unfrozen-tower path (notebook 07): the same tokens as object_features, and the tower gets a gradient."""
    from utils import vit

    scene = shapes.Scene((shapes.ShapeObject("circle", "red", "small", 8.0, 8.0),
                          shapes.ShapeObject("square", "blue", "small", 24.0, 22.0)), 32, 0.1, 0)
    other = shapes.Scene((shapes.ShapeObject("cross", "green", "large", 16.0, 16.0),), 32, 0.1, 1)
    images = [shapes.render_scene(scene), shapes.render_scene(other)]
    torch.manual_seed(0)
    tower = vit.ViT(vit.ViTConfig(dim=32, depth=1, heads=2, mlp_dim=64, num_classes=0))
    with torch.no_grad():
        ref, ref_valid = vqa_model.object_features(images, tower, seed=3)
    crops, geometry, valid = vqa_model.object_crops(images, seed=3)
    assert crops.shape == (2, 4, 3, 32, 32) and torch.equal(valid, ref_valid)
    assert valid.tolist() == [[True, True, False, False], [True, False, False, False]]
    ours = vqa_model.region_tokens(tower, crops, geometry, valid)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)
    ours.sum().backward()
    assert all(p.grad is not None for p in tower.parameters() if p.requires_grad)
