"""Two probes of why notebook 07's instruction-tuned model stops near 43% exact match (our target is 80%).
They write nothing; they print what they measure on notebook 07's 400 held-out questions.

longer_lm: is the course LM under-trained? The course LM's config (LMConfig.preset("course"), 0.92M parameters)
    is pretrained again with the shipped tokenizer on more ShapesWorld documents (lm_data.make_corpus) for more
    steps, then asked the held-out questions blind and with the scene's true description written in front of the
    question (notebook 07 section 4's text-reading cell). The shipped lm_shapes answers 17.0% blind and 18.0%
    with the description.
question_rows: is the conversation format or the number of distinct questions the limit? Every question the
    writer (instruct.questions_about) asks about each of the 3,000 training scenes, drawn `reps` times, plus the
    scene's notebook 05 question, becomes its own one-turn conversation; stage 1 (200 steps, connector) then
    stage 2 (connector + LM) as scripts/train_llava_instruct.py trains them, with held-out accuracy every
    `eval_every` steps.

    python scripts/probe_instruct_limits.py longer_lm                    # 40,000 documents, 1,500 x 16 blocks (6.7 min alone)
    python scripts/probe_instruct_limits.py question_rows cross_attention  # 5,000 stage-2 steps (17 min alone)
Deterministic (seeds); longer_lm uses two threads, question_rows one (two may run side by side on 2 cores).
"""
import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from utils import env, instruct, llava, lm, lm_data, shapes, training, vqa  # noqa: E402

STAGE = dict(batch_size=32, lr=3e-3, warmup=20, weight_decay=0.0)     # scripts/train_llava_instruct.py's


def _rounded(acc: dict) -> dict:
    return {k: round(v, 3) for k, v in acc.items()}


def held_out_items(n: int = instruct.DATA_RECIPE["test"]["n"]) -> list[dict]:
    """Notebook 07's held-out questions (notebook 05's test items), without rendering their images."""
    return instruct.dataset_items(vqa.make_vqa_dataset(n, seed=instruct.DATA_RECIPE["test"]["seed"], images=False))


def text_accuracy(model, tokenizer, items: list[dict]) -> dict[str, dict]:
    """Exact-match accuracy of an LM on `items`, blind and with each scene's true description before the
    question, and how many different answers it gave to each kind of question with the description."""
    tiny = instruct.new_instruct_model(model, llava.load_clip_vision_tower(), 67)   # answer_items takes a TinyLlava
    out = {}
    for kind, questions in (("blind", [it["question"] for it in items]),
                            ("described", [instruct.described_question(it) for it in items])):
        answers = instruct.answer_items(tiny, None, questions, tokenizer, image=False, max_new_tokens=12)
        out[kind] = _rounded(instruct.answer_accuracy(answers, items))
    out["described_distinct_answers"] = {q: len(c) for q, c in instruct.answers_by_kind(answers, items).items()}
    return out


def longer_lm(n_docs: int = 40_000, steps: int = 1_500, batch_size: int = 16, n_items: int = 400) -> dict:
    """Pretrain the course LM on `n_docs` documents for `steps` x `batch_size` blocks (the shipped one: 8,000
    documents, 250 x 8) with the shipped tokenizer; its held-out perplexity and `text_accuracy`."""
    env.set_threads(2)
    env.seed_everything(0)
    recipe = lm_data.COURSE_RECIPE
    shipped, tokenizer = lm.load_pretrained("lm_shapes")
    blocks = lm_data.pack_documents(tokenizer, lm_data.make_corpus(n_docs, recipe["seed_train"]), recipe["block"])
    test = lm_data.pack_documents(tokenizer, lm_data.make_corpus(recipe["n_test_docs"], recipe["seed_test"]),
                                  recipe["block"])                                            # (n, L)
    torch.manual_seed(recipe["train"]["seed"])
    model = lm.LM(shipped.cfg)
    cfg = training.TrainConfig(**dict(recipe["train"], steps=steps, batch_size=min(batch_size, len(blocks)), warmup=50),
                               progress=False)
    hist = training.train(model, (blocks,), lambda m, b: m(b[0], labels=b[0]).loss, cfg)
    items = held_out_items(n_items)
    out = dict(blocks=len(blocks), train_tokens=steps * cfg.batch_size * recipe["block"], seconds=round(hist.seconds),
               perplexity=round(lm_data.perplexity(model.eval(), test), 3),
               shipped_perplexity=round(lm_data.perplexity(shipped, test), 3),
               **text_accuracy(model, tokenizer, items))
    print(out, flush=True)
    return out


def question_rows(connector: str = "mlp2x_gelu", steps: int = 5_000, reps: int = 3, eval_every: int = 1_000,
                  stage1: int = 200) -> dict:
    """Stage 1 then stage 2 on one-turn conversations, one per distinct (scene, question): the number of rows
    and scenes, and held-out accuracy after stage 1 (step 0) and every `eval_every` stage-2 steps."""
    env.set_threads(1)
    env.seed_everything(0)
    language_model, tokenizer = lm.load_pretrained("lm_shapes")
    tower = llava.load_clip_vision_tower()
    data = instruct.instruct_data(tokenizer, tower)
    rng = np.random.default_rng(5)
    convs, scene_of = [], []
    for i, (conv, scene_json) in enumerate(zip(data["conversations"], data["train_ds"]["scene"])):
        scene, asked = shapes.Scene.from_json(scene_json), {(conv[0][1], conv[0][2])}     # notebook 05's question
        for _ in range(reps):
            asked |= {(q, a) for _, q, a in instruct.questions_about(scene, rng)}
        convs += [[qa] for qa in sorted(asked)]
        scene_of += [i] * len(asked)
    ids, labels = instruct.conversation_rows(tokenizer, convs)
    rows = dict(data, f_train=data["f_train"][torch.tensor(scene_of)], train_ids=ids, train_labels=labels)
    print(f"{len(convs)} one-turn rows of {ids.shape[1]} tokens from {len(data['conversations'])} scenes", flush=True)
    model = instruct.new_instruct_model(copy.deepcopy(language_model), tower, data["f_train"].shape[-1], connector)
    results = []

    def evaluate(m, step: int) -> dict:
        acc = _rounded(instruct.answer_accuracy(instruct.answer_items(m, data["f_test"], data["questions"], tokenizer),
                                                data["items"]))
        results.append(dict(step=step, **acc))
        print(results[-1], flush=True)
        m.train()
        return acc

    start = time.perf_counter()
    instruct.train_stage(model, rows, dict(STAGE, steps=stage1, seed=0), projector_only=True, progress=False)
    evaluate(model, 0)
    step = iter(range(eval_every, steps + 1, eval_every))                   # the steps eval_fn is called at
    instruct.train_stage(model, rows, dict(STAGE, steps=steps, seed=1, eval_every=eval_every), projector_only=False,
                         progress=False, eval_fn=lambda m: evaluate(m, next(step, steps)))
    print(f"{connector}: {time.perf_counter() - start:.0f} s", flush=True)
    return dict(rows=len(convs), scenes=len(data["conversations"]), results=results)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="probe", required=True)
    p = sub.add_parser("longer_lm")
    p.add_argument("--docs", type=int, default=40_000)
    p.add_argument("--steps", type=int, default=1_500)
    p.add_argument("--batch", type=int, default=16)
    p = sub.add_parser("question_rows")
    p.add_argument("connector", choices=["linear", "mlp2x_gelu", "cross_attention"])
    p.add_argument("--steps", type=int, default=5_000)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--eval-every", type=int, default=1_000)
    a = parser.parse_args()
    if a.probe == "longer_lm":
        longer_lm(a.docs, a.steps, a.batch)
    else:
        question_rows(a.connector, a.steps, a.reps, a.eval_every)
