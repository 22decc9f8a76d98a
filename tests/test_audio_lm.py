"""utils.audio_lm (notebook 10's speech LM on SmolLM2): on a tiny random Llama built locally with SmolLM2's
tokenizer, the rows' label mask, what stage 1 and SFT train, the answers' log-probabilities against the full
logits, the DPO step against a hand computation, the encoder against `speech_lm.encode_utterances`, `transcribe`
batched against one at a time and its refusals, the script's smoke run, and the shipped models' record."""
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from utils import assistant as A
from utils import audio_lm as al
from utils import checkpoints
from utils import audio_transformer as at
from utils import speech_lm as sl
from tests.tiny_llama import LORA, smol_tokenizer, tiny_llama
from utils.lm import IGNORE_INDEX

torch.set_num_threads(2)
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tok():
    return smol_tokenizer(al.add_audio_token)


@pytest.fixture(scope="module")
def clips():
    return sl.load_word_clips()


@pytest.fixture(scope="module")
def encoder():
    return al.load_encoder()


def tiny(tok, seed=0, lora=True):
    """A 2-layer Llama of width 32 with SmolLM2's vocabulary, under the speech LM's connector (and LoRA)."""
    model = al.new_model(tiny_llama(tok, seed), tok, feature_dim=64, seed=seed)
    return A.add_lora(model, LORA, seed=seed) if lora else model


def test_rows_carry_labels_on_the_answer_and_its_end_only(tok):
    ids, labels = al.rows(tok, ["Transcribe the speech.", "Is 'up' said?"], [" up down", "yes"])
    audio_id, end = tok.convert_tokens_to_ids(al.AUDIO_TOKEN), tok.convert_tokens_to_ids("<|im_end|>")
    assert ((ids == audio_id).sum(1) == 1).all()                                    # one placeholder a row
    for r, answer in enumerate(["up down", "yes"]):                                 # the answer stripped
        carried = ids[r][labels[r] != IGNORE_INDEX].tolist()
        assert carried == tok(answer)["input_ids"] + [end]
        assert tok.decode(ids[r][:(labels[r] != IGNORE_INDEX).nonzero()[0, 0]]) == al.prompt(["Transcribe the speech.",
                                                                                             "Is 'up' said?"][r])
    with pytest.raises(ValueError, match="same length"):
        al.rows(tok, ["a"], ["b", "c"])


def test_row_texts_invert_rows(tok):
    questions, answers = ["Transcribe the speech.", "Is 'up' said?", "Say the words in reverse order."], \
        [" up down", "yes", "no go left right"]
    ids, labels = al.rows(tok, questions, answers)                                  # right-padded to one length
    assert al.row_texts(tok, ids, labels) == [(q, a.strip()) for q, a in zip(questions, answers)]
    q = ["Say the words in reverse order."]
    chosen, rejected = al.rows(tok, q, ["go yes stop"]), al.rows(tok, q, ["go yes left no"])
    cut = al.rejected_to_first_error(chosen[1], rejected[1])
    assert al.row_texts(tok, rejected[0], cut) == [(q[0], "go yes left")]            # the labelled tokens only


@pytest.mark.parametrize("stage", ["pretraining", "sft"])
def test_stage_one_trains_the_connector_alone_and_sft_adds_lora(tok, stage):
    model = tiny(tok)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids, labels = al.rows(tok, ["Transcribe the speech."] * 4, ["up", "down left", "go", "no yes"])
    cfg = A.StageConfig(steps=2, batch_size=2, lr_connector=1e-2, lr_lora=1e-2 if stage == "sft" else 0.0, warmup=1)
    A.train_stage(model, (torch.randn(4, 31, 64), ids, labels), cfg, show=False)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(before[k], v)}
    connector = {k for k in before if A.is_connector(k)}
    lora = {k for k in before if A.is_lora(k)}
    assert changed == (connector if stage == "pretraining" else connector | lora)   # the LM's own weights frozen


def test_answer_logprobs_equal_sequence_logprob_on_the_full_logits(tok):
    model = tiny(tok)
    ids, labels = al.rows(tok, ["Transcribe the speech.", "What is the first word?", "Say the words in reverse order."],
                          ["up down left", "go", "right on"])
    tokens = torch.randn(3, 31, 64)
    with torch.no_grad():
        got = al.answer_logprobs(model, tokens, ids, labels)
        embeds, spliced = model.embed(tokens, ids, labels)
        full = at.sequence_logprob(model.language_model(inputs_embeds=embeds).logits, spliced)
    assert torch.allclose(got, full, atol=1e-5)


def test_dpo_step_starts_at_ln2_equals_the_hand_formula_and_moves_towards_the_chosen(tok):
    model = tiny(tok)
    questions = ["Which word comes after 'up'?", "Is 'go' said?"]
    chosen = al.rows(tok, questions, ["down", "yes"])
    rejected = al.rows(tok, questions, ["left", "no"])
    tokens = torch.randn(2, 31, 64)
    with torch.no_grad():                                        # the reference: the model before any DPO step
        ref_c, ref_r = al.answer_logprobs(model, tokens, *chosen), al.answer_logprobs(model, tokens, *rejected)
    loss, logs = al.dpo_step_loss(model, tokens, chosen, rejected, ref_c, ref_r, beta=0.1)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6) and logs["margin"] == pytest.approx(0, abs=1e-6)
    params = A.set_trainable(model, lora=True)
    opt = torch.optim.SGD(params, lr=1.0)
    loss.backward()
    opt.step()
    after, logs = al.dpo_step_loss(model, tokens, chosen, rejected, ref_c, ref_r, beta=0.1)
    with torch.no_grad():                                        # the loss by hand from the new log-probabilities
        pc, pr = al.answer_logprobs(model, tokens, *chosen), al.answer_logprobs(model, tokens, *rejected)
    margin = 0.1 * ((pc - ref_c) - (pr - ref_r))
    assert after.item() == pytest.approx(torch.log1p(torch.exp(-margin)).mean().item(), abs=1e-6)
    assert after.item() < math.log(2) and logs["margin"] > 0


def test_dpo_nll_term_is_trl_rpo_the_chosen_answers_mean_token_cross_entropy(tok):
    """TRL's rpo_alpha: loss = DPO + alpha * the cross-entropy of the chosen answers' tokens, averaged over all the
    batch's answer tokens; here against the LM's own `labels=` loss on the spliced rows."""
    model = tiny(tok)
    questions = ["Which word comes after 'up'?", "Say the words in reverse order."]
    chosen = al.rows(tok, questions, ["down", "go stop left"])
    rejected = al.rows(tok, questions, ["left", "go stop"])
    tokens = torch.randn(2, 31, 64)
    with torch.no_grad():
        ref_c, ref_r = al.answer_logprobs(model, tokens, *chosen), al.answer_logprobs(model, tokens, *rejected)
        dpo, _ = al.dpo_step_loss(model, tokens, chosen, rejected, ref_c, ref_r, beta=0.1)
        both, logs = al.dpo_step_loss(model, tokens, chosen, rejected, ref_c, ref_r, beta=0.1, nll_weight=0.5)
        embeds, labels = model.embed(tokens, *chosen)
        nll = model.language_model(inputs_embeds=embeds, labels=labels).loss     # mean over the answer tokens
    assert logs["nll"] == pytest.approx(nll.item(), abs=1e-5)
    assert both.item() == pytest.approx(dpo.item() + 0.5 * nll.item(), abs=1e-5)
    with pytest.raises(ValueError, match="nll_weight"):
        al.dpo_step_loss(model, tokens, chosen, rejected, ref_c, ref_r, beta=0.1, nll_weight=-1.0)


@pytest.mark.parametrize("chosen, rejected, kept", [
    ("go yes stop", "go yes left", ["go", " yes", " left"]),                  # a wrong word: kept up to it
    ("go yes stop", "go yes stop left", ["go", " yes", " stop", " left"]),    # a word added: no end kept
    ("go yes stop", "go yes", ["go", " yes", "<|im_end|>"]),                  # a word dropped: the early end kept
    ("left down no up", "left drop no up", ["left", " drop"]),               # the rest follows a wrong token
])
def test_rejected_to_first_error_keeps_the_labels_up_to_the_first_wrong_token(tok, chosen, rejected, kept):
    q = ["Say the words in reverse order."]
    c, r = al.rows(tok, q, [chosen]), al.rows(tok, q, [rejected])
    labels = al.rejected_to_first_error(c[1], r[1])
    assert labels.shape == r[1].shape
    got = labels[0][labels[0] != IGNORE_INDEX].tolist()
    assert [tok.convert_ids_to_tokens(t).replace("\u0120", " ") for t in got] == kept
    carried = (r[1][0] != IGNORE_INDEX).nonzero()[:, 0]
    assert torch.equal(labels[0][carried[:len(kept)]], r[1][0][carried[:len(kept)]])   # the same tokens, a prefix


def test_rejected_to_first_error_leaves_only_the_first_wrong_token_in_the_margin(tok):
    """The shared prefix is scored in the same context in both answers, so it cancels from log pi(y_w) - log pi(y_l):
    with the rejected answer cut at its first wrong token, the margin reads that token against the right one."""
    model = tiny(tok)
    q = ["Say the words in reverse order."]
    chosen, rejected = al.rows(tok, q, ["go yes stop"]), al.rows(tok, q, ["go yes left no"])
    cut = (rejected[0], al.rejected_to_first_error(chosen[1], rejected[1]))
    first = (chosen[0], al.rejected_to_first_error(rejected[1], chosen[1]))           # the chosen cut the same way
    tokens = torch.randn(1, 31, 64)
    with torch.no_grad():
        diff = al.answer_logprobs(model, tokens, *first) - al.answer_logprobs(model, tokens, *cut)
        embeds, labels = model.embed(tokens, *chosen)
        logp = torch.log_softmax(model.language_model(inputs_embeds=embeds).logits[0].float(), -1)
    at_error = (labels[0] != IGNORE_INDEX).nonzero()[2, 0]                             # " stop" vs " left"
    want = logp[at_error - 1, labels[0, at_error]] - logp[at_error - 1, tok.convert_tokens_to_ids("\u0120left")]
    assert diff.item() == pytest.approx(want.item(), abs=1e-4)


def test_rejected_to_first_error_refuses_pairs_it_cannot_compare(tok):
    c = al.rows(tok, ["Is 'go' said?"], ["yes"])
    with pytest.raises(ValueError, match="same answer"):
        al.rejected_to_first_error(c[1], c[1])
    other = al.rows(tok, ["Which word comes after 'up'?"], ["yes"])
    with pytest.raises(ValueError, match="same question"):
        al.rejected_to_first_error(c[1], other[1])


def test_encode_waveforms_equals_encode_utterances(clips, encoder):
    utts = sl.make_utterances(clips, "test", 3, seed=0)
    x = torch.stack([sl.utterance_waveform(clips.waves, u) for u in utts])
    stats = encoder.normalisation
    want = sl.encode_utterances(encoder, clips.waves, utts, stats["mean"], stats["std"])
    got = al.encode_waveforms(encoder, x, batch_size=2)
    assert got.shape == (3, 31, 64) and torch.allclose(got, want, atol=1e-6)


def test_transcribe_batched_equals_one_at_a_time(tok, clips, encoder):
    model = tiny(tok, seed=1)
    utts = sl.make_utterances(clips, "test", 4, seed=1)
    waves = [sl.utterance_waveform(clips.waves, u)[: 16000 * (2 + k)] for k, u in enumerate(utts)]   # 2-5 s long
    batched = al.transcribe(waves, model=model, encoder=encoder, tokenizer=tok)
    single = [al.transcribe([w], model=model, encoder=encoder, tokenizer=tok)[0] for w in waves]
    assert batched == single and all(t == t.lower() for t in batched)


@pytest.mark.parametrize("waves, match", [
    (torch.zeros(2, 16000), "list"), ([], "non-empty list"), ([torch.zeros(2, 100)], r"waveforms\[0\]"),
    ([torch.zeros(100), torch.zeros(100, dtype=torch.int16)], r"waveforms\[1\]"),
    ([torch.zeros(16000 * 8)], "at most 7 s")])
def test_transcribe_refuses_bad_inputs(waves, match):
    with pytest.raises(ValueError, match=match):
        al.transcribe(waves)


def test_script_smoke_mode(tmp_path):
    out = subprocess.run([sys.executable, "scripts/train_audio_lm.py", "--smoke", "--state-dir", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "smoke run: nothing written" in out.stdout and "DPO step 2" in out.stdout


def test_shipped_audio_lm_records_its_stages():
    path = ROOT / "data" / "checkpoints" / f"{al.CHECKPOINT}.json"
    if not path.exists():
        pytest.skip("no shipped audio_lm yet")
    record = checkpoints.read_json(path)
    assert record["stages"]["stage1"]["trainable"]["lora"] == 0 and record["stages"]["stage1"]["trainable"]["lm"] == 0
    assert record["stages"]["sft"]["trainable"]["lora"] > 0 and record["stages"]["sft"]["trainable"]["lm"] == 0
    assert record["stages"]["dpo_plain"]["trainable"]["connector"] > 0 and record["stages"]["dpo"]["trainable"]["connector"] == 0
    assert record["stages"]["dpo"]["trainable"]["lora"] > 0 and record["stages"]["dpo"]["trainable"]["lm"] == 0
    if "dpo_whole" in record["stages"]:                 # the shipped run cuts the rejected answers, its ablations not
        assert record["stages"]["dpo"]["rejected"] == "to first error"
        assert record["stages"]["dpo_whole"]["rejected"] == record["stages"]["dpo_plain"]["rejected"] == "whole"
        assert record["stages"]["dpo_whole"]["pairs"] == record["stages"]["dpo"]["pairs"]
    if "speeds" in record["stages"]["dpo"]["mining"]:   # mined at new speeds: the SFT model on those, step 0
        assert record["stages"]["dpo"]["mining"]["speeds"] == record["recipe"]["dpo"]["speed_factors"]
        assert all(run["val"][0] == record["stages"]["dpo"]["val"][0]
                   for k, run in record["stages"].items() if k.startswith("dpo"))
    dpo_runs = [k for k in record["stages"] if k.startswith("dpo")]
    for name in dpo_runs:                               # pi = pi_ref: log 2
        first = record["stages"][name]["log"][0]
        dpo_term = first["loss"] - record["stages"][name]["nll_weight"] * first.get("nll", 0.0)
        assert dpo_term == pytest.approx(math.log(2), abs=1e-4)
    assert set(record["results"]) >= {"stage1", "sft", "dpo_plain", "dpo", "sft_only", "blind", "cascade"}
    for name in [k for k in dpo_runs if k.startswith("dpo_order")]:   # the shipped recipe in another batch order
        assert {k: v for k, v in record["recipe"][name].items() if k != "seed"} == \
            {k: v for k, v in record["recipe"]["dpo"].items() if k != "seed"}
        assert record["recipe"][name]["seed"] != record["recipe"]["dpo"]["seed"] and name in record["results"]
    if "dpo_pairs" in record:                           # the pairs as text: one per pair trained on, all wrong
        assert len(record["dpo_pairs"]) == record["stages"]["dpo"]["pairs"]
        assert all(p["chosen"] != p["rejected"] for p in record["dpo_pairs"])
    for name in [k for k in dpo_runs if "stopped_at" in record["stages"][k]]:
        run = record["stages"][name]                   # early stopping: a run ends at its steps or out of patience
        scores = [sum(1 - v[k] if k == "transcribe" else v[k] for k in sl.ALL_KINDS) / len(sl.ALL_KINDS)
                  for v in run["val"]]
        assert len(run["log"]) == run["stopped_at"] <= run["steps"] and run["val"][-1]["step"] == run["stopped_at"]
        assert run["stopped_at"] == run["steps"] or A.patience_exhausted(scores, run["patience"])
        assert not any(A.patience_exhausted(scores[:i], run["patience"]) for i in range(1, len(scores)))
        best = max(range(1, len(scores)), key=lambda i: (scores[i], i))       # the picked step: best validation
        assert run["picked_step"] == run["val"][best]["step"]


def test_shipped_transcribe_gives_the_scripts_held_out_transcripts(clips):
    """The public entry point on the shipped DPO model: unpadded held-out utterances in, the transcripts the script
    recorded out (greedy; a near tie may flip across CPUs, so 7 of 8)."""
    path = ROOT / "data" / "checkpoints" / f"{al.CHECKPOINT}.json"
    if not path.exists():
        pytest.skip("no shipped audio_lm yet")
    record = checkpoints.read_json(path)
    utts = sl.make_utterances(clips, "test", record["recipe"]["n"]["test"], record["recipe"]["utterance_seeds"]["test"])[:8]
    waves = [sl.utterance_waveform(clips.waves, u)[:sl.SAMPLE_RATE * len(u.clips) + sum(u.gaps)] for u in utts]
    got = al.transcribe(waves)
    assert all(isinstance(t, str) and t == t.lower() for t in got)
    assert sum(a == b for a, b in zip(got, record["results"]["dpo_answers"]["transcribe"][:8])) >= 7


def test_shipped_encoder_is_the_one_its_record_measured(clips, encoder):
    """The shipped speech LM's own encoder (trained on centred and moved clips): loaded from `audio_lm`, not section
    2's AST, and on the held-out clips moved by 0-100 ms it scores what the script recorded (within one clip of 88,
    which a near tie may flip across CPUs)."""
    record = checkpoints.read_json(ROOT / "data" / "checkpoints" / f"{al.CHECKPOINT}.json")
    if "encoder" not in record:
        pytest.skip("the shipped audio_lm was trained on section 2's AST")
    section2 = al.load_encoder("speech_lm")
    assert any(not torch.equal(a, b) for a, b in zip(encoder.state_dict().values(), section2.state_dict().values()))
    held = ~clips.is_train
    stats = encoder.normalisation
    got = sl.shifted_accuracy(encoder, clips.waves[held], clips.y[held], stats["mean"], stats["std"])
    want = record["encoder"]["held_out_shifted"]
    assert set(want) == {f"{ms} ms {side}" for ms, side in got}
    for (ms, side), acc in got.items():
        assert acc == pytest.approx(want[f"{ms} ms {side}"], abs=1.5 / int(held.sum())), (ms, side)
