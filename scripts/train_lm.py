"""Pretrain the course LM that notebooks 06-07 load: data/checkpoints/lm_shapes.{safetensors,json} and its
tokenizer data/checkpoints/lm_tokenizer.json, then rewrite data/MANIFEST.

A text-only corpus about ShapesWorld (utils.lm_data.make_corpus) -> a byte-level BPE tokenizer trained on it
-> documents packed into blocks -> LMConfig.preset("course") trained with utils.training.train -> held-out
perplexity. Deterministic (seeds, 2 threads); a few minutes on 2 cores.
Usage: python scripts/train_lm.py [--steps N]   (N overrides the recipe, for a quick trial; nothing is saved)
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from utils import DATA_DIR, checkpoints, env, lm, lm_data, training  # noqa: E402


def main(steps: int | None = None) -> None:
    start = time.perf_counter()
    env.set_threads(2)
    env.seed_everything(0)
    recipe = lm_data.COURSE_RECIPE
    train_docs = lm_data.make_corpus(recipe["n_train_docs"], recipe["seed_train"])
    test_docs = lm_data.make_corpus(recipe["n_test_docs"], recipe["seed_test"])
    tok = lm_data.train_tokenizer(train_docs, recipe["vocab_size"])
    blocks = lm_data.pack_documents(tok, train_docs, recipe["block"])          # (n, L)
    test = lm_data.pack_documents(tok, test_docs, recipe["block"])             # (n, L)
    print(f"corpus: {len(train_docs)} documents, {blocks.numel()} tokens in {len(blocks)} blocks of "
          f"{recipe['block']}; held out {test.numel()} tokens; vocabulary {tok.get_vocab_size()} "
          f"({time.perf_counter() - start:.0f} s)")

    cfg = lm.LMConfig.preset("course")
    if cfg.vocab_size != tok.get_vocab_size():
        raise ValueError(f"the course preset has vocab_size={cfg.vocab_size}, the tokenizer {tok.get_vocab_size()}")
    torch.manual_seed(recipe["train"]["seed"])
    model = lm.LM(cfg)
    tcfg = training.TrainConfig(**{**recipe["train"], **({"steps": steps} if steps else {})})
    print(f"LM: {model.num_parameters():,} parameters; before training held-out perplexity "
          f"{lm_data.perplexity(model, test):.1f}")
    hist = training.train(model, (blocks,), lambda m, b: m(b[0], labels=b[0]).loss, tcfg)
    ppl = lm_data.perplexity(model, test)
    print(f"trained {tcfg.steps} steps in {hist.seconds:.0f} s; final train loss "
          f"{sum(hist.loss[-20:]) / 20:.3f}; held-out perplexity {ppl:.3f}")

    hf_tok = lm_data.wrap_tokenizer(tok)
    prompts = ["a small", "<|im_start|>user\n<image>\nDescribe the image.<|im_end|>\n<|im_start|>assistant\n",
               "the image shows a large red square in the top left and a small blue circle on the right.\n"
               "Question: What colour is the circle?\nAnswer:"]
    stop = [hf_tok.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_end|>")]
    for p in prompts:
        ids = torch.tensor([tok.encode(p).ids])
        out = model.generate(ids, max_new_tokens=24, eos_token_id=stop)
        print(f"  {p!r} -> {hf_tok.decode(out[0], skip_special_tokens=False)!r}")
    if steps:
        print("a trial run: nothing saved")
        return

    out_dir = DATA_DIR / "checkpoints"
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_dir / "lm_tokenizer.json"))
    config = {"lm": cfg.to_dict(), "tokenizer": "lm_tokenizer.json", "recipe": recipe,
              "heldout_perplexity": round(ppl, 4), "final_loss": round(sum(hist.loss[-20:]) / 20, 4),
              "train_seconds": round(hist.seconds, 1)}
    state = {k: v for k, v in model.state_dict().items() if not (cfg.tie_embeddings and k == "lm_head.weight")}
    path = checkpoints.save_checkpoint(out_dir / "lm_shapes", state, config)  # a tied matrix is stored once
    files = sorted(p for p in DATA_DIR.rglob("*") if p.is_file() and p.name != "MANIFEST")
    checkpoints.write_manifest(files)
    print(f"wrote {path.relative_to(DATA_DIR.parent)} ({path.stat().st_size / 1e6:.1f} MB), lm_tokenizer.json, "
          f"data/MANIFEST ({len(files)} files); total {time.perf_counter() - start:.0f} s")
    print(json.dumps({"heldout_perplexity": round(ppl, 3), "train_seconds": round(hist.seconds, 1)}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=None)
    main(parser.parse_args().steps)
