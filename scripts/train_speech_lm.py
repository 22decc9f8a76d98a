"""Notebook 10's speech LM, trained in Qwen2-Audio's three stages, and its AST over seeds.

1. The AST of notebook 10's first half (its recipe, `speech_lm.train_word_ast`), initialised from the image ViT
   and from scratch, seeds 0-4: held-out accuracy per seed every 50 steps. The image-initialised seed-0 AST is
   the speech LM's audio encoder, frozen from here on (it learned the 11 words in the first half; nothing
   below trains it, so no word label reaches it inside the speech-LM pipeline).
2. Utterances of 2-5 different words (`speech_lm.make_utterances`): training voices for training and
   validation, the two held-out voices for the test; each encoded once into 31 audio tokens (one per 200 ms).
3. The course LM (`lm_shapes`) with a fresh `mlp2x_gelu` projector, trained in stages on the answer tokens
   only (next-token loss, the audio tokens spliced at the placeholder):
   - stage 1, audio-text pretraining: three tasks named by natural-language prompts (transcribe, count the
     words, say the first word); the projector and the LM train (the course LM must learn to write the words,
     which its ShapesWorld text never held);
   - stage 2, SFT: three instructions (which word comes after 'X', is 'X' said, the words in reverse order)
     and transcription, a quarter each; the projector and the LM train;
   - stage 3, DPO: pairs from the SFT model's own wrong answers on training utterances (chosen = the right
     answer, rejected = its answer), the SFT model as the frozen reference and the start of the policy; the
     step is picked on validation utterances of the training voices (never on the held-out ones);
   - baselines: the same SFT with no stage 1 (SFT only), and with every audio token replaced by the silent
     utterance's (blind).
4. Every model answers every task on the 400 held-out utterances (greedy); transcription is scored by word
   error rate, the rest by exact match; the cascade baseline is the AST's word for each clip, in order (it is
   given the word boundaries, which the speech LM never is).

Writes data/checkpoints/speech_lm.safetensors (the encoder, and for SFT and DPO the projector and the LM, float16)
and speech_lm.json (the recipe, the losses, the DPO logs, the results, the seconds). Each stage is saved to
.cache/speech_lm/ when done, and a rerun resumes after the last saved stage.

    python scripts/train_speech_lm.py            # about 15 minutes on one thread
    python scripts/train_speech_lm.py --smoke    # a few steps on a few utterances; writes nothing
    python scripts/train_speech_lm.py --device cuda
"""
import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from utils import DATA_DIR, audio, env, lm, training, vit  # noqa: E402
from utils import audio_transformer as at  # noqa: E402
from utils import speech_lm as sl  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = DATA_DIR / "checkpoints" / "speech_lm"
CACHE = ROOT / ".cache" / "speech_lm"
SEEDS = (0, 1, 2, 3, 4)
N_TRAIN, N_VAL, N_TEST = 6000, 300, 400
UTTERANCE_SEEDS = dict(train=1, test=2, val=3)
STAGE1 = dict(kinds=sl.PRETRAIN_KINDS, steps=1000, lr=2e-3)
SFT = dict(kinds=("transcribe",) + sl.SFT_KINDS, steps=1000, lr=2e-3)
DPO = dict(kinds=("transcribe",) + sl.SFT_KINDS, steps=150, lr=5e-5, beta=0.1, batch_size=16, eval_every=50)
BATCH = 32
STAGE1_FROZEN = dict(kinds=sl.PRETRAIN_KINDS, steps=300, lr=2e-3, lm_trains=False)   # Qwen-Audio's frozen LLM


def trainable(model: at.AudioLM, lm_trains: bool = True) -> dict:
    """Which parameters train: the projector, and the LM when `lm_trains`; the encoder is frozen (checked)."""
    model.audio_tower.requires_grad_(False)
    model.language_model.requires_grad_(lm_trains)
    model.multi_modal_projector.requires_grad_(True)
    count = {name: sum(p.numel() for p in part.parameters() if p.requires_grad)
             for name, part in [("encoder", model.audio_tower), ("projector", model.multi_modal_projector),
                                ("LM", model.language_model)]}
    assert count["encoder"] == 0 and count["projector"] > 0 and (count["LM"] > 0) == lm_trains, count
    return count


def rows_for(tokenizer, utts, kinds, seed, words):
    prompts, answers = sl.task_rows(utts, kinds, seed, words)
    ids, labels = at.instruction_rows(tokenizer, prompts, answers)
    return prompts, answers, ids, labels


def mixed_kinds(kinds, n, seed):
    g = np.random.default_rng(seed)
    return [kinds[i] for i in g.integers(len(kinds), size=n)]


def train_stage(model, tokens, utts, kinds, steps, lr, seed, tokenizer, words, smoke):
    """Next-token loss on the answers of a mix of `kinds` (uniform) over the training utterances."""
    kinds_each = mixed_kinds(list(kinds), len(utts), seed)
    _, _, ids, labels = rows_for(tokenizer, utts, kinds_each, seed + 100, words)
    cfg = training.TrainConfig(steps=2 if smoke else steps, batch_size=min(BATCH, len(utts)), lr=lr,
                               warmup=2 if smoke else 30, weight_decay=0.0, seed=seed)
    hist = training.train(model, (torch.arange(len(utts)), ids, labels),
                          lambda m, b: sl.lm_loss(m, tokens[b[0]], b[1], b[2]), cfg)
    return dict(loss=[round(x, 4) for x in hist.loss], seconds=round(hist.seconds, 1),
                ms_per_step=round(1000 * hist.seconds / cfg.steps, 1))


def train_dpo(sft_model, tokens, utts, val_tokens, val_utts, tokenizer, words, smoke, device):
    """DPO from the SFT model's own mistakes on training utterances: greedy answers, then two sampled ones
    (temperature 1) per row, each wrong one a pair with the right answer."""
    kinds = mixed_kinds(list(DPO["kinds"]), len(utts), 11)
    prompts, truth = sl.task_rows(utts, kinds, 12, words)
    g = torch.Generator(device=device).manual_seed(0)
    pairs = []                                                                   # (row, rejected answer)
    for how in ("greedy", "sampled", "sampled"):
        answers = sl.answer(sft_model, tokenizer, tokens, prompts, do_sample=how == "sampled", generator=g)
        pairs += [(i, answers[i]) for i in sl.wrong_answer_rows(truth, answers)]
    pairs = sorted(set(pairs))
    if not pairs:
        raise RuntimeError("the SFT model made no mistake on the training utterances: no DPO pairs")
    rows = [i for i, _ in pairs]
    chosen = at.instruction_rows(tokenizer, [prompts[i] for i in rows], [truth[i] for i in rows])
    rejected = at.instruction_rows(tokenizer, [prompts[i] for i in rows], [" " + r for _, r in pairs])
    policy, reference = copy.deepcopy(sft_model), copy.deepcopy(sft_model).requires_grad_(False).eval()
    trainable(policy)
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=DPO["lr"], weight_decay=0.0)
    gen = torch.Generator().manual_seed(0)
    steps = 2 if smoke else DPO["steps"]
    def val_score(res):  # one number to pick the step: the mean of (1 - WER) and the exact matches
        return float(np.mean([1 - v if k == "transcribe" else v for k, v in res.items() if k != "step"]))

    first = sl.evaluate(policy, tokenizer, val_tokens, val_utts, words, kinds=DPO["kinds"])
    logs, val = [], [dict(step=0, **{k: v["score"] for k, v in first.items()})]
    best = (None, None, -1.0)
    start = time.perf_counter()
    for step in range(steps):
        policy.train()
        b = torch.randint(len(rows), (min(DPO["batch_size"], len(rows)),), generator=gen)
        rb = torch.tensor(rows)[b]
        loss, info = sl.dpo_batch_loss(policy, reference, tokens[rb], (chosen[0][b], chosen[1][b]),
                                       (rejected[0][b], rejected[1][b]), beta=DPO["beta"])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        logs.append(dict(step=step, loss=round(loss.item(), 5), **{k: round(v, 5) for k, v in info.items()}))
        if (step + 1) % DPO["eval_every"] == 0 or step + 1 == steps:
            res = sl.evaluate(policy, tokenizer, val_tokens, val_utts, words, kinds=DPO["kinds"])
            val.append(dict(step=step + 1, **{k: v["score"] for k, v in res.items()}))
            print(f"  DPO step {step + 1}: loss {loss.item():.4f}, margin {info['margin']:+.3f}, validation "
                  f"{val[-1]}", flush=True)
            if val_score(val[-1]) > best[2]:
                best = (step + 1, copy.deepcopy(policy.state_dict()), val_score(val[-1]))
    seconds = time.perf_counter() - start
    policy.load_state_dict(best[1])
    by_kind = {k: sum(kinds[i] == k for i in rows) for k in DPO["kinds"]}
    return policy.eval(), dict(pairs=len(pairs), pairs_by_kind=by_kind,
                               examples=[dict(prompt=prompts[i], chosen=truth[i].strip(), rejected=r)
                                         for i, r in pairs[:12]],
                               log=logs, validation=val, picked_step=best[0], seconds=round(seconds, 1),
                               ms_per_step=round(1000 * seconds / steps, 1))


def half(state: dict) -> dict:
    return {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in state.items()}


def head_state(model: at.AudioLM) -> dict:
    """What a trained model adds to the encoder: the projector and the LM (the LM head is tied to its input
    embeddings, so it is not stored twice)."""
    tied = "language_model.lm_head.weight" if model.language_model.cfg.tie_embeddings else None
    return {k: v for k, v in model.state_dict().items() if not k.startswith("audio_tower.") and k != tied}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="a few steps on a few utterances; writes nothing")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache", default=None, help=f"where stages are saved to resume (default {CACHE})")
    ap.add_argument("--part", choices=("main", "baselines", "all"), default="all",
                    help="main: stage 1, SFT, DPO; baselines: the ASTs over seeds, SFT only, blind, stage 1 with "
                         "the LM frozen; all: whatever is not saved yet, then the results (two processes can run "
                         "main and baselines side by side, one thread each)")
    args = ap.parse_args()
    device = env.setup(seed=0, threads=args.threads)
    device = torch.device(args.device)
    t_start = time.perf_counter()
    cache = (Path(args.cache) if args.cache else CACHE) / ("smoke" if args.smoke else "run")
    cache.mkdir(parents=True, exist_ok=True)

    clips = sl.load_word_clips()
    specs = audio.log_mel_spectrogram(clips.waves, n_mels=sl.N_MELS, **sl.MEL)           # (352, 40, 98)
    mean, std = specs[clips.is_train].mean().item(), specs[clips.is_train].std().item()
    X = sl.normalise(specs, mean, std)
    image_vit = vit.load_shipped()
    record = dict(recipe=dict(n_train=N_TRAIN, n_val=N_VAL, n_test=N_TEST, utterance_seeds=UTTERANCE_SEEDS,
                              words_per_utterance=sl.WORDS_PER_UTTERANCE, gap_seconds=sl.GAP_SECONDS,
                              seconds_padded=sl.MAX_SECONDS, window_frames=sl.WINDOW_FRAMES,
                              hop_frames=sl.HOP_FRAMES, stage1=dict(STAGE1), sft=dict(SFT), dpo=dict(DPO),
                              batch_size=BATCH, ast_steps=sl.AST_STEPS, seeds=SEEDS, threads=args.threads,
                              device=str(device)),
                  normalisation=dict(mean=mean, std=std), words=clips.words)

    # 1. the AST over seeds (part "baselines"); the seed-0 image-initialised AST is the encoder (both parts
    # train it: the same seed and thread count give the same weights)
    ast_file = cache / "ast.json"
    if args.part in ("baselines",) and not ast_file.exists():
        runs, t0 = {}, time.perf_counter()
        for seed in SEEDS[:1] if args.smoke else SEEDS:
            for init, source in (("image", image_vit), ("scratch", None)):
                _, hist = sl.train_word_ast(X, clips.y, clips.is_train, seed, image_vit=source,
                                            steps=2 if args.smoke else sl.AST_STEPS, progress=False)
                runs[f"{init}/{seed}"] = dict(steps=hist.eval_steps, held_out=[e["held-out"] for e in hist.eval])
                print(f"AST {init} seed {seed}: held-out {hist.eval[-1]['held-out']:.1%}", flush=True)
        ast_file.write_text(json.dumps(dict(runs=runs, seconds=round(time.perf_counter() - t0, 1))))
    encoder, _ = sl.train_word_ast(X, clips.y, clips.is_train, 0, image_vit=image_vit,
                                   steps=2 if args.smoke else sl.AST_STEPS, progress=False)
    encoder = encoder.eval().requires_grad_(False)
    with torch.no_grad():
        record["encoder_held_out_clips"] = round(training.accuracy(encoder(X[~clips.is_train]),
                                                                   clips.y[~clips.is_train]), 4)

    # 2. utterances, encoded once
    n = dict(train=N_TRAIN, val=N_VAL, test=N_TEST) if not args.smoke else dict(train=64, val=16, test=16)
    utts = {s: sl.make_utterances(clips, "test" if s == "test" else "train", n[s], UTTERANCE_SEEDS[s])
            for s in ("train", "val", "test")}
    t0 = time.perf_counter()
    tokens = {s: sl.encode_utterances(encoder, clips.waves, u, mean, std, progress=True).to(device)
              for s, u in utts.items()}
    silence = sl.encode_utterances(encoder, clips.waves, [sl.Utterance("silence", (), (), ())], mean, std).to(device)
    record["encode_seconds"] = round(time.perf_counter() - t0, 1)
    cascade = sl.cascade_transcripts(encoder, X, utts["test"], clips.words)
    record["cascade_wer"] = round(sl.word_error_rate(cascade, [u.text for u in utts["test"]]), 4)
    print(f"encoded {sum(len(u) for u in utts.values())} utterances in {record['encode_seconds']} s; "
          f"cascade WER {record['cascade_wer']:.1%}", flush=True)

    # 3. the stages: part "main" trains stage 1, SFT and DPO; part "baselines" the rest
    base, tokenizer = lm.load_pretrained("lm_shapes")
    placeholder = tokenizer.convert_tokens_to_ids("<image>")
    words = clips.words

    def fresh(seed):
        torch.manual_seed(seed)
        return at.AudioLM(encoder, copy.deepcopy(base), placeholder).to(device)

    plan = [("stage1", None, STAGE1, tokens["train"], "main"),
            ("sft", "stage1", SFT, tokens["train"], "main"),
            ("sft_only", None, SFT, tokens["train"], "baselines"),
            ("blind", None, SFT, silence.expand_as(tokens["train"]), "baselines"),
            ("stage1_frozen_lm", None, STAGE1_FROZEN, tokens["train"], "baselines")]
    models, logs = {}, {}
    for name, start, recipe, feed, part in plan:
        done = cache / f"{name}.safetensors"
        if not done.exists() and args.part not in (part, "all"):
            continue
        model = fresh(0) if start is None else copy.deepcopy(models[start])
        count = trainable(model, lm_trains=recipe.get("lm_trains", True))
        if done.exists():
            model.load_state_dict(load_file(done), strict=False)
            logs[name] = json.loads((cache / f"{name}.json").read_text())
        else:
            print(f"{name}: {recipe['steps']} steps of {BATCH}, kinds {recipe['kinds']}", flush=True)
            logs[name] = dict(trainable=count, **train_stage(model, feed, utts["train"], recipe["kinds"],
                                                             recipe["steps"], recipe["lr"], 0, tokenizer, words,
                                                             args.smoke))
            save_file(head_state(model), done)
            (cache / f"{name}.json").write_text(json.dumps(logs[name]))
        models[name] = model.eval()
    done = cache / "dpo.safetensors"
    if done.exists():
        models["dpo"] = copy.deepcopy(models["sft"])
        models["dpo"].load_state_dict(load_file(done), strict=False)
        logs["dpo"] = json.loads((cache / "dpo.json").read_text())
    elif args.part in ("main", "all"):
        models["dpo"], logs["dpo"] = train_dpo(models["sft"], tokens["train"], utts["train"], tokens["val"],
                                               utts["val"], tokenizer, words, args.smoke, device)
        save_file(head_state(models["dpo"]), done)
        (cache / "dpo.json").write_text(json.dumps(logs["dpo"]))
    if args.part != "all" or not ast_file.exists():
        print(f"part {args.part} done in {time.perf_counter() - t_start:.0f} s; run --part all when both parts "
              "are done", flush=True)
        return
    record["ast"] = json.loads(ast_file.read_text())
    record["stages"] = logs

    # 4. the shipped (float16) models, scored on the held-out voices
    shipped = {"encoder." + k: v for k, v in half(encoder.state_dict()).items()}
    results = {}
    for name in sl.TRAINED_MODELS:
        state = half(head_state(models[name]))
        if name in sl.SHIPPED_MODELS:
            shipped.update({f"{name}.{k}": v for k, v in state.items()})
        model = copy.deepcopy(models[name])
        model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
        feed = silence.expand_as(tokens["test"]) if name == "blind" else tokens["test"]
        kinds = sl.PRETRAIN_KINDS if name.startswith("stage1") else sl.ALL_KINDS
        res = sl.evaluate(model.eval(), tokenizer, feed, utts["test"], words, kinds=kinds)
        results[name] = {k: round(v["score"], 4) for k, v in res.items()}
        results[name + "_answers"] = {k: v["answers"][:40] for k, v in res.items()}
        print(f"{name:>9}: " + ", ".join(f"{k} {v:.1%}" for k, v in results[name].items()), flush=True)
    record["results"] = results
    record["seconds"] = round(time.perf_counter() - t_start, 1)
    if args.smoke:
        print(f"smoke run: nothing written ({record['seconds']} s)")
        return
    OUT.parent.mkdir(parents=True, exist_ok=True)
    save_file(shipped, str(OUT) + ".safetensors")
    Path(str(OUT) + ".json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {OUT}.safetensors and .json in {record['seconds']} s; now run scripts/update_manifest.py")


if __name__ == "__main__":
    main()
