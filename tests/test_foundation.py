"""utils.env, checks, training, checkpoints, shapes: behaviour, determinism and the bad inputs refused."""
import time

import numpy as np
import pytest
import torch

from utils import checkpoints, checks, env, shapes, training


def test_is_online_respects_hf_hub_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    assert env.is_online() is False
    assert time.perf_counter() - start < 0.1


def test_is_online_answers_within_two_seconds(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    start = time.perf_counter()
    env.is_online(host="10.255.255.1", port=9, timeout=0.5)  # an unroutable address: must time out, not hang
    assert time.perf_counter() - start < 2.0


def test_seed_everything_is_deterministic():
    g = env.seed_everything(3)
    a = torch.randn(4, generator=g), torch.randn(4)
    g = env.seed_everything(3)
    b = torch.randn(4, generator=g), torch.randn(4)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    with pytest.raises(ValueError, match="seed"):
        env.seed_everything(-1)


def test_check_shape_and_assert_close(capsys):
    checks.check_shape(torch.zeros(2, 3), (2, None))
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 4\)"):
        checks.check_shape(torch.zeros(2, 3), (2, 4), "x")
    err = checks.assert_close(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0 + 1e-7]), atol=1e-6)
    assert err < 1e-6 and "max abs error" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="exceeds"):
        checks.assert_close(torch.tensor([1.0]), torch.tensor([1.1]), atol=1e-3, verbose=False)


def test_compare_values_says_what_differs_without_the_answer():
    assert checks.compare_values(1103, 1102.5, atol=0.5) is None
    assert checks.compare_values(1102, 1102.5, atol=0.5) is None
    msg = checks.compare_values(1100, 1102.5, atol=0.5)
    assert "1100" in msg and "1102.5" not in msg and "0.5" in msg
    assert "text" in checks.compare_values(3, "hamming")
    assert checks.compare_values(" Hamming", "hamming") is None
    assert "shape (2, 3)" in checks.compare_values(torch.zeros(2, 3), torch.zeros(3, 2))
    assert "max abs error" in checks.compare_values(torch.ones(2), torch.zeros(2), atol=1e-3)
    assert "NaN" in checks.compare_values(float("nan"), 1.0, atol=1.0)
    assert "2 items" in checks.compare_values((1,), (1, 2))
    assert checks.compare_values(True, 1) is not None  # a bool is not a number


def test_grade_values_and_functions():
    from solutions import Exercise

    value = Exercise("99.n", "value", expected=lambda: 64, solution=lambda: 64)
    assert checks.grade(value, ...)[0] == checks.NOT_ATTEMPTED
    assert checks.grade(value, (64, ...))[0] == checks.NOT_ATTEMPTED
    assert checks.grade(value, 64)[0] == checks.PASS
    assert checks.grade(value, 65)[0] == checks.FAIL

    fn = Exercise("99.f", "function", expected=torch.neg, solution=lambda x: -x, cases=lambda: [(torch.ones(2),)])

    def unfinished(x):
        raise NotImplementedError

    assert checks.grade(fn, unfinished)[0] == checks.NOT_ATTEMPTED
    assert checks.grade(fn, lambda x: -x)[0] == checks.PASS
    status, msg = checks.grade(fn, lambda x: x)
    assert status == checks.FAIL and "case 1" in msg
    status, msg = checks.grade(fn, lambda x: x[5])
    assert status == checks.FAIL and "IndexError" in msg


def test_exercise_prints_one_line_and_refuses_unknown_keys(capsys):
    with pytest.raises(ValueError, match="unknown exercise key"):
        checks.exercise("99.nothing", 1)


def test_training_loop_fits_a_linear_problem():
    torch.manual_seed(0)
    x = torch.randn(512, 4)
    y = (x @ torch.tensor([1.0, -2.0, 0.5, 0.0]) > 0).long()
    model = torch.nn.Linear(4, 2)
    hist = training.train(model, (x, y), lambda m, b: torch.nn.functional.cross_entropy(m(b[0]), b[1]),
                          training.TrainConfig(steps=200, batch_size=64, lr=0.05, warmup=10, progress=False),
                          eval_fn=lambda m: {"acc": training.accuracy(training.predict(m, x), y)})
    assert hist.loss[-1] < hist.loss[0] and hist.eval[-1]["acc"] > 0.95
    with pytest.raises(ValueError, match="batch_size"):
        next(training.batches((x, y), 1000, torch.Generator()))


def test_checkpoint_round_trip_and_hash_mismatch(tmp_path):
    model = torch.nn.Linear(3, 2)
    path = checkpoints.save_checkpoint(tmp_path / "m", model.state_dict(), {"in": 3})
    state, cfg = checkpoints.load_checkpoint(tmp_path / "m")
    assert cfg == {"in": 3} and torch.equal(state["weight"], model.weight)
    manifest = tmp_path / "MANIFEST"
    manifest.write_text(f"{'0' * 64}  {path.name}\n")
    with pytest.raises(ValueError, match="sha256 mismatch"):
        checkpoints.verify_file(path, manifest=manifest)
    with pytest.raises(FileNotFoundError, match="scripts"):
        checkpoints.load_checkpoint(tmp_path / "missing")


def test_every_shipped_file_matches_the_manifest():
    entries = checkpoints.read_manifest()
    assert entries, "data/MANIFEST is empty"
    for rel in entries:
        checkpoints.verify_file(checkpoints.REPO_ROOT / rel)
    shipped = {p.relative_to(checkpoints.REPO_ROOT).as_posix() for p in checkpoints.DATA_DIR.rglob("*")
               if p.is_file() and p.name != "MANIFEST"}
    assert shipped == set(entries), f"not in data/MANIFEST: {sorted(shipped - set(entries))}"


def test_shapes_dataset_is_deterministic_and_labelled():
    a, b = shapes.make_shapes_dataset(20, seed=5), shapes.make_shapes_dataset(20, seed=5)
    xa, ya = shapes.dataset_tensors(a)
    xb, yb = shapes.dataset_tensors(b)
    assert torch.equal(xa, xb) and torch.equal(ya, yb) and a["caption"] == b["caption"]
    assert xa.shape == (20, 3, 32, 32) and 0 <= xa.min() and xa.max() <= 1
    assert a.features["shape"].names == list(shapes.SHAPES) and len(shapes.COLOR_NAMES) >= 6
    scene = shapes.Scene.from_json(a[0]["scene"])
    assert np.array_equal(shapes.render_scene(scene), np.asarray(a[0]["image"]))  # the scene renders the image
    obj = scene.objects[0]
    assert a.features["color"].int2str(a[0]["color"]) == obj.color and obj.color in a[0]["caption"]


def test_shapes_rendering_puts_the_colour_where_the_object_is():
    obj = shapes.ShapeObject("square", "red", "large", 16.0, 16.0)
    img = shapes.render_scene(shapes.Scene((obj,), 32, 0.1, 0), noise=0.0).astype(float) / 255
    centre = img[14:18, 14:18].mean((0, 1))
    assert np.allclose(centre, shapes.COLORS["red"], atol=0.06) and np.allclose(img[0, 0], 0.1, atol=0.01)


def test_holdout_splits():
    held = set(shapes.DEFAULT_HOLDOUT)
    train = shapes.make_shapes_dataset(200, seed=1, split="train")
    pairs = {(train.features["color"].int2str(c), train.features["shape"].int2str(s))
             for c, s in zip(train["color"], train["shape"])}
    assert not pairs & held and len(pairs) == 24 - len(held)
    heldout = shapes.make_shapes_dataset(60, seed=1, split="heldout")
    assert {(heldout.features["color"].int2str(c), heldout.features["shape"].int2str(s))
            for c, s in zip(heldout["color"], heldout["shape"])} <= held
    with pytest.raises(ValueError, match="split"):
        shapes.allowed_pairs("test")
    with pytest.raises(ValueError, match="holdout"):
        shapes.allowed_pairs("train", holdout=[("pink", "circle")])


def test_multi_object_scenes_do_not_overlap_and_refuse_impossible_requests():
    rng = np.random.default_rng(0)
    scene = shapes.sample_scene(rng, n_objects=3, sizes=("small",))
    objs = scene.objects
    for i in range(3):
        for j in range(i):
            assert np.hypot(objs[i].x - objs[j].x, objs[i].y - objs[j].y) >= objs[i].radius(32) + objs[j].radius(32)
    with pytest.raises(ValueError, match="n_objects"):
        shapes.sample_scene(rng, n_objects=12, sizes=("large",))
    with pytest.raises(ValueError, match="n_objects"):
        shapes.sample_scene(rng, n_objects=0)


def test_captions_use_articles_and_positions():
    obj = shapes.ShapeObject("circle", "orange", "small", 4.0, 28.0)
    assert shapes.caption(obj, 32, "a {color} {shape} in the {position}") == "an orange circle in the bottom left"


def test_linear_probe_separates_separable_classes():
    torch.manual_seed(0)
    centres = torch.randn(3, 8) * 3
    y = torch.arange(3).repeat(20)
    x = centres[y] + 0.1 * torch.randn(60, 8)
    probe = training.fit_linear_probe(x, y, 3)
    assert training.accuracy(probe(torch.nn.functional.normalize(x, dim=-1)), y) == 1.0
    with pytest.raises(ValueError, match="length"):
        training.fit_linear_probe(x, y[:10], 3)


def test_confusion_matrix_equals_scikit_learns():
    from sklearn.metrics import confusion_matrix

    g = torch.Generator().manual_seed(0)
    y, p = torch.randint(0, 7, (300,), generator=g), torch.randint(0, 7, (300,), generator=g)
    ours = training.confusion_matrix(y, p, 9)                       # two classes never occur: zero rows and columns
    assert ours.dtype == torch.long and ours.shape == (9, 9)
    assert np.array_equal(ours.numpy(), confusion_matrix(y.numpy(), p.numpy(), labels=list(range(9))))
    with pytest.raises(ValueError, match="num_classes"):
        training.confusion_matrix(y, p, 5)                          # labels up to 6 do not fit 5 classes
    with pytest.raises(ValueError, match="as many"):
        training.confusion_matrix(y, p[:10], 9)
