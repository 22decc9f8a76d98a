"""utils.assistant (notebook 07): LLaVA's two stages on a Llama with LoRA adapters from peft, checked on a tiny random
Llama built locally with SmolLM2's tokenizer (`make setup` converts it into .cache/): what each stage trains and
what stays frozen, the label mask and its one-token shift, adapters saved and loaded to the same logits, resuming,
batched answers equal to one-at-a-time ones, the bad inputs `answer_questions` refuses, and the script's smoke run."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from utils import assistant as A
from utils import checkpoints, instruct, smollm, vqa
from tests.tiny_llama import LORA, smol_tokenizer, tiny_llama
from utils.lm import IGNORE_INDEX

torch.set_num_threads(2)
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tok():
    return smol_tokenizer(smollm.add_image_token)


def tiny(tok, lora=True, seed=0):
    """A 2-layer Llama of width 32 with SmolLM2's vocabulary, under the assistant's connector (and LoRA)."""
    model = A.new_model(tiny_llama(tok, seed), tok, feature_dim=67, seed=seed)
    return A.add_lora(model, LORA, seed=seed) if lora else model


def rows(tok, n=8, seed=0):
    rng = np.random.default_rng(seed)
    scenes, convs = instruct.make_conversations(n, seed=seed, turns=3)
    ids, labels = instruct.conversation_rows(tok, convs)
    return torch.from_numpy(rng.normal(size=(n, 4, 67)).astype(np.float32)), ids, labels


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("stage", [1, 2])
def test_each_stage_trains_only_its_parameters(tok, stage):
    model = tiny(tok)
    before = snapshot(model)
    cfg = A.StageConfig(steps=2, batch_size=4, lr_connector=1e-2, lr_lora=1e-2 if stage == 2 else 0.0, warmup=1)
    A.train_stage(model, rows(tok), cfg, show=False)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    connector = {k for k in before if A.is_connector(k)}
    lora = {k for k in before if A.is_lora(k)}
    assert connector and lora and connector <= changed
    if stage == 1:
        assert trainable == connector and changed == connector          # the LM and its adapters frozen
    else:
        assert trainable == connector | lora and changed == connector | lora   # the LM's own weights frozen
        assert all(before[k].abs().sum() == 0 for k in lora if ".lora_B." in k)   # B starts at 0 ...
    # ... so, before any training, the adapters leave the LM's logits exactly as they were
    plain, adapted = tiny(tok, lora=False), tiny(tok)
    f, ids, labels = rows(tok, 2)
    ids = ids.masked_fill(ids == plain.image_token_id, 0)           # text only: `<image>` is past the vocabulary
    with torch.no_grad():
        assert torch.equal(plain.language_model(ids).logits, adapted.language_model(ids).logits)


def test_stage_two_without_adapters_is_refused(tok):
    with pytest.raises(ValueError, match="add_lora"):
        A.train_stage(tiny(tok, lora=False), rows(tok), A.StageConfig(steps=1, batch_size=4, lr_connector=1e-3,
                                                                      lr_lora=1e-3), show=False)


def test_label_mask_of_a_conversation_row_and_its_one_token_shift(tok):
    model = tiny(tok)
    f, ids, labels = rows(tok, 1)
    row = labels[0][labels[0] != IGNORE_INDEX]
    scenes, convs = instruct.make_conversations(1, seed=0, turns=3)
    assert tok.decode(row) == "".join(f"{t[2]}<|im_end|>" for t in convs[0])   # only the answers and their ends
    # the loss at position t predicts label t + 1: the same value as cross-entropy over shifted logits
    embeds, spliced = model.embed(f, ids, labels)
    logits = model.language_model(inputs_embeds=embeds).logits                # (1, L', V)
    keep = spliced[0, 1:] != IGNORE_INDEX
    reference = F.cross_entropy(logits[0, :-1][keep], spliced[0, 1:][keep])
    assert torch.allclose(model.loss(f, ids, labels), reference, atol=1e-5)


def test_adapters_round_trip_through_safetensors_to_the_same_logits(tok, tmp_path):
    model = tiny(tok)
    A.train_stage(model, rows(tok), A.StageConfig(steps=2, batch_size=4, lr_connector=1e-2, lr_lora=1e-2, warmup=1),
                  show=False)
    path = checkpoints.save_checkpoint(tmp_path / "assistant", A.trainable_state(model), {"lora": LORA})
    state, cfg = checkpoints.load_checkpoint(path, verify=False)
    fresh = tiny(tok, seed=1)                                       # other initial weights for connector and LoRA
    fresh.language_model.load_state_dict({k: v for k, v in model.language_model.state_dict().items()
                                          if not A.is_lora("language_model." + k)}, strict=False)
    A.load_trainable(fresh, state)
    f, ids, labels = rows(tok, 2)
    with torch.no_grad():
        a = model.language_model(inputs_embeds=model.embed(f, ids)[0]).logits
        b = fresh.language_model(inputs_embeds=fresh.embed(f, ids)[0]).logits
    assert torch.allclose(a, b, atol=1e-6)
    with pytest.raises(ValueError, match="do not fit"):
        A.load_trainable(tiny(tok, lora=False), state)


def test_training_resumes_from_its_saved_state_to_the_same_weights(tok, tmp_path):
    cfg = A.StageConfig(steps=4, batch_size=4, lr_connector=1e-2, lr_lora=1e-2, warmup=1, eval_every=3, save_every=2)
    data = rows(tok)
    straight = tiny(tok)
    A.train_stage(straight, data, cfg, eval_fn=lambda m, s: {"step": s}, show=False)

    def stop_at_3(m, step):
        raise KeyboardInterrupt                                      # killed after step 3, saved at step 2

    interrupted = tiny(tok)
    with pytest.raises(KeyboardInterrupt):
        A.train_stage(interrupted, data, cfg, tmp_path / "state.pt", eval_fn=stop_at_3, show=False)
    resumed = tiny(tok)
    hist = A.train_stage(resumed, data, cfg, tmp_path / "state.pt", eval_fn=lambda m, s: {"step": s}, show=False)
    assert len(hist["loss"]) == 4 and hist["eval_steps"] == [3, 4]
    for k, v in A.trainable_state(straight).items():
        assert torch.allclose(v, A.trainable_state(resumed)[k], atol=1e-6), k
    with pytest.raises(ValueError, match="another configuration"):
        A.train_stage(tiny(tok), data, A.StageConfig(**{**vars(cfg), "lr_lora": 1e-3}), tmp_path / "state.pt",
                      show=False)


@pytest.mark.parametrize("scores, patience, stop", [
    ([0.5, 0.6, 0.55, 0.58, 0.59], 3, True),     # best 3 evaluations back, none since reached it
    ([0.5, 0.6, 0.55, 0.58, 0.60], 3, False),    # the last one ties the best: go on
    ([0.5, 0.6, 0.55, 0.58], 3, False),          # only 2 evaluations since the best
    ([0.5, 0.4, 0.3, 0.2], 3, True),             # never above the start (step 0)
    ([0.5, 0.4, 0.3, 0.2], 4, False),            # too few evaluations for patience 4
    ([0.5], 1, False),
])
def test_patience_exhausted_by_hand(scores, patience, stop):
    assert A.patience_exhausted(scores, patience) is stop


def test_patience_exhausted_refuses_patience_below_one():
    with pytest.raises(ValueError, match="patience"):
        A.patience_exhausted([0.5, 0.6], 0)


def test_batch_rows_cover_each_epoch_once():
    seen = torch.cat([A.batch_rows(s, 10, 3, seed=0) for s in range(3)])
    assert sorted(seen.tolist()) == sorted(set(seen.tolist())) and len(seen) == 9
    assert torch.equal(A.batch_rows(4, 10, 3, seed=0), A.batch_rows(4, 10, 3, seed=0))
    with pytest.raises(ValueError, match="batch_size"):
        A.batch_rows(0, 2, 3, seed=0)


@pytest.fixture(scope="module")
def scenes_and_images():
    ds = vqa.make_vqa_dataset(6, seed=5)
    return np.asarray(ds.with_format("numpy")["image"]), list(ds["question"])


def test_answer_questions_batched_equals_one_at_a_time(tok, scenes_and_images):
    from utils.llava import load_clip_vision_tower

    images, questions = scenes_and_images
    model, tower = tiny(tok), load_clip_vision_tower()
    questions = questions[:3] + ["Is it?", "How many red objects are there in the picture?", questions[3]]
    together = A.answer_questions(images, questions, model, tok, tower, max_new_tokens=5)
    alone = [A.answer_questions(images[i:i + 1], questions[i:i + 1], model, tok, tower, max_new_tokens=5)[0]
             for i in range(len(questions))]
    assert together == alone and len(together) == 6


@pytest.mark.parametrize("images, questions, match", [
    (np.zeros((2, 32, 32), np.uint8), ["a", "b"], "images must be an array"),
    (np.zeros((2, 32, 32, 3), np.float32), ["a", "b"], "uint8"),
    (np.zeros((0, 32, 32, 3), np.uint8), [], "empty batch"),
    (np.zeros((2, 32, 32, 3), np.uint8), ["a"], "one question per image"),
    ([[0]], ["a"], "images must be an array"),
    (np.zeros((1, 32, 32, 3), np.uint8), "What colour?", "questions"),
])
def test_answer_questions_refuses_bad_inputs(tok, images, questions, match):
    with pytest.raises((ValueError, TypeError), match=match):
        A.answer_questions(images, questions, tiny(tok), tok)


@pytest.mark.parametrize("k, n", [(8, 10), (0, 80), (80, 80), (43, 80), (344, 400)])
def test_wilson_interval_equals_scipys(k, n):
    from scipy.stats import binomtest

    ref = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    lo, hi = A.wilson_interval(k / n, n)
    assert lo == pytest.approx(ref.low, abs=2e-4) and hi == pytest.approx(ref.high, abs=2e-4)  # z = 1.96 vs 1.95996


def test_accuracy_with_interval_per_kind_and_overall():
    items = [dict(qtype="colour", answer="red")] * 10 + [dict(qtype="describe", answer="a small red circle")]
    acc = A.accuracy_with_interval(["red"] * 8 + ["blue"] * 2 + ["a small red circle"], items)
    assert acc["colour"][0] == 0.8 and acc["colour"][3] == 10 and acc["overall"] == acc["colour"]
    assert acc["describe"][0] == 1.0 and acc["colour"][1] < 0.8 < acc["colour"][2]
    with pytest.raises(ValueError, match="same length"):
        A.accuracy_with_interval(["red"], items)


def test_shipped_assistant_checkpoint_records_its_recipe():
    path = ROOT / "data" / "checkpoints" / f"{A.CHECKPOINT}.json"
    if not path.exists():
        pytest.skip("no shipped assistant yet")
    state, cfg = checkpoints.load_checkpoint(ROOT / "data" / "checkpoints" / A.CHECKPOINT)
    assert cfg["lora"]["r"] and cfg["lora"]["target_modules"] and cfg["stage2"]["lr_lora"] > 0
    assert all(A.is_connector(k) or A.is_lora(k) for k in state)
    assert cfg["results"]["stage2"]["best_step"] in cfg["results"]["stage2"]["eval_steps"]


def test_shipped_stage1_is_the_one_the_script_reuses():
    """--reuse-stage1 starts stage 2 from the shipped stage-1 connector: it must be STAGE1's, and the shipped
    assistant must record that same stage 1."""
    import importlib.util

    if not (ROOT / "data" / "checkpoints" / f"{A.CHECKPOINT}_stage1.json").exists():
        pytest.skip("no shipped stage 1 yet")
    spec = importlib.util.spec_from_file_location("train_smol_assistant", ROOT / "scripts" / "train_smol_assistant.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    stage1 = checkpoints.read_json(ROOT / "data" / "checkpoints" / f"{A.CHECKPOINT}_stage1.json")
    final = checkpoints.read_json(ROOT / "data" / "checkpoints" / f"{A.CHECKPOINT}.json")
    assert stage1["stage1"] == vars(script.STAGE1) == final["stage1"]
    assert A.stage1_recipe(stage1["recipe"]) == A.stage1_recipe() and final["recipe"] == A.RECIPE
    assert final["results"]["stage1"]["held_out"]["answers"] == stage1["results"]["held_out"]["answers"]
    assert final["stage2"] == vars(script.STAGE2)


def test_script_smoke_mode(tmp_path):
    out = subprocess.run([sys.executable, "scripts/train_smol_assistant.py", "--smoke", "--state-dir", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "stage 1: 2 steps" in out.stdout and "validation picks step 2" in out.stdout
    assert "smoke run: nothing written" in out.stdout


def test_smollm_reexports_answer_questions(tok, scenes_and_images):
    images, questions = scenes_and_images
    model = tiny(tok)
    assert smollm.answer_questions(images[:2], questions[:2], model=model, tokenizer=tok, max_new_tokens=3) == \
        A.answer_questions(images[:2], questions[:2], model, tok, max_new_tokens=3)


def test_online_loader_falls_back_to_the_wheel_with_the_shipped_adapters(monkeypatch, capsys):
    if not (ROOT / "data" / "checkpoints" / f"{A.CHECKPOINT}.safetensors").exists():
        pytest.skip("no shipped assistant yet")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")                    # the Hub refuses at once: the fallback line
    model, tokenizer, cfg = A.load_assistant(online=True)
    assert "using the GGUF file" in capsys.readouterr().out
    assert any(A.is_lora(k) for k in model.state_dict()) and cfg["lora"]["r"] == A.LORA["r"]


def test_region_attributes_match_tokens_to_objects_by_centre():
    from utils import shapes

    scenes, _ = instruct.make_conversations(5, seed=3)
    tokens, valid = torch.zeros(5, 4, 67), torch.zeros(5, 4, dtype=torch.bool)
    want_c, want_s = [], []
    for b, scene in enumerate(scenes):
        for k, o in enumerate(reversed(scene.objects)):              # slots in another order than the scene's
            tokens[b, k, :64] = b * 10 + k
            tokens[b, k, -3:] = torch.tensor([o.x / scene.canvas + 0.01, o.y / scene.canvas - 0.01, 0.05])
            valid[b, k] = True
            want_c.append(shapes.COLOR_NAMES.index(o.color))
            want_s.append(shapes.SHAPES.index(o.shape))
    feats, colours, kinds = A.region_attributes(tokens, valid, scenes)
    assert colours.tolist() == want_c and kinds.tolist() == want_s and feats.shape == (len(want_c), 64)
    with pytest.raises(ValueError, match="must agree"):
        A.region_attributes(tokens, valid, scenes[:4])
