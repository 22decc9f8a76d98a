"""utils.instruct (notebook 07): the instruction writer answers from the scene description correctly, the
conversation rows put loss on assistant tokens only and tokenize as the whole text does, the held-out items
are notebook 05's, and the exact-match scorer."""
from collections import Counter

import numpy as np
import pytest
import torch

from utils import instruct, lm, shapes, vqa
from utils.lm_data import caption, load_tokenizer


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


def obj(shape, colour, x, y):
    return shapes.ShapeObject(shape, colour, "small", float(x), float(y))


def test_describe_lists_objects_in_reading_order():
    scene = shapes.Scene((obj("cross", "blue", 26, 26), obj("circle", "red", 20, 6), obj("square", "green", 6, 16)))
    assert instruct.describe(scene) == ("a small red circle at the top, a small green square on the left and "
                                        "a small blue cross in the bottom right")
    one = shapes.Scene((obj("triangle", "orange", 16, 16),))
    assert instruct.describe(one) == caption(one.objects[0]) == "a small orange triangle in the center"


def _answer(scene, qtype, question):
    """An independent reading of the scene: what the question asks, from the objects themselves."""
    words = question.rstrip("?").split()
    if qtype == "colour":
        return next(o.color for o in scene.objects if o.shape == words[-1])
    if qtype == "shape":
        return next(o.shape for o in scene.objects if o.color == words[-2])
    if qtype == "count":
        thing = words[2]
        plural = {v: k for k, v in vqa.PLURALS.items()}
        return str(sum(o.color == thing if thing in shapes.COLOR_NAMES else o.shape == plural[thing] for o in scene.objects))
    if qtype == "where":
        o = next(o for o in scene.objects if (o.color, o.shape) == (words[-2], words[-1]))
        return vqa.WHERE_ANSWERS[o.position(scene.canvas)]
    o = next(o for o in scene.objects if o.shape == words[-2])
    return "yes" if o.color == words[-1] else f"no, it is {o.color}"


def test_questions_are_answered_from_the_description():
    rng = np.random.default_rng(0)
    kinds = Counter()
    for _ in range(300):
        scene = instruct.sample_scene(rng, int(rng.integers(1, 5)))
        for qtype, question, answer in instruct.questions_about(scene, rng):
            kinds[qtype] += 1
            assert answer == _answer(scene, qtype, question), (qtype, question, answer, scene)
            if qtype in ("colour", "yes/no"):  # the object asked about is the only one of its shape
                assert sum(o.shape == question.rstrip("?").split()[-1 if qtype == "colour" else 2]
                           for o in scene.objects) == 1
    assert set(kinds) == set(vqa.QUESTION_TYPES) and min(kinds.values()) > 100


def test_sample_scene_places_small_objects_apart():
    rng = np.random.default_rng(1)
    for n in (1, 2, 3, 4):
        scene = instruct.sample_scene(rng, n)
        assert len(scene.objects) == n and all(o.size == "small" for o in scene.objects)
        r = shapes.SIZES["small"] * scene.canvas
        for i, a in enumerate(scene.objects):
            assert r <= a.x <= scene.canvas - r and r <= a.y <= scene.canvas - r
            for b in scene.objects[i + 1:]:
                assert np.hypot(a.x - b.x, a.y - b.y) >= 2 * r + 1
    with pytest.raises(ValueError, match="n_objects"):
        instruct.sample_scene(rng, 5)


def test_make_conversations_is_deterministic_and_mixes_kinds():
    scenes, convs = instruct.make_conversations(200, seed=3, turns=3, p_describe=0.5)
    again = instruct.make_conversations(200, seed=3, turns=3, p_describe=0.5)
    assert [s.to_json() for s in scenes] == [s.to_json() for s in again[0]] and convs == again[1]
    assert all(1 <= len(c) <= 3 for c in convs)
    assert Counter(len(s.objects) for s in scenes).keys() == {1, 2, 3, 4}
    first = Counter(c[0][0] for c in convs)
    assert 0.35 < first["describe"] / len(convs) < 0.65
    for scene, conv in zip(scenes, convs):
        assert len({t[0] for t in conv}) == len(conv)  # no kind twice in one conversation
        for qtype, question, answer in conv:
            assert answer == (instruct.describe(scene) if qtype == "describe" else _answer(scene, qtype, question))
    for kwargs, name in ((dict(n=0), "n"), (dict(n=2, turns=0), "turns"), (dict(n=2, p_describe=1.5), "p_describe"),
                         (dict(n=2, max_objects=5), "max_objects")):
        with pytest.raises(ValueError, match=name):
            instruct.make_conversations(**kwargs)


@pytest.mark.parametrize("image_first", [True, False])
def test_conversation_rows_put_loss_on_assistant_tokens_only(tok, image_first):
    _, convs = instruct.make_conversations(40, seed=4, turns=3)
    ids, labels = instruct.conversation_rows(tok, convs, image_first=image_first)
    assert ids.shape == labels.shape and (ids == tok.convert_tokens_to_ids("<image>")).sum(1).eq(1).all()
    end = tok.convert_tokens_to_ids("<|im_end|>")
    for i, conv in enumerate(convs):
        whole = tok(instruct.conversation_text(conv, image_first=image_first))["input_ids"]
        assert ids[i, :len(whole)].tolist() == whole  # piecewise tokens equal the whole text's
        assert (ids[i, len(whole):] == tok.pad_token_id).all()
        kept = labels[i][labels[i] != lm.IGNORE_INDEX].tolist()
        assert tok.decode(kept) == "".join(a + "<|im_end|>" for *_, a in conv)  # the answers and nothing else
        assert kept.count(end) == len(conv)
        assert (labels[i] == ids[i])[labels[i] != lm.IGNORE_INDEX].all()
    text = instruct.conversation_text(convs[0], image_first=image_first)
    assert text.startswith("<|im_start|>user\n<image>\n" if image_first else "<|im_start|>user\n" + convs[0][0][1] + "\n<image>")
    with pytest.raises(ValueError, match="conversations"):
        instruct.conversation_rows(tok, [])
    with pytest.raises(ValueError, match="turns"):
        instruct.conversation_text([])


def test_prompt_text_is_the_conversation_up_to_the_answer():
    conv = [("colour", "What colour is the circle?", "red")]
    for first in (True, False):
        full = instruct.conversation_text(conv, image_first=first)
        assert full.startswith(instruct.prompt_text(conv[0][1], image_first=first))
        assert full == instruct.prompt_text(conv[0][1], image_first=first) + "red<|im_end|>\n"
    assert "<image>" not in instruct.prompt_text("What colour is the circle?", image=False)


def test_test_items_are_notebook_05_items_with_their_answers_in_words():
    items = instruct.test_items(8, seed=5)
    assert Counter(it["qtype"] for it in items) == {q: 8 for q in instruct.QTYPES}
    rng = np.random.default_rng(5)
    for it in items[:8 * len(vqa.QUESTION_TYPES)]:
        ref = vqa.make_item(rng, it["qtype"])
        assert (it["question"], it["answer"]) == (ref["question"], ref["choices"][ref["answer"]])
        assert it["answer"] == _answer(it["scene"], it["qtype"], it["question"])
    for it in items[-8:]:
        assert it["answer"] == instruct.describe(it["scene"])
    with pytest.raises(ValueError, match="n_per_type"):
        instruct.test_items(0)


def test_exact_match_scoring():
    items = [dict(qtype="colour", answer="red"), dict(qtype="colour", answer="blue"),
             dict(qtype="where", answer="in the top left"), dict(qtype="yes/no", answer="no, it is red"),
             dict(qtype="describe", answer="a small red circle at the top and a small blue cross on the left")]
    preds = ["red", " red", "in the top left.", "no", "a small blue cross on the left and a small red circle at the top"]
    acc = instruct.answer_accuracy(preds, items)
    assert acc == {"colour": 0.5, "where": 1.0, "yes/no": 0.0, "describe": 1.0, "overall": 0.5}
    assert not instruct.is_correct("a small blue cross on the left", items[-1]["answer"], "describe")  # one missing
    assert not instruct.is_correct("a small red circle at the top, a small red circle at the top and a small blue "
                                   "cross on the left", items[-1]["answer"], "describe")            # one twice
    with pytest.raises(ValueError, match="predictions"):
        instruct.answer_accuracy(["red"], items)


def test_assistant_labels_from_tokens_equal_the_rows_labels(tok):
    _, convs = instruct.make_conversations(30, seed=6, turns=3)
    ids, labels = instruct.conversation_rows(tok, convs)
    header = tok("<|im_start|>assistant\n")["input_ids"]
    end = tok.convert_tokens_to_ids("<|im_end|>")
    for i in range(len(convs)):
        assert torch.equal(instruct.assistant_labels(ids[i], header, end), labels[i])
    with pytest.raises(ValueError, match="input_ids"):
        instruct.assistant_labels(ids, header, end)
    with pytest.raises(ValueError, match="header_ids"):
        instruct.assistant_labels(ids[0], [], end)


def test_answer_items_equal_one_by_one_generation(tok):
    from utils import llava

    torch.manual_seed(0)
    cfg = lm.LMConfig(vocab_size=512, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=64, max_seq_len=96)
    tower = torch.nn.Module()
    tower.image_size = 8
    tower.hidden_states = lambda x: [torch.zeros(len(x), 5, 16)] * 2          # only its width matters here
    model = llava.TinyLlava(llava.TinyLlavaConfig(), lm.LM(cfg), vision_tower=tower).eval()
    feats = torch.randn(5, 3, 16, generator=torch.Generator().manual_seed(1))
    questions = ["What colour is the circle?", "Where is the red cross?", "What colour is the cross?",
                 "Describe the image.", "How many circles are there?"]
    got = instruct.answer_items(model, feats, questions, tok, max_new_tokens=5)
    end = tok.convert_tokens_to_ids("<|im_end|>")
    for f, q, a in zip(feats, questions, got):
        ids = torch.tensor([tok(instruct.prompt_text(q))["input_ids"]])
        embeds, _ = llava.splice_image_features(ids, model.language_model.embed_tokens(ids),
                                                model.multi_modal_projector(f[None]), 4)
        one = model.language_model.generate(inputs_embeds=embeds, max_new_tokens=5, eos_token_id=end)
        assert a == tok.decode(one[0], skip_special_tokens=True)
    blind = instruct.answer_items(model, feats, questions, tok, max_new_tokens=5, image=False)
    assert instruct.answer_items(model, None, questions, tok, max_new_tokens=5, image=False) == blind  # unused
    ids = torch.tensor([tok(instruct.prompt_text(questions[1], image=False))["input_ids"]])
    assert blind[1] == tok.decode(model.language_model.generate(ids, max_new_tokens=5, eos_token_id=end)[0],
                                  skip_special_tokens=True)  # the LM alone, on the prompt without <image>
    with pytest.raises(ValueError, match="features"):
        instruct.answer_items(model, feats[:2], questions, tok)
    with pytest.raises(ValueError, match="features"):
        instruct.answer_items(model, None, questions, tok)


def test_dataset_items_described_questions_and_answers_by_kind():
    ds = vqa.make_vqa_dataset(10, seed=4, images=False)
    items = instruct.dataset_items(ds)
    assert [it["answer"] for it in items] == [c[a] for c, a in zip(ds["choices"], ds["answer"])]
    assert [it["qtype"] for it in items] == ds["qtype"] and [it["scene"] for it in items] == ds["scene"]
    first = instruct.described_question(items[0])
    assert first == instruct.describe(shapes.Scene.from_json(ds["scene"][0])) + "\n" + ds["question"][0]
    by_kind = instruct.answers_by_kind([" red "] + ["x"] * 9, items)                 # stripped, counted per kind
    first_kind = sum(it["qtype"] == items[0]["qtype"] for it in items)
    assert by_kind[items[0]["qtype"]] == Counter({"red": 1, "x": first_kind - 1})
    assert sum(sum(c.values()) for c in by_kind.values()) == 10 and set(by_kind) == set(ds["qtype"])
    with pytest.raises(ValueError, match="same length"):
        instruct.answers_by_kind(["red"], items)


def test_item_conversations_start_with_the_items_question_and_add_the_writers():
    ds = vqa.make_vqa_dataset(60, seed=4)
    convs = instruct.item_conversations(ds, seed=0, turns=4, p_describe=0.5)
    assert convs == instruct.item_conversations(ds, seed=0, turns=4, p_describe=0.5)
    assert len(convs) == len(ds) and all(1 <= len(c) <= 4 for c in convs)
    described = 0
    for row, conv in zip(ds, convs):
        scene = shapes.Scene.from_json(row["scene"])
        assert conv[0] == (row["qtype"], row["question"], row["choices"][row["answer"]])
        assert len({t[1] for t in conv}) == len(conv)                  # no question twice
        for qtype, question, answer in conv[1:]:
            assert answer == (instruct.describe(scene) if qtype == "describe" else _answer(scene, qtype, question))
        described += any(t[0] == "describe" for t in conv)
    assert 0.3 < described / len(convs) < 0.7 and all(c[1][0] == "describe" for c in convs if any(t[0] == "describe" for t in c))
    assert all(len(c) == 1 for c in instruct.item_conversations(ds, seed=0, turns=1))
    with pytest.raises(ValueError, match="turns"):
        instruct.item_conversations(ds, turns=0)
    with pytest.raises(ValueError, match="p_describe"):
        instruct.item_conversations(ds, p_describe=-0.1)


def test_count_present_asks_counts_of_what_the_scene_holds():
    rng0, rng1, rng_old = (np.random.default_rng(5) for _ in range(3))
    zeros, nonzero, n = Counter(), Counter(), 0
    for _ in range(400):
        scene = instruct.sample_scene(rng0, int(rng0.integers(1, 5)))
        rng1.bit_generator.state = rng_old.bit_generator.state = rng0.bit_generator.state
        assert instruct.questions_about(scene, rng_old) == instruct.questions_about(scene, rng1, count_present=0.0)
        for p in (0.0, 1.0):
            rng = np.random.default_rng(n)
            n += 1
            (count,) = [t for t in instruct.questions_about(scene, rng, count_present=p) if t[0] == "count"]
            assert count[2] == _answer(scene, "count", count[1])
            (zeros if count[2] == "0" else nonzero)[p] += 1
    assert zeros[1.0] == 0 and nonzero[1.0] == 400          # always a colour or shape the scene holds
    assert zeros[0.0] > 150                                   # any colour or shape: mostly absent ones
    with pytest.raises(ValueError, match="count_present"):
        instruct.questions_about(scene, rng0, count_present=1.5)
    with pytest.raises(ValueError, match="count_present"):
        instruct.item_conversations(vqa.make_vqa_dataset(4, seed=4), count_present=-0.1)


@pytest.mark.parametrize("connector", ["mlp2x_gelu", "cross_attention"])
def test_train_stage_trains_the_connector_alone_then_the_lm_too(tok, connector):
    from test_llava_data import TinyTower

    cfg = lm.LMConfig(vocab_size=512, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=64, max_seq_len=128)
    torch.manual_seed(0)
    model = instruct.new_instruct_model(lm.LM(cfg), TinyTower(), feature_dim=7, connector=connector)
    ds = vqa.make_vqa_dataset(8, seed=5)
    ids, labels = instruct.conversation_rows(tok, instruct.item_conversations(ds, turns=2))
    data = dict(f_train=torch.randn(8, 4, 7), train_ids=ids, train_labels=labels)
    lm_names = [n for n, _ in model.named_parameters() if n.startswith("language_model.") and ".inserted." not in n]
    connector_names = [n for n, _ in model.named_parameters() if instruct.is_connector(n)]
    assert lm_names and connector_names and (connector == "cross_attention") == any(".inserted." in n for n in connector_names)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    run = dict(steps=3, batch_size=4, lr=1e-2, warmup=1, weight_decay=0.0)
    calls = []
    hist = instruct.train_stage(model, data, dict(run, eval_every=2), projector_only=True, progress=False,
                                eval_fn=lambda m: calls.append(m.training) or {})
    after = dict(model.named_parameters())
    assert len(hist.loss) == 3 and all(np.isfinite(hist.loss))
    assert hist.eval_steps == [2, 3] and len(calls) == 2                                # eval_fn every 2 steps, at the end
    assert all(torch.equal(before[n], after[n]) for n in lm_names)                     # stage 1: the LM is frozen
    assert any(not torch.equal(before[n], after[n]) for n in connector_names)
    assert all(torch.equal(before[n], after[n]) for n in before if n.startswith("vision_tower."))
    instruct.train_stage(model, data, run, projector_only=False, progress=False)
    assert any(not torch.equal(before[n], after[n]) for n in lm_names)                 # stage 2: the LM learns
    assert all(torch.equal(before[n], after[n]) for n in before if n.startswith("vision_tower."))


SHIPPED = {"llava_instruct_stage1": "mlp2x_gelu", "llava_instruct": "mlp2x_gelu", "llava_cmp_linear": "linear",
           "llava_cmp_mlp": "mlp2x_gelu", "llava_cmp_xattn": "cross_attention", "llava_cmp_mlp_layers": "mlp2x_gelu"}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_instruction_models_load_without_the_tower(name):
    """scripts/train_llava_instruct.py's models: float16, no tower weights, every other weight present, and the
    stage-1 model's LM is the pretrained one (stage 1 trains the connector only)."""
    from utils import DATA_DIR, llava
    from utils.checkpoints import load_checkpoint

    state, cfg = load_checkpoint(DATA_DIR / "checkpoints" / name)
    assert cfg["connector"] == SHIPPED[name] and not any(k.startswith("vision_tower.") for k in state)
    assert all(v.dtype == torch.float16 for v in state.values())
    language_model, _ = lm.load_pretrained("lm_shapes")
    model, _ = instruct.load_instruct(name, language_model, llava.load_clip_vision_tower())
    assert model.multi_modal_projector.state_dict().keys()
    inserted = any(".inserted." in k for k in state)
    assert inserted == (SHIPPED[name] == "cross_attention")
    changed = any(not torch.equal(p.half(), state[f"language_model.{n}"])
                  for n, p in language_model.named_parameters() if f"language_model.{n}" in state)
    assert changed == (name != "llava_instruct_stage1")


def test_instruct_state_and_the_shipped_features_check(tok):
    from test_llava_data import TinyTower

    cfg = lm.LMConfig(vocab_size=512, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=64, max_seq_len=128)
    model = instruct.new_instruct_model(lm.LM(cfg), TinyTower(), feature_dim=7, connector="linear")
    state = instruct.instruct_state(model)
    assert state and all(v.dtype == torch.float16 for v in state.values())
    assert not any(k.startswith("vision_tower.") for k in state) and "multi_modal_projector.weight" in state
    bad = dict(instruct.DATA_RECIPE, train=dict(n=100, seed=1))
    with pytest.raises(ValueError, match="vqa_train_features"):
        instruct.instruct_data(tok, TinyTower(), recipe=bad)


def test_train_stage_with_the_tower_unfrozen_trains_it_from_the_crops(tok):
    """Notebook 07's unfrozen-tower row: stage 2 with `tower=True` recomputes the region features from the
    crops and changes the tower; without it the tower stays as it was."""
    from utils import vit, vqa_model

    cfg = lm.LMConfig(vocab_size=512, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=64, max_seq_len=128)
    torch.manual_seed(0)
    tower = vit.ViT(vit.ViTConfig(dim=16, depth=1, heads=2, mlp_dim=32, num_classes=0))
    model = instruct.new_instruct_model(lm.LM(cfg), tower, feature_dim=16 + 3, connector="mlp2x_gelu")
    ds = vqa.make_vqa_dataset(8, seed=5)
    ids, labels = instruct.conversation_rows(tok, instruct.item_conversations(ds, turns=2))
    images = ds.with_format("numpy")["image"]
    crops, geometry, valid = vqa_model.object_crops(images)
    f_train, _ = vqa_model.object_features(images, tower)
    data = dict(f_train=f_train, train_ids=ids, train_labels=labels, train_crops=crops, train_geometry=geometry,
                train_valid=valid)
    run = dict(steps=2, batch_size=4, lr=1e-2, warmup=1, weight_decay=0.0)
    before = {n: p.detach().clone() for n, p in model.vision_tower.named_parameters()}
    instruct.train_stage(model, data, run, projector_only=False, progress=False)
    assert all(torch.equal(before[n], p) for n, p in model.vision_tower.named_parameters())
    with pytest.raises(ValueError, match="projector_only"):
        instruct.train_stage(model, data, run, projector_only=True, progress=False, tower=True)
    hist = instruct.train_stage(model, data, run, projector_only=False, progress=False, tower=True)
    assert all(np.isfinite(hist.loss))
    assert any(not torch.equal(before[n], p) for n, p in model.vision_tower.named_parameters())
    assert not torch.equal(vqa_model.object_features(images, model.vision_tower)[0], f_train)
    assert any(k.startswith("vision_tower.") for k in instruct.instruct_state(model, tower=True))


def test_the_unfrozen_tower_model_loads_on_a_copy_of_the_tower():
    """llava_cmp_mlp_tower ships its trained tower; loading it never changes the tower it is given."""
    from utils import DATA_DIR, llava
    from utils.checkpoints import load_checkpoint

    state, cfg = load_checkpoint(DATA_DIR / "checkpoints" / "llava_cmp_mlp_tower")
    assert cfg["tower"] is True and all(v.dtype == torch.float16 for v in state.values())
    tower = llava.load_clip_vision_tower()
    before = {n: p.detach().clone() for n, p in tower.named_parameters()}
    language_model, _ = lm.load_pretrained("lm_shapes")
    model, _ = instruct.load_instruct("llava_cmp_mlp_tower", language_model, tower)
    assert model.vision_tower is not tower
    assert all(torch.equal(before[n], p) for n, p in tower.named_parameters())
    assert any(not torch.equal(before[n].half(), p.half()) for n, p in model.vision_tower.named_parameters())


@pytest.fixture(scope="module")
def probe():
    import importlib.util

    from utils import REPO_ROOT

    spec = importlib.util.spec_from_file_location("probe_instruct_limits", REPO_ROOT / "scripts" / "probe_instruct_limits.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_probe_held_out_items_are_notebook_07s(probe):
    """The probes score the held-out questions notebook 07 scores (its items come from rendered images)."""
    items = probe.held_out_items(10)
    ds = vqa.make_vqa_dataset(10, seed=instruct.DATA_RECIPE["test"]["seed"])
    assert [(it["question"], it["answer"]) for it in items] == [(q, c[a]) for q, c, a in
                                                                zip(ds["question"], ds["choices"], ds["answer"])]


def test_probe_longer_lm_smoke(probe):
    """A 2-step run: the held-out blocks are the ones lm_shapes was scored on (its recorded perplexity)."""
    import json

    from utils import DATA_DIR

    out = probe.longer_lm(n_docs=40, steps=2, batch_size=2, n_items=10)
    recorded = json.loads((DATA_DIR / "checkpoints" / "lm_shapes.json").read_text())["heldout_perplexity"]
    assert out["shipped_perplexity"] == pytest.approx(recorded, abs=1e-3)
    assert out["perplexity"] > out["shipped_perplexity"] and out["train_tokens"] == 2 * 2 * 128
    for kind in ("blind", "described"):
        assert set(out[kind]) == {*vqa.QUESTION_TYPES, "overall"} and all(0 <= v <= 1 for v in out[kind].values())
    assert set(out["described_distinct_answers"]) == set(vqa.QUESTION_TYPES)
    assert all(1 <= n <= 2 for n in out["described_distinct_answers"].values())   # 2 items per kind


def test_probe_question_rows_smoke(probe):
    """A 3-step run: more one-turn rows than scenes, evaluated after stage 1, at step 2 and at the end."""
    out = probe.question_rows(steps=3, reps=1, eval_every=2, stage1=1)
    assert out["scenes"] == instruct.DATA_RECIPE["train"]["n"] and out["rows"] > 2 * out["scenes"]
    assert [r["step"] for r in out["results"]] == [0, 2, 3]
    assert all(0 <= r["overall"] <= 1 for r in out["results"])
