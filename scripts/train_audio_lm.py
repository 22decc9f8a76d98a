"""Notebook 10's speech LM: SmolLM2-135M-Instruct hearing utterances, trained in Qwen2-Audio's three stages.

The encoder is section 2's AST recipe trained once more, from the image ViT, on the training clips plus 8 copies
of each moved by up to +-100 ms (`train_encoder`: section 2's AST, trained on centred words only, loses up to 18
points on held-out clips moved by 25-100 ms, and an utterance's windows fall anywhere on its words); then frozen,
it gives 31 audio tokens per 7-s utterance, one per 200 ms (`speech_lm.encode_utterances`) and ships with the
model. The LM side is notebook 07's machinery (`utils.assistant`, `utils.audio_lm`):
an mlp2x_gelu connector, the tokens spliced at `<audio>`, LoRA adapters from peft.
1. stage 1, audio-text pretraining: three tasks named by natural-language prompts ("Transcribe the speech.",
   "How many words are said?", "What is the first word?"); the connector alone trains, the LM frozen;
2. stage 2, SFT: the three instructions ("Which word comes after 'X'?", "Is 'X' said?", "Say the words in
   reverse order.") with the three pretraining tasks mixed in (a sixth each), the connector and LoRA train; the
   step is picked on validation utterances of the training voices;
3. stage 3, DPO: pairs from the SFT model's own wrong answers on training utterances said 0.9 or 1.1 times as fast
   (speed perturbation, `speech_lm.speed_perturbed_utterances`: the SFT model is right on almost every training
   utterance as recorded, and its held-out mistakes come from voices it has not heard; one question about each of
   6,000, its greedy answer and 4 sampled at temperature 1 on the 600 whose right answer it finds least likely),
   chosen = the right answer, rejected = its answer; the SFT model is the start and the frozen reference (its
   log-probabilities computed once); up to 300 steps, validated every 25 and stopped early once 3 validations in
   a row fall below the best before them; the step is picked on validation utterances said at those speeds too
   (the SFT model answers every recorded validation question right). Three runs from the same SFT model and pairs
   (DPO_RUNS): what ships, DPO plus the chosen answers' cross-entropy (RPO; TRL's rpo_alpha = 1) on LoRA at 2e-5
   with each rejected answer cut after its first wrong token (`audio_lm.rejected_to_first_error`); the same with
   whole rejected answers; and DPO alone on whole answers (the connector and LoRA, lr 5e-5: the first recipe);
   then the shipped recipe twice more with the same pairs in other batch orders (DPO_ORDERS: the run-to-run spread);
4. baselines: SFT with no stage 1 (SFT only), the SFT model with the audio left out (blind), and the cascade (the
   AST's word for each clip, given the word boundaries the speech LM never gets).
Every model answers every task about the 400 held-out utterances (the two held-out voices), greedily.

Writes data/checkpoints/audio_lm.safetensors (the encoder, the SFT and DPO models' connector and LoRA, float16) and
audio_lm.json (the recipe, what trained, losses, DPO logs, results, seconds). Every stage saves its state into
.cache/audio_lm/ as it goes; run the same command again to resume.

    python scripts/train_audio_lm.py                 # about 220 minutes on 2 threads (stage 3 about 145 of them)
    python scripts/train_audio_lm.py --smoke         # 2 steps a stage on a few utterances; writes nothing
    python scripts/train_audio_lm.py --stage3        # stage 3 again from the shipped SFT model (about 145 minutes on 2 threads)
    python scripts/train_audio_lm.py --device cuda   # on a GPU (same seeds; numbers differ slightly)
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from utils import CACHE_DIR, DATA_DIR, checkpoints, env, smollm  # noqa: E402
from utils import assistant as A  # noqa: E402
from utils import audio_lm as al  # noqa: E402
from utils import speech_lm as sl  # noqa: E402
from utils.lm import IGNORE_INDEX  # noqa: E402
from utils.progress import progress  # noqa: E402

N = dict(train=6000, val=120, test=400)
UTTERANCE_SEEDS = dict(train=1, test=2, val=3)        # as scripts/train_speech_lm.py: the same utterances
STAGE1 = A.StageConfig(steps=250, batch_size=16, lr_connector=2e-3, warmup=20, seed=0)
SFT = A.StageConfig(steps=800, batch_size=8, lr_connector=1e-3, lr_lora=5e-4, warmup=20, seed=1, eval_every=200)
DPO = dict(steps=300, batch_size=8, lr=2e-5, beta=0.1, nll_weight=1.0, connector=False, eval_every=25, patience=3,
           pairs_from=6000, hardest=600, samples=4, rejected="to first error", seed=2,
           speed_factors=sl.SPEED_FACTORS, speed_seeds=dict(train=4, val=5))   # mined and validated at new speeds
DPO_WHOLE = dict(DPO, rejected="whole")          # the same with whole rejected answers (the previous recipe)
DPO_PLAIN = dict(DPO_WHOLE, lr=5e-5, nll_weight=0.0, connector=True)   # the first recipe: DPO alone, connector + LoRA
DPO_ORDERS = (3, 4)                              # the shipped recipe again, its pairs in other batch orders
DPO_RUNS = (("dpo", DPO), ("dpo_whole", DPO_WHOLE), ("dpo_plain", DPO_PLAIN),
            *((f"dpo_order{s}", dict(DPO, seed=s)) for s in DPO_ORDERS))   # the first ships
ENCODER = dict(copies=8, max_shift=1600, steps=1000, seed=0, init="image ViT")   # +-100 ms: half a window hop
STATE_DIR = CACHE_DIR / "audio_lm"


def train_encoder(clips, path: Path, smoke: bool):
    """The speech LM's audio encoder: section 2's AST recipe (`speech_lm.train_word_ast`, from the image ViT) on
    the training clips plus ENCODER["copies"] copies of each moved by up to ENCODER["max_shift"] samples
    (`speech_lm.shifted_copies`), ENCODER["steps"] steps; normalised with section 2's statistics (`speech_lm`'s
    record). Rounded to float16 as it ships; resumable at `path`. Returns (encoder, record)."""
    from safetensors.torch import load_file, save_file
    from utils import audio, vit
    from utils import audio_transformer as at

    t0 = time.perf_counter()
    section2 = al.load_encoder("speech_lm")                         # section 2's AST: its statistics and words
    mean, std = section2.normalisation["mean"], section2.normalisation["std"]
    train = clips.is_train
    if path.exists():
        encoder = at.AST(sl.ast_config(len(clips.words)))
        encoder.load_state_dict(load_file(path))
        held_out = json.loads(path.with_suffix(".json").read_text())
    else:
        moved, moved_y = sl.shifted_copies(clips.waves[train], clips.y[train], ENCODER["copies"],
                                           ENCODER["max_shift"], ENCODER["seed"])
        X = sl.normalise(audio.log_mel_spectrogram(torch.cat([clips.waves, moved]), n_mels=sl.N_MELS, **sl.MEL),
                         mean, std)                                  # (352 + 8 * 264, 40, 98)
        is_train = torch.cat([train, torch.ones(len(moved), dtype=torch.bool)])
        encoder, hist = sl.train_word_ast(X, torch.cat([clips.y, moved_y]), is_train, ENCODER["seed"],
                                          image_vit=vit.load_shipped(), steps=4 if smoke else ENCODER["steps"],
                                          eval_every=100)
        encoder.load_state_dict({k: v.half().float() for k, v in encoder.state_dict().items()})   # as it ships
        held_out = dict(steps=hist.eval_steps, accuracy=[e["held-out"] for e in hist.eval],
                        seconds=round(time.perf_counter() - t0, 1))
        save_file({k: v.contiguous() for k, v in encoder.state_dict().items()}, path)
        path.with_suffix(".json").write_text(json.dumps(held_out))
    encoder.eval().requires_grad_(False)
    encoder.normalisation, encoder.words = dict(mean=mean, std=std), clips.words
    held = ~train
    shifted = sl.shifted_accuracy(encoder, clips.waves[held], clips.y[held], mean, std)
    return encoder, dict(ENCODER, training=held_out, normalisation=encoder.normalisation,
                         held_out_shifted={f"{ms} ms {side}": round(a, 4) for (ms, side), a in shifted.items()})


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def mixed_kinds(kinds, n: int, seed: int) -> list[str]:
    g = np.random.default_rng(seed)
    return [kinds[i] for i in g.integers(len(kinds), size=n)]


def val_score(scores: dict) -> float:
    """One number to pick a step: the mean over kinds of (1 - WER) for transcription and the exact match else."""
    return float(np.mean([1 - v if k == "transcribe" else v for k, v in scores.items()]))


def trainable_counts(model) -> dict:
    named = list(model.named_parameters())
    return dict(connector=sum(p.numel() for k, p in named if p.requires_grad and A.is_connector(k)),
                lora=sum(p.numel() for k, p in named if p.requires_grad and A.is_lora(k)),
                lm=sum(p.numel() for k, p in named if p.requires_grad and not (A.is_connector(k) or A.is_lora(k))))


def train(model, tok, tokens, utts, kinds, cfg, path, words, desc, eval_fn=None) -> dict:
    """One stage: `cfg` (A.StageConfig) on rows of `kinds` mixed uniformly over `utts`, resumable at `path`."""
    _, _, ids, labels = al.task_rows(tok, utts, mixed_kinds(list(kinds), len(utts), cfg.seed), cfg.seed + 100, words)
    hist = A.train_stage(model, (tokens, ids.to(tokens.device), labels.to(tokens.device)), cfg, path, eval_fn=eval_fn,
                         desc=desc)
    A.set_trainable(model, lora=cfg.lr_lora > 0)
    return dict(steps=cfg.steps, step_seconds=round(hist["step_seconds"], 3), seconds=round(hist["train_seconds"], 1),
                loss=[round(x, 4) for x in hist["loss"]], trainable=trainable_counts(model),
                eval_steps=hist["eval_steps"], val=hist["eval"])


def dpo_pairs(model, tok, tokens, utts, words, smoke, device, path: Path) -> dict:
    """The SFT model's own mistakes on training utterances as DPO pairs: chosen = the right answer, rejected = its
    answer. One question (any of the six kinds) about each of `pairs_from` utterances; the SFT model's mean
    log-probability per token of each right answer, teacher-forced in one pass, finds the `hardest` questions
    (it is right on almost all the rest); on those it answers greedily and `samples` times at temperature 1, and
    every distinct wrong answer makes a pair. The rejected answers both whole and cut at their first wrong token
    (`audio_lm.rejected_to_first_error`), with the reference log-probabilities (the SFT model's) of each, computed
    once. Cached at `path` (about 25 minutes on 2 threads)."""
    if path.exists():
        return torch.load(path, weights_only=False, map_location=device)
    n, hardest = (16, 8) if smoke else (DPO["pairs_from"], DPO["hardest"])
    utts, tokens = utts[:n], tokens[:n]
    kinds = mixed_kinds(list(sl.ALL_KINDS), n, DPO["seed"])
    questions, truth = sl.task_rows(utts, kinds, DPO["seed"] + 100, words)
    truth = [t.strip() for t in truth]
    ids, labels = al.rows(tok, questions, truth)
    model.eval()
    with torch.no_grad():                                         # how sure the SFT model is of the right answers
        sure = torch.cat([al.answer_logprobs(model, tokens[s:s + 32], ids[s:s + 32].to(device),
                                             labels[s:s + 32].to(device)).cpu()
                          for s in progress(range(0, n, 32), desc="scoring the right answers")])
    sure = sure / (labels != IGNORE_INDEX).sum(1)                  # per answer token
    hard = sorted(torch.argsort(sure)[:hardest].tolist())
    torch.manual_seed(DPO["seed"])
    found = {}                                                    # (row, answer) -> how it was first found
    for how in ["greedy"] + ["sampled"] * DPO["samples"]:
        kw = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0) if how == "sampled" else {}
        answers = al.answer(model, tok, tokens[hard], [questions[i] for i in hard], **kw)
        for j in sl.wrong_answer_rows([truth[i] for i in hard], answers):
            found.setdefault((hard[j], answers[j]), how)
    pairs = sorted(found)
    if not pairs:
        raise RuntimeError("the SFT model made no mistake on the training utterances: no DPO pairs")
    rows = torch.tensor([i for i, _ in pairs])
    chosen = al.rows(tok, [questions[i] for i, _ in pairs], [truth[i] for i, _ in pairs])
    rejected = al.rows(tok, [questions[i] for i, _ in pairs], [a for _, a in pairs])
    cut = al.rejected_to_first_error(chosen[1], rejected[1])
    chosen, rejected, cut = (tuple(x.to(device) for x in chosen), tuple(x.to(device) for x in rejected),
                             (rejected[0].to(device), cut.to(device)))
    with torch.no_grad():                                         # the frozen reference: the SFT model, once
        ref = {name: torch.cat([al.answer_logprobs(model, tokens[rows[s:s + 32]], side[0][s:s + 32], side[1][s:s + 32])
                                for s in range(0, len(rows), 32)])
               for name, side in (("chosen", chosen), ("whole", rejected), ("to first error", cut))}
    worst = [float(sure[i]) for i in hard]
    out = dict(tokens=tokens[rows], chosen=chosen, rejected={"whole": rejected, "to first error": cut}, ref=ref,
               mining=dict(questions=n, hardest=hardest, samples=DPO["samples"], speeds=list(DPO["speed_factors"]),
                           hardest_logprob_per_token=[round(min(worst), 3), round(max(worst), 3)],
                           by_how={h: sum(v == h for v in found.values()) for h in ("greedy", "sampled")}),
               by_kind={k: sum(kinds[i] == k for i, _ in pairs) for k in sl.ALL_KINDS},
               examples=[dict(question=questions[i], chosen=truth[i], rejected=a, how=found[(i, a)])
                         for i, a in pairs[:16]])
    torch.save(out, path)
    return out


def dpo(model, tok, pairs, val, words, cfg, path, smoke, start_val) -> dict:
    """DPO (`cfg`, one of DPO_RUNS) on `pairs` from the SFT model now in `model`: LoRA trains (and the connector
    if cfg["connector"]), the rejected answers whole or cut at their first wrong token (cfg["rejected"]), with
    cfg["nll_weight"] times the chosen answers' cross-entropy added (RPO); validated every eval_every steps
    (`start_val`: the SFT model's validation, step 0), stopped early once cfg["patience"] validations in a row
    fall below the best before them (`assistant.patience_exhausted`), the best step kept."""
    chosen, ref, tokens = pairs["chosen"], pairs["ref"], pairs["tokens"]
    rejected, ref_r = pairs["rejected"][cfg["rejected"]], ref[cfg["rejected"]]
    params = A.set_trainable(model, lora=True)
    if not cfg["connector"]:
        for name, p in model.named_parameters():
            p.requires_grad_(p.requires_grad and not A.is_connector(name))
        params = [p for p in params if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=0.0)
    steps = 2 if smoke else cfg["steps"]
    every = steps if smoke else cfg["eval_every"]
    state = dict(log=[], val=[dict(step=0, **start_val)], snapshots={})
    if path.exists():
        state = torch.load(path, weights_only=False)
        A.load_trainable(model, state["weights"])
        opt.load_state_dict(state["optimizer"])
    bar = progress(range(len(state["log"]), steps), total=steps - len(state["log"]), desc=f"DPO ({path.stem})")
    t0, seconds0 = time.perf_counter(), state.get("seconds", 0.0)
    n = len(tokens)

    def stalled():
        return A.patience_exhausted([val_score({k: x for k, x in v.items() if k != "step"}) for v in state["val"]],
                                    cfg["patience"])
    for step in bar:
        if stalled():
            log(f"  DPO ({path.stem}) stopped at step {step}: {cfg['patience']} validations below the best")
            break
        model.train()
        b = A.batch_rows(step, n, min(cfg["batch_size"], n), cfg["seed"])
        loss, info = al.dpo_step_loss(model, tokens[b], (chosen[0][b], chosen[1][b]), (rejected[0][b], rejected[1][b]),
                                      ref["chosen"][b], ref_r[b], beta=cfg["beta"], nll_weight=cfg["nll_weight"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        state["log"].append(dict(step=step, loss=round(loss.item(), 5), **{k: round(v, 5) for k, v in info.items()}))
        done = step + 1
        if done % every == 0 or done == steps:
            res = al.scores(al.evaluate(model, tok, val[0], val[1], words))
            state["val"].append(dict(step=done, **res))
            state["snapshots"][done] = A.trainable_state(model)
            log(f"  DPO step {done} ({path.stem}): loss {loss.item():.4f}, margin {info['margin']:+.3f}, "
                f"validation {res}")
            state.update(weights=A.trainable_state(model), optimizer=opt.state_dict(),
                         seconds=seconds0 + time.perf_counter() - t0)       # evaluations included
            torch.save(state, path)
    scored = [v for v in state["val"] if v["step"] > 0]
    best = max(scored, key=lambda v: (val_score({k: x for k, x in v.items() if k != "step"}), v["step"]))["step"]
    A.load_trainable(model, state["snapshots"][best])
    return dict(pairs=n, pairs_by_kind=pairs["by_kind"], mining=pairs["mining"], log=state["log"], val=state["val"],
                picked_step=best, examples=pairs["examples"], trainable=trainable_counts(model), steps=steps,
                stopped_at=len(state["log"]), patience=cfg["patience"],
                lr=cfg["lr"], beta=cfg["beta"], nll_weight=cfg["nll_weight"], rejected=cfg["rejected"],
                step_seconds=round(state["seconds"] / max(1, len(state["log"])), 3))


def pick_snapshot(model, hist: dict, snap_dir: Path) -> int:
    best = max(zip(hist["eval_steps"], hist["val"]), key=lambda sv: (val_score(sv[1]), sv[0]))[0]
    A.load_trainable(model, torch.load(snap_dir / f"step{best}.pt", weights_only=True))
    return best


def stage3(model, tok, tokens, utts, words, record, evaluate, state_dir, smoke, device) -> dict:
    """Stage 3 from the SFT model in `model` (its trainable weights are also returned as the start of every run):
    the pairs once (mined on the training utterances at new speeds), then each of DPO_RUNS from the SFT model,
    validated on the validation utterances at new speeds and evaluated on the held-out utterances. Returns the
    shipped tensors of the first run ("dpo." + name, float16)."""
    sft_weights = {k: v.clone() for k, v in A.trainable_state(model).items()}
    val = (tokens["val_speed"], utts["val_speed"])
    pairs = dpo_pairs(model, tok, tokens["train_speed"], utts["train_speed"], words, smoke, device,
                      state_dir / "pairs.pt")
    log(f"{len(pairs['tokens'])} DPO pairs ({pairs['by_kind']}), found {pairs['mining']}")
    record["dpo_pairs"] = [dict(question=q, chosen=c, rejected=r) for (q, c), (_, r) in
                           zip(al.row_texts(tok, *pairs["chosen"]), al.row_texts(tok, *pairs["rejected"]["whole"]))]
    start_val = al.scores(al.evaluate(model, tok, val[0], val[1], words))               # step 0: the SFT model
    shipped = {}
    for name, cfg in DPO_RUNS:
        A.load_trainable(model, sft_weights)                                            # every run from SFT
        record["stages"][name] = dpo(model, tok, pairs, val, words, cfg, state_dir / f"{name}.pt", smoke, start_val)
        weights = {k: v.half() for k, v in A.trainable_state(model).items()}
        A.load_trainable(model, weights)                                                # what is measured ships
        evaluate(model, name)
        if not shipped:
            shipped = {"dpo." + k: v for k, v in weights.items()}
    A.load_trainable(model, sft_weights)
    return shipped


def encode(encoder, waves, utts, path: Path, device) -> dict:
    """Every split's utterances encoded once by the frozen encoder (cached at `path`); `waves` holds the clips and
    their copies at new speeds (`speech_lm.speed_perturbed_waves`)."""
    if path.exists():
        tokens = torch.load(path, weights_only=True)
    else:
        stats = encoder.normalisation
        tokens = {s: sl.encode_utterances(encoder, waves, u, stats["mean"], stats["std"], progress=True)
                  for s, u in utts.items()}
        torch.save(tokens, path)
    return {s: t.to(device) for s, t in tokens.items()}


def ship(shipped: dict, record: dict, seconds: float, smoke: bool) -> None:
    """Write the shipped tensors and the record to data/checkpoints/ (a smoke run writes nothing)."""
    if smoke:
        log(f"smoke run: nothing written ({seconds} s)")
        return
    out = checkpoints.save_checkpoint(DATA_DIR / "checkpoints" / al.CHECKPOINT, shipped, record)
    log(f"wrote {out.relative_to(DATA_DIR.parent)} ({out.stat().st_size / 1e6:.1f} MB) in {seconds} s; "
        "now run scripts/update_manifest.py")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="2 steps a stage on a few utterances; writes nothing")
    ap.add_argument("--stage3", action="store_true",
                    help="run stage 3 (DPO) again from the shipped SFT model and its encoder, keeping the record of "
                         "the other stages; rewrites the shipped checkpoint")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    ap.add_argument("--state-dir", default=None, help=f"where the resumable state goes (default {STATE_DIR})")
    args = ap.parse_args()
    env.set_threads(args.threads)
    env.seed_everything(0)
    device = torch.device(args.device)
    start = time.perf_counter()
    name = ("smoke" if args.smoke else "run") + ("_stage3" if args.stage3 else "")
    state_dir = (Path(args.state_dir) if args.state_dir else STATE_DIR) / name
    state_dir.mkdir(parents=True, exist_ok=True)
    done_path = state_dir / "results.json"                    # held-out results so far: a resumed run reuses them
    done = json.loads(done_path.read_text()) if done_path.exists() else {}
    n = dict(train=32, val=8, test=8) if args.smoke else N
    clips = sl.load_word_clips()
    utts = {s: sl.make_utterances(clips, "test" if s == "test" else "train", n[s], UTTERANCE_SEEDS[s])
            for s in ("train", "val", "test")}
    waves = sl.speed_perturbed_waves(clips.waves, DPO["speed_factors"])       # the clips, then at each speed
    utts.update({s + "_speed": sl.speed_perturbed_utterances(utts[s], len(clips.waves), len(DPO["speed_factors"]),
                                                             DPO["speed_seeds"][s]) for s in ("train", "val")})
    recipe = dict(n=N, utterance_seeds=UTTERANCE_SEEDS, words_per_utterance=sl.WORDS_PER_UTTERANCE,
                  gap_seconds=sl.GAP_SECONDS, seconds_padded=sl.MAX_SECONDS,
                  stage1=dict(vars(STAGE1), kinds=sl.PRETRAIN_KINDS), sft=dict(vars(SFT), kinds=sl.ALL_KINDS),
                  **{name: cfg for name, cfg in DPO_RUNS})

    if args.stage3:
        # ---- stage 3 again, from the shipped SFT model and encoder; the other stages' record kept as it is
        shipped, record = checkpoints.load_checkpoint(DATA_DIR / "checkpoints" / al.CHECKPOINT)
        encoder = al.load_encoder()
        words = encoder.words
        tokens = encode(encoder, waves, utts, state_dir / "tokens.pt", device)
        lm, tok = smollm.load_smollm2()
        model = A.add_lora(al.new_model(lm, tok, record["feature_dim"]), record["lora"]).to(device)
        A.load_trainable(model, {k[4:]: v for k, v in shipped.items() if k.startswith("sft.")})
        check = al.evaluate(model, tok, tokens["test"], utts["test"], words, kinds=("transcribe",))["transcribe"]
        same = sum(a == b for a, b in zip(check["answers"], record["results"]["sft_answers"]["transcribe"]))
        log(f"the shipped SFT model gives {same} of {len(check['answers'])} recorded held-out transcripts")
        for key in list(record["stages"]) + list(record["results"]):
            if key.startswith("dpo"):
                record["stages"].pop(key, None), record["results"].pop(key, None)
        record["recipe"] = dict(record["recipe"], **{k: v for k, v in recipe.items() if k.startswith("dpo")})
    else:
        # ---- the encoder, trained once on centred and moved clips, then frozen; the utterances, encoded once by it
        encoder, encoder_record = train_encoder(clips, state_dir / "encoder.safetensors", args.smoke)
        words = encoder.words
        log(f"encoder: held-out clips {encoder_record['held_out_shifted']}")
        tokens = encode(encoder, waves, utts, state_dir / "tokens.pt", device)
        lm, tok = smollm.load_smollm2()
        record = dict(lm=smollm.SMOLLM_HUB_ID, gguf_sha256=smollm.GGUF_SHA256, connector="mlp2x_gelu",
                      feature_dim=int(tokens["train"].shape[-1]), audio_tokens=int(tokens["train"].shape[1]),
                      lora=A.LORA, recipe=recipe, device=args.device, threads=torch.get_num_threads(), words=words,
                      stages={}, results={}, encoder=encoder_record, normalisation=encoder.normalisation)
    val = (tokens["val"], utts["val"])
    log(f"{sum(len(u) for u in utts.values())} utterances encoded: {tuple(tokens['train'].shape)} training tokens")

    def evaluate(model, name, kinds=sl.ALL_KINDS, blind=False):
        t0 = time.perf_counter()
        if name not in done:
            res = al.evaluate(model, tok, None if blind else tokens["test"], utts["test"], words, kinds=kinds)
            done[name] = dict(scores=al.scores(res), answers={k: v["answers"] for k, v in res.items()})
            done_path.write_text(json.dumps(done))
        record["results"][name] = done[name]["scores"]
        record["results"][name + "_answers"] = done[name]["answers"]
        log(f"{name:>9} held out ({time.perf_counter() - t0:.0f} s): "
            + ", ".join(f"{k} {v:.1%}" for k, v in record["results"][name].items()))

    if args.stage3:
        shipped.update(stage3(model, tok, tokens, utts, words, record, evaluate, state_dir, args.smoke, device))
        elapsed = state_dir / "elapsed.json"                  # seconds of the invocations before this one (resumed)
        before = json.loads(elapsed.read_text())["seconds"] if elapsed.exists() else 0.0
        seconds = round(before + time.perf_counter() - start, 1)
        elapsed.write_text(json.dumps(dict(seconds=seconds)))
        record["stage3_rerun"] = dict(seconds=seconds, threads=torch.get_num_threads(),
                                      sft_transcripts_reproduced=[same, len(check["answers"])])
        ship(shipped, record, record["stage3_rerun"]["seconds"], args.smoke)
        return

    def val_fn(snap_dir):
        def fn(m, step):
            res = al.scores(al.evaluate(m, tok, *val, words))
            snap_dir.mkdir(parents=True, exist_ok=True)
            torch.save(A.trainable_state(m), snap_dir / f"step{step}.pt")
            log(f"  step {step}: validation {res}")
            return res
        return fn

    s1, s2 = ((A.StageConfig(**{**vars(c), "steps": 2, "batch_size": 4, "eval_every": 0, "save_every": 1})
               for c in (STAGE1, SFT)) if args.smoke else (STAGE1, SFT))
    clip_specs = sl.normalise(sl.audio.log_mel_spectrogram(clips.waves, n_mels=sl.N_MELS, **sl.MEL),
                              encoder.normalisation["mean"], encoder.normalisation["std"])
    cascade = sl.cascade_transcripts(encoder, clip_specs, utts["test"], words)

    # ---- stage 1: pretraining, the connector alone
    model = al.new_model(lm, tok, record["feature_dim"]).to(device)
    record["stages"]["stage1"] = train(model, tok, tokens["train"], utts["train"], sl.PRETRAIN_KINDS, s1,
                                       state_dir / "stage1.pt", words, "stage 1 (connector)")
    evaluate(model, "stage1", kinds=sl.PRETRAIN_KINDS)

    # ---- stage 2: SFT, the connector and LoRA, from stage 1
    A.add_lora(model).to(device)
    record["stages"]["sft"] = train(model, tok, tokens["train"], utts["train"], sl.ALL_KINDS, s2, state_dir / "sft.pt",
                                    words, "SFT (connector + LoRA)", eval_fn=val_fn(state_dir / "sft_snapshots"))
    record["stages"]["sft"]["picked_step"] = pick_snapshot(model, record["stages"]["sft"], state_dir / "sft_snapshots")
    shipped = {"sft." + k: v.half() for k, v in A.trainable_state(model).items()}
    A.load_trainable(model, {k[4:]: v for k, v in shipped.items()})                # what is measured is what ships
    evaluate(model, "sft")
    evaluate(model, "blind", blind=True)

    # ---- stage 3: DPO from the SFT model (DPO_RUNS: the shipped recipe, its two ablations, two more batch orders)
    shipped.update(stage3(model, tok, tokens, utts, words, record, evaluate, state_dir, args.smoke, device))
    shipped.update({"encoder." + k: v.half() for k, v in encoder.state_dict().items()})      # the frozen encoder

    # ---- baseline: SFT with no stage 1
    del model
    model = A.add_lora(al.new_model(lm, tok, record["feature_dim"])).to(device)
    record["stages"]["sft_only"] = train(model, tok, tokens["train"], utts["train"], sl.ALL_KINDS, s2,
                                         state_dir / "sft_only.pt", words, "SFT only (no stage 1)",
                                         eval_fn=val_fn(state_dir / "sft_only_snapshots"))
    record["stages"]["sft_only"]["picked_step"] = pick_snapshot(model, record["stages"]["sft_only"],
                                                                state_dir / "sft_only_snapshots")
    A.load_trainable(model, {k: v.half() for k, v in A.trainable_state(model).items()})
    evaluate(model, "sft_only")
    record["results"]["cascade"] = dict(transcribe=round(sl.word_error_rate(cascade, [u.text for u in utts["test"]]), 4))
    record["seconds"] = round(time.perf_counter() - start, 1)
    ship(shipped, record, record["seconds"], args.smoke)


if __name__ == "__main__":
    main()
