"""Notebook 08's section 6: Llama 3.2's video cross-attention layers against prepended video tokens, over seeds.

Notebook 08's clips, frame features and resampler (seed 0, as in the notebook), then three ways for the course LM
to read a clip, each trained with the same recipe (`video.QA_TRAIN`), budgets of 60 and 120 steps, seeds 0-4, on
two questions per training clip ("Which way does the red circle move?" and the control "What colour is the
circle?"), and scored by exact match on the 240 held-out clips' 480 questions:
- prepend: the resampler's 8 tokens -> Linear -> spliced at `<image>` (notebook 06's LLaVA path, section 5);
  the projector and the LM train;
- image: gated cross-attention blocks before each of the LM's 4 layers read the 64 sampled frames' tokens;
  the LM frozen (Llama 3.2's recipe), the blocks and the projector train;
- image + video: the same, plus video cross-attention blocks reading the resampler's 8 tokens before every 2nd
  image block (Llama 3: every 4th).
Writes data/checkpoints/video_xattn.json: per run the accuracy per question kind, every held-out item's
right/wrong, seconds a step, the gates (tanh) per block; per design the trainable parameters and tokens.

    python scripts/train_video_xattn.py           # 30 runs, about 10 minutes on one thread
    python scripts/train_video_xattn.py --smoke   # 2 steps, one seed, a few clips; writes nothing
"""
import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from utils import DATA_DIR, env, llava, llava_data, lm, training, video  # noqa: E402

DESIGNS = ("prepend", "image", "image + video")
BUDGETS = (60, 120)
SEEDS = (0, 1, 2, 3, 4)
N_TRAIN, N_TEST = 480, 240            # notebook 08's clips per task
OUT = DATA_DIR / "checkpoints" / "video_xattn.json"


def clip_data(n_train: int, n_test: int, encode, smoke: bool = False) -> dict:
    """Notebook 08's sections 1-3: its clips, every clip's 64 frame tokens, the resampler + time classifier."""
    data = {(t, s): video.make_video_dataset(n, t, s) for t in ("direction", "first")
            for s, n in (("train", n_train), ("heldout", n_test))}
    cache = {}
    feats = {k: video.frame_features(video.clips_of(ds), encode, k=64, cache=cache) for k, ds in data.items()}
    tasks = ("direction", "color", "first")
    x = torch.cat([feats["direction", "train"], feats["first", "train"]])
    y = [torch.cat([torch.tensor(data[kind, "train"][t], dtype=torch.long) for kind in ("direction", "first")])
         for t in tasks]
    best, _ = video.train_video_classifier("resampler+time", x, y, {t: len(video.TASKS[t]) for t in tasks},
                                         **(dict(steps=2, batch_size=16) if smoke else {}))
    with torch.no_grad():
        tokens = {s: best.tokens(feats["direction", s]) for s in ("train", "heldout")}          # (n, 8, D)
        acc = (best(feats["direction", "heldout"])["direction"].argmax(1)
               == torch.tensor(data["direction", "heldout"]["direction"])).float().mean().item()
    return dict(data=data, frames={s: feats["direction", s].flatten(1, 2) for s in ("train", "heldout")},  # (n, 64, D)
                tokens=tokens, resampler_direction=acc)


def new_model(design: str, base_lm, tower, seed: int):
    """A fresh copy of the course LM with the design's connector, seeded."""
    torch.manual_seed(seed)
    language_model = copy.deepcopy(base_lm)
    if design == "prepend":
        cfg = llava.TinyLlavaConfig(connector="linear", vision_feature_layer=-1, vision_feature_select_strategy="cls")
        return llava.TinyLlava(cfg, language_model, vision_tower=tower)
    layout = video.video_cross_attention_layout(language_model.cfg.n_layers, video_every=2 if "video" in design else None)
    return video.VideoCrossAttentionLM(language_model, 64, 64, layout)


def loss_and_generate(design: str, frames: torch.Tensor, tokens: torch.Tensor):
    """The loss on rows (clip index, input_ids, labels) and a generate(idx, prompt_ids) for the design."""
    if design == "prepend":
        def loss(m, batch):
            return llava_data.forward_from_features(m, tokens[batch[0]], batch[1], batch[2]).loss

        def generate(m, idx, ids, **kw):
            return llava_data.generate_from_features(m, tokens[idx], ids, **kw)
    else:
        def loss(m, batch):
            return m(frames[batch[0]], tokens[batch[0]], batch[1], batch[2]).loss

        def generate(m, idx, ids, **kw):
            m.eval()
            return m.generate(frames[idx], tokens[idx], ids, **kw)
    return loss, generate


def run(args) -> None:
    env.set_threads(1)                 # notebook 08 runs on one thread: the live run there repeats seed 0 here
    start = time.perf_counter()
    n_train, n_test = (24, 24) if args.smoke else (N_TRAIN, N_TEST)
    budgets, seeds = ((2,), (0,)) if args.smoke else (BUDGETS, SEEDS)
    tower = llava.load_clip_vision_tower()
    encode = lambda images: llava_data.frozen_features(tower, images, -1, "cls")  # noqa: E731  (n, 1, D_v) CLS
    d = clip_data(n_train, n_test, encode, args.smoke)
    base_lm, tok = lm.load_pretrained("lm_shapes")
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    q_train, a_train, _ = video.qa_pairs(d["data"]["direction", "train"], control=True)
    q_test, a_test, kinds = video.qa_pairs(d["data"]["direction", "heldout"], control=True)
    rows = (torch.arange(len(q_train)) % n_train, *video.qa_rows(tok, q_train, a_train))       # clip index, ids, labels
    print(f"resampler + time, held-out direction {d['resampler_direction']:.1%}; {len(q_train)} training rows, "
          f"{len(q_test)} held-out questions; features in {time.perf_counter() - start:.0f} s", flush=True)
    runs, designs = [], {}
    todo = [(b, s, des) for b in budgets for s in seeds for des in DESIGNS]
    for budget, seed, design in tqdm(todo, desc="runs"):
        clip_of = torch.arange(len(q_test)) % n_test
        loss, gen = loss_and_generate(design, d["frames"]["train"], d["tokens"]["train"])
        _, gen_test = loss_and_generate(design, d["frames"]["heldout"][clip_of], d["tokens"]["heldout"][clip_of])
        m = new_model(design, base_lm, tower, seed)
        h = training.train(m, rows, loss, training.TrainConfig(steps=budget, seed=seed, progress=False, **video.QA_TRAIN))
        answers = video.answer_by_prompt(lambda idx, ids, **kw: gen_test(m, idx, ids, **kw), tok, q_test, eos)
        right = [a == b for a, b in zip(answers, a_test)]
        acc = {k: float(np.mean([r for r, kk in zip(right, kinds) if k in ("overall", kk)])) for k in
               ("overall", "direction", "colour")}
        runs.append(dict(design=design, steps=budget, seed=seed, accuracy={k: round(v, 4) for k, v in acc.items()},
                         right="".join("1" if r else "0" for r in right), step_seconds=round(h.seconds / budget, 4),
                         gates=None if design == "prepend" else {k: [round(g, 4) for g in v] for k, v in m.gates().items()}))
        if design not in designs:
            prompt_len = llava_data.prompt_ids(tok, 1, prompt=q_test[0]).shape[1]
            n_video = d["tokens"]["train"].shape[1]
            designs[design] = dict(
                trainable=sum(p.numel() for n, p in m.named_parameters() if p.requires_grad and "vision_tower" not in n),
                lm_sequence=prompt_len - 1 + n_video if design == "prepend" else prompt_len,
                context_tokens=dict(prepend={"spliced": n_video}, image={"image": 64},
                                    **{"image + video": {"image": 64, "video": n_video}})[design],
                layout=None if design == "prepend" else {str(k): list(v) for k, v in m.layout.items()})
        tqdm.write(f"{design:>13} steps {budget:3d} seed {seed}: " + ", ".join(f"{k} {v:.1%}" for k, v in acc.items())
                   + f"; {h.seconds / budget * 1e3:.0f} ms a step")
    out = dict(recipe=dict(train=video.QA_TRAIN, budgets=list(budgets), seeds=list(seeds), n_train_clips=n_train,
                           n_heldout_clips=n_test, questions=["direction", "colour"], threads=1, lm="lm_shapes"),
               resampler_direction=round(d["resampler_direction"], 4), heldout_answers=a_test, heldout_kinds=kinds,
               designs=designs, runs=runs, wall_seconds=round(time.perf_counter() - start, 1))
    if args.smoke:
        print("smoke run: nothing written")
        return
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {OUT.relative_to(DATA_DIR.parent)} in {out['wall_seconds']:.0f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="2 steps, one seed, 24 clips; writes nothing")
    run(parser.parse_args())
