"""utils.speech_lm: word error rate against torchaudio's edit distance, utterances built from the shipped clips
(no boundaries, different words, gaps in range), the AST's sliding windows against a loop, the tasks' answers,
batched answering against one row at a time, and DPO on a policy equal to its reference (loss ln 2)."""
import copy
import math

import numpy as np
import pytest
import torch
import torchaudio

from utils import audio
from utils import audio_transformer as at
from utils import lm
from utils import speech_lm as sl

WORDS = ["baby", "down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes"]


# ----------------------------------------------------------------------------- word error rate
@pytest.mark.parametrize("hyp, ref", [
    ("up left", "up left"), ("up", "up left"), ("up left stop", "up stop"), ("", "yes no"),
    ("left up", "up left"), ("go go go", "go"), ("a b c d", "d c b a"), ("on off on", "off on off on"),
])
def test_word_errors_equal_torchaudio_edit_distance(hyp, ref):
    assert sl.word_errors(hyp, ref) == torchaudio.functional.edit_distance(ref.split(), hyp.split())


def test_word_error_rate_on_random_strings_equals_torchaudio():
    g = np.random.default_rng(0)
    hyps, refs = [], []
    for _ in range(200):
        refs.append(" ".join(g.choice(WORDS, g.integers(1, 6))))
        hyps.append(" ".join(g.choice(WORDS, g.integers(0, 7))))
    expected = sum(torchaudio.functional.edit_distance(r.split(), h.split()) for h, r in zip(hyps, refs))
    expected /= sum(len(r.split()) for r in refs)
    assert sl.word_error_rate(hyps, refs) == pytest.approx(expected, abs=1e-12)


def test_scores_refuse_bad_inputs():
    with pytest.raises(ValueError, match="same length"):
        sl.word_error_rate(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="no words"):
        sl.word_error_rate(["a"], [""])
    with pytest.raises(ValueError, match="same length"):
        sl.exact_match([], [])
    assert sl.exact_match([" yes", "no "], ["yes", "yes"]) == 0.5


# ----------------------------------------------------------------------------- utterances
@pytest.fixture(scope="module")
def clips():
    return sl.load_word_clips()


def test_word_clips_are_the_shipped_split(clips):
    assert clips.waves.shape == (352, 16000) and clips.words == WORDS
    assert len(clips.voices["train"]) == 6 and len(clips.voices["test"]) == 2
    assert not set(clips.voices["train"]) & set(clips.voices["test"])


def test_utterances_have_different_words_of_one_voice_and_gaps_in_range(clips):
    utts = sl.make_utterances(clips, "test", 300, seed=0)
    assert utts == sl.make_utterances(clips, "test", 300, seed=0)              # seeded
    lengths = set()
    for u in utts:
        assert u.voice in clips.voices["test"] and len(set(u.words)) == len(u.words)
        assert all(clips.rows[c]["voice"] == u.voice and clips.rows[c]["word"] == w for c, w in zip(u.clips, u.words))
        assert all(0.1 * 16000 <= g <= 0.5 * 16000 for g in u.gaps) and len(u.gaps) == len(u.words) - 1
        lengths.add(len(u.words))
    assert lengths == {2, 3, 4, 5}
    with pytest.raises(ValueError, match="split"):
        sl.make_utterances(clips, "validation", 3, seed=0)
    with pytest.raises(ValueError, match="words_per_utterance"):
        sl.make_utterances(clips, "train", 3, seed=0, words_per_utterance=(2, 12))


def test_utterance_waveform_is_the_clips_and_the_gaps(clips):
    u = sl.make_utterances(clips, "train", 1, seed=3)[0]
    x = sl.utterance_waveform(clips.waves, u)
    assert x.shape == (int(sl.MAX_SECONDS * 16000),)
    start = 0
    for k, c in enumerate(u.clips):
        assert torch.equal(x[start:start + 16000], clips.waves[c])
        start += 16000
        if k < len(u.gaps):
            assert not x[start:start + u.gaps[k]].any()
            start += u.gaps[k]
    assert not x[start:].any()
    with pytest.raises(ValueError, match="longer"):
        sl.utterance_waveform(clips.waves, u, seconds=1.0)


def test_shift_waves_equals_slicing_by_hand():
    g = np.random.default_rng(0)
    waves = torch.from_numpy(g.standard_normal((4, 50)).astype(np.float32))
    shifts = [7, -3, 0, 49]
    out = sl.shift_waves(waves, shifts)
    assert out.shape == waves.shape and out.dtype == waves.dtype
    for x, y, s in zip(waves.numpy(), out.numpy(), shifts):
        ref = np.zeros_like(x)                          # later by s samples (earlier if s < 0), silence moved in
        if s >= 0:
            ref[s:] = x[:len(x) - s]
        else:
            ref[:s] = x[-s:]
        np.testing.assert_array_equal(y, ref)
    centred = torch.zeros(2, 40)
    centred[:, 15:25] = 1.0                             # a word with 15 samples of silence either side
    assert torch.equal(sl.shift_waves(sl.shift_waves(centred, [10, -15]), [-10, 15]), centred)
    for bad, match in (([1, 2], "one shift per"), ([0, 0, 0, 50], "shorter than"), ([0.5] * 4, "integer")):
        with pytest.raises(ValueError, match=match):
            sl.shift_waves(waves, bad)


def test_shifted_copies_are_each_clip_moved_by_a_shift_in_range():
    g = np.random.default_rng(1)
    waves = torch.from_numpy(g.standard_normal((3, 40)).astype(np.float32))
    labels = torch.tensor([2, 0, 1])
    out, y = sl.shifted_copies(waves, labels, copies=4, max_shift=6, seed=0)
    assert out.shape == (12, 40) and torch.equal(y, labels.repeat_interleave(4))
    found = []
    for k, copy_ in enumerate(out):                       # copy k is clip k // 4 moved by some |s| <= 6
        src = waves[k // 4]
        hits = [s for s in range(-6, 7) if torch.equal(sl.shift_waves(src[None], [s])[0], copy_)]
        assert len(hits) == 1, (k, hits)
        found.append(hits[0])
    assert len(set(found)) > 3                             # the shifts are drawn, not one value
    again, _ = sl.shifted_copies(waves, labels, copies=4, max_shift=6, seed=0)
    assert torch.equal(again, out)                         # seeded
    assert not torch.equal(sl.shifted_copies(waves, labels, copies=4, max_shift=6, seed=1)[0], out)
    for bad in (dict(copies=0, max_shift=6), dict(copies=2, max_shift=40), dict(copies=2, max_shift=-1)):
        with pytest.raises(ValueError):
            sl.shifted_copies(waves, labels, seed=0, **bad)
    with pytest.raises(ValueError, match="label"):
        sl.shifted_copies(waves, labels[:2], copies=2, max_shift=3, seed=0)


def _tone(freq: float, seconds: float, T: int = 16000) -> torch.Tensor:
    """A Hann-windowed tone of `seconds` centred in T samples at 16 kHz."""
    n = int(seconds * 16000)
    t = torch.arange(n, dtype=torch.float64) / 16000
    x = torch.zeros(T, dtype=torch.float64)
    x[(T - n) // 2:(T - n) // 2 + n] = torch.sin(2 * math.pi * freq * t) * torch.hann_window(n, dtype=torch.float64)
    return x.float()


def _peak_hz(x: torch.Tensor) -> float:
    return float(torch.fft.rfft(x.double()).abs().argmax()) * 16000 / len(x)        # 1 Hz bins for 1 s


def _centre_and_width(x: torch.Tensor) -> tuple[float, float]:
    """The energy-weighted centre (samples) and the energy's standard deviation (samples) of a clip."""
    e = x.double() ** 2
    i = torch.arange(len(x), dtype=torch.float64)
    c = float((e * i).sum() / e.sum())
    return c, float(((e * (i - c) ** 2).sum() / e.sum()).sqrt())


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_perturb_scales_pitch_and_duration_and_keeps_the_word_centred(factor):
    """Speed perturbation (Ko et al., 2015) by `factor`: the pitch times factor (1 Hz bins), the duration over
    factor (energy spread, rel 1%), the centre kept (within 1 sample), the clip length kept."""
    waves = torch.stack([_tone(500.0, 0.5), _tone(300.0, 0.3)])
    out = sl.speed_perturb(waves, factor)
    assert out.shape == waves.shape and out.dtype == waves.dtype
    for x, y, f0 in zip(waves, out, (500.0, 300.0)):
        assert abs(_peak_hz(y) - f0 * factor) <= 1.0
        (c0, w0), (c1, w1) = _centre_and_width(x), _centre_and_width(y)
        assert abs(c1 - c0) <= 1.0
        assert w1 == pytest.approx(w0 / factor, rel=0.01)


def test_speed_perturb_by_one_is_the_clip_and_bad_factors_are_refused():
    waves = torch.stack([_tone(440.0, 0.4)])
    torch.testing.assert_close(sl.speed_perturb(waves, 1.0), waves, atol=1e-6, rtol=0)
    for bad in (0.0, -1.0, 0.5, 2.0):
        with pytest.raises(ValueError, match="factor"):
            sl.speed_perturb(waves, bad)


def test_speed_perturbed_utterances_keep_the_words_and_gaps_and_change_the_copy(clips):
    utts = sl.make_utterances(clips, "train", 200, seed=5)
    n = len(clips.waves)
    out = sl.speed_perturbed_utterances(utts, n, n_factors=2, seed=0)
    assert out == sl.speed_perturbed_utterances(utts, n, n_factors=2, seed=0)          # seeded
    assert out != sl.speed_perturbed_utterances(utts, n, n_factors=2, seed=1)
    copies = []
    for u, p in zip(utts, out):
        assert (p.voice, p.words, p.gaps) == (u.voice, u.words, u.gaps)                 # no boundary moves
        assert [c % n for c in p.clips] == list(u.clips)                                # the same recordings
        k = {c // n for c in p.clips}
        assert len(k) == 1 and k <= {1, 2}                                              # one speed per utterance
        copies.append(k.pop())
    assert set(copies) == {1, 2}
    train_voices = set(clips.voices["train"])
    assert all(clips.rows[c % n]["voice"] in train_voices for p in out for c in p.clips)  # held-out never used
    waves = sl.speed_perturbed_waves(clips.waves[:3], (0.9, 1.1))
    assert waves.shape == (9, clips.waves.shape[1])
    torch.testing.assert_close(waves[:3], clips.waves[:3], atol=0, rtol=0)
    torch.testing.assert_close(waves[3:6], sl.speed_perturb(clips.waves[:3], 0.9), atol=0, rtol=0)
    torch.testing.assert_close(waves[6:], sl.speed_perturb(clips.waves[:3], 1.1), atol=0, rtol=0)
    with pytest.raises(ValueError, match="n_factors"):
        sl.speed_perturbed_utterances(utts, n, n_factors=0, seed=0)
    with pytest.raises(ValueError, match="n_clips"):
        sl.speed_perturbed_utterances(utts, 3, n_factors=2, seed=0)


def test_shifted_accuracy_is_the_accuracy_on_clips_moved_by_hand(clips):
    torch.manual_seed(0)
    ast = at.AST(sl.ast_config(len(clips.words))).eval()
    waves, y = clips.waves[:12], clips.y[:12]
    acc = sl.shifted_accuracy(ast, waves, y, mean=-5.0, std=3.0, shifts_ms=(0, 50))
    assert set(acc) == {(0, "later"), (0, "earlier"), (50, "later"), (50, "earlier")}
    for ms, sign, side in ((0, 1, "later"), (50, 1, "later"), (50, -1, "earlier")):
        moved = torch.zeros_like(waves)                  # 50 ms = 800 samples at 16 kHz, by slicing
        n = ms * 16
        if sign > 0:
            moved[:, n:] = waves[:, :waves.shape[1] - n]
        else:
            moved[:, :waves.shape[1] - n] = waves[:, n:]
        spec = audio.log_mel_spectrogram(moved, n_mels=sl.N_MELS, **sl.MEL)
        with torch.no_grad():
            pred = ast((spec + 5.0) / 6.0).argmax(1)
        assert acc[ms, side] == pytest.approx((pred == y).float().mean().item(), abs=1e-9)


def test_frame_windows_equal_a_loop():
    spec = torch.randn(2, 5, 140)
    w = sl.frame_windows(spec, window=98, hop=20)                               # 1 + (140 - 98) // 20 = 3
    assert w.shape == (2, 3, 5, 98)
    for k in range(3):
        assert torch.equal(w[:, k], spec[..., 20 * k:20 * k + 98])
    with pytest.raises(ValueError, match="frames"):
        sl.frame_windows(torch.randn(1, 5, 50))
    assert sl.frame_windows(torch.randn(1, 40, 698)).shape[1] == 31             # 7 s: 31 tokens, one per 200 ms


def test_encode_utterances_is_the_pooled_token_of_each_window(clips):
    torch.manual_seed(0)
    ast = at.AST(sl.ast_config(11)).eval()
    utts = sl.make_utterances(clips, "train", 3, seed=1)
    tokens = sl.encode_utterances(ast, clips.waves, utts, mean=-9.0, std=7.5, batch_size=2)
    assert tokens.shape == (3, 31, 64)
    x = sl.utterance_waveform(clips.waves, utts[2])
    spec = sl.normalise(sl.audio.log_mel_spectrogram(x, n_mels=40, **sl.MEL), -9.0, 7.5)     # (40, 698)
    out = ast.forward_features(spec[None, :, 200:298])[0]                                   # window 10: 2.0-3.0 s
    assert torch.allclose(tokens[2, 10], (out[0] + out[1]) / 2, atol=1e-5)


# ----------------------------------------------------------------------------- tasks
def test_task_answers():
    u = sl.Utterance("v", ("up", "stop", "yes"), (0, 1, 2), (1600, 1600))
    g = np.random.default_rng(0)
    assert sl.task("transcribe", u, g, WORDS) == ("Transcribe the speech.", " up stop yes")
    assert sl.task("count", u, g, WORDS) == ("How many words are said?", " three")
    assert sl.task("first", u, g, WORDS) == ("What is the first word?", " up")
    assert sl.task("reverse", u, g, WORDS) == ("Say the words in reverse order.", " yes stop up")
    for _ in range(50):
        p, a = sl.task("after", u, g, WORDS)
        before = p.split("'")[1]
        assert u.words[u.words.index(before) + 1] == a.strip()
        p, a = sl.task("said", u, g, WORDS)
        assert (p.split("'")[1] in u.words) == (a == " yes")
    answers = [sl.task("said", u, g, WORDS)[1] for _ in range(400)]
    assert 0.4 < answers.count(" yes") / 400 < 0.6
    with pytest.raises(ValueError, match="kind"):
        sl.task("translate", u, g, WORDS)


def test_wrong_answer_rows_are_the_wrong_nonempty_answers():
    assert sl.wrong_answer_rows(["up", "no", "go", "on"], ["up", "yes", "", " on"]) == [1]


# ----------------------------------------------------------------------------- answering and DPO on a tiny model
class TinyTok:
    """Whitespace words -> ids, enough of the tokenizer's interface for `answer` (prompts and decoding)."""

    def __init__(self):
        self.vocab = ["<pad>", "<|im_end|>", "<image>", "q1", "q2", "a", "b", "c"]

    def convert_tokens_to_ids(self, t):
        return self.vocab.index(t)

    def __call__(self, text):
        return {"input_ids": [self.vocab.index(w) for w in text.split() if w in self.vocab]}

    def batch_decode(self, rows, skip_special_tokens=True):
        return [" ".join(self.vocab[i] for i in r.tolist() if i > 2) for r in rows]


def tiny_audio_lm():
    torch.manual_seed(0)
    tower = at.AST(at.ASTConfig(n_mels=16, max_length=16, dim=16, depth=1, heads=2, mlp_dim=16, num_classes=0))
    cfg = lm.LMConfig(vocab_size=8, dim=32, n_layers=1, n_heads=2, n_kv_heads=2, hidden_dim=32, max_seq_len=64)
    return at.AudioLM(tower, lm.LM(cfg), audio_token_id=2).eval()


def test_batched_answers_equal_one_row_at_a_time(monkeypatch):
    monkeypatch.setattr(sl.llava_data, "prompt_text", lambda p, image=True, system=None: "<image> " + p)
    model, tok = tiny_audio_lm(), TinyTok()
    tokens = torch.randn(5, 4, 16)
    prompts = ["q1", "q2", "q1", "q1 q2", "q2"]
    batched = sl.answer(model, tok, tokens, prompts, max_new_tokens=4, batch_size=2)
    single = [sl.answer(model, tok, tokens[i:i + 1], prompts[i:i + 1], max_new_tokens=4)[0] for i in range(5)]
    assert batched == single
    with pytest.raises(ValueError, match="same length"):
        sl.answer(model, tok, tokens, prompts[:2])


def test_dpo_starts_at_ln2_and_its_gradient_favours_the_chosen_answer():
    policy = tiny_audio_lm()
    reference = copy.deepcopy(policy).requires_grad_(False)
    tokens = torch.randn(3, 4, 16)
    ids = torch.tensor([[2, 3, 5, 1], [2, 4, 6, 1], [2, 3, 7, 1]])
    chosen = (ids, torch.where(torch.arange(4) >= 2, ids, torch.full_like(ids, -100)))
    rej_ids = ids.clone()
    rej_ids[:, 2] = torch.tensor([6, 7, 5])
    rejected = (rej_ids, torch.where(torch.arange(4) >= 2, rej_ids, torch.full_like(ids, -100)))
    loss, logs = sl.dpo_batch_loss(policy, reference, tokens, chosen, rejected, beta=0.1)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6) and logs["margin"] == pytest.approx(0, abs=1e-6)
    # log pi of the answer equals the sum of the answer tokens' log-probabilities, by hand
    lp = sl.answer_logprobs(policy, tokens, *chosen)
    embeds, _ = policy._prepare(tokens, ids)
    logits = policy.language_model(inputs_embeds=embeds).logits.log_softmax(-1)      # (3, 3 + 4, V)
    by_hand = torch.stack([logits[b, 4 + 0, ids[b, 2]] + logits[b, 4 + 1, ids[b, 3]] for b in range(3)])
    assert torch.allclose(lp, by_hand, atol=1e-5)
    opt = torch.optim.SGD(policy.parameters(), lr=0.5)
    loss.backward()
    opt.step()
    after, logs = sl.dpo_batch_loss(policy, reference, tokens, chosen, rejected, beta=0.1)
    assert after < loss and logs["margin"] > 0


# ----------------------------------------------------------------------------- the training script
def test_script_smoke_mode_runs_both_parts_then_the_results(tmp_path):
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    shipped = root / "data" / "checkpoints" / "speech_lm.json"
    before = shipped.stat().st_mtime if shipped.exists() else None
    outs = []
    for part in ("main", "baselines", "all"):
        out = subprocess.run([sys.executable, "scripts/train_speech_lm.py", "--smoke", "--part", part, "--cache",
                              str(tmp_path)], cwd=root, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        outs.append(out.stdout)
    assert "part main done" in outs[0] and "AST image seed 0" in outs[1]
    assert "smoke run: nothing written" in outs[2] and "dpo:" in outs[2]
    assert {p.name for p in (tmp_path / "smoke").iterdir()} >= {"stage1.safetensors", "dpo.safetensors", "ast.json"}
    assert (shipped.stat().st_mtime if shipped.exists() else None) == before


# ----------------------------------------------------------------------------- the shipped speech LM
def test_shipped_speech_lm_answers_as_the_script_recorded(clips):
    encoder, models, tokenizer, record = sl.load_speech_lm()
    assert set(models) == set(sl.SHIPPED_MODELS) and not any(p.requires_grad for p in encoder.parameters())
    utts = sl.make_utterances(clips, "test", 16, seed=record["recipe"]["utterance_seeds"]["test"])
    specs = sl.audio.log_mel_spectrogram(clips.waves, n_mels=sl.N_MELS, **sl.MEL)
    mean, std = specs[clips.is_train].mean().item(), specs[clips.is_train].std().item()
    assert mean == pytest.approx(record["normalisation"]["mean"], abs=1e-4)
    tokens = sl.encode_utterances(encoder, clips.waves, utts, mean, std)
    for name in ("sft", "dpo"):
        res = sl.evaluate(models[name], tokenizer, tokens, utts, record["words"])
        for kind, r in res.items():
            same = np.mean([a == b for a, b in zip(r["answers"], record["results"][name + "_answers"][kind][:16])])
            assert same >= 0.9, (name, kind, same)   # float rounding across CPUs may flip a near tie
    # the stages trained what the record says, and the DPO loss started at ln 2
    assert record["stages"]["stage1_frozen_lm"]["trainable"]["LM"] == 0
    assert record["stages"]["sft"]["trainable"]["encoder"] == 0
    assert record["stages"]["dpo"]["log"][0]["loss"] == pytest.approx(math.log(2), abs=1e-4)
