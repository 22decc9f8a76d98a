"""Instruction-tune the tiny LLaVA of notebook 07 for longer than the notebook can, and ship the models.

Notebook 05's 3,000 training scenes -> conversations in LLaVA's format (utils.instruct.item_conversations) ->
TinyLlava on the course LM (lm_shapes) reading region features of the frozen CLIP tower. Stage 1 trains the
connector alone, stage 2 the connector and the LM, as LLaVA does. Exact-match answers on notebook 05's 400
held-out scenes are printed after each stage. Deterministic (seeds, one thread).

    python scripts/train_llava_instruct.py main        # mlp2x_gelu, 200 + 2,400 steps (29 min here)
    python scripts/train_llava_instruct.py main_xattn  # gated cross-attention, 200 + 2,400 steps
    python scripts/train_llava_instruct.py compare     # 4 connectors / features, 200 + 600 steps each
    python scripts/train_llava_instruct.py compare_tower  # the MLP row with the tower unfrozen in stage 2

main writes data/checkpoints/llava_instruct_stage1 (after stage 1) and llava_instruct (after stage 2),
main_xattn llava_instruct_xattn_stage1 and llava_instruct_xattn; compare writes llava_cmp_<name> for each row
of notebook 07's connector table. Each process uses one thread (two may run side by side on 2 cores). The
frozen tower is not stored (compare_tower stores the trained one); weights are float16, and the accuracies printed are those of the float16 weights.
"""
import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from utils import DATA_DIR, checkpoints, env, instruct, llava, lm, vqa_model  # noqa: E402

STAGE = dict(batch_size=32, lr=3e-3, warmup=20, weight_decay=0.0)
RUNS = {
    "main": [dict(name="llava_instruct", connector="mlp2x_gelu", layers=(), stage1=200, stage2=2400)],
    "main_xattn": [dict(name="llava_instruct_xattn", connector="cross_attention", layers=(), stage1=200, stage2=2400)],
    "compare": [dict(name=f"llava_cmp_{n}", connector=c, layers=l, stage1=200, stage2=600)
                for n, c, l in [("linear", "linear", ()), ("mlp", "mlp2x_gelu", ()),
                                ("xattn", "cross_attention", ()), ("mlp_layers", "mlp2x_gelu", (1, 2, 3))]],
    # the MLP row again with the CLIP tower unfrozen in stage 2 (its region features recomputed every step)
    "compare_tower": [dict(name="llava_cmp_mlp_tower", connector="mlp2x_gelu", layers=(), stage1=200, stage2=600,
                           tower=True)],
}


def evaluate(model, data, tokenizer, tower_trained: bool = False) -> dict[str, float]:
    f_test = (vqa_model.object_features(data["test_ds"].with_format("numpy")["image"], model.vision_tower)[0]
              if tower_trained else data["f_test"])                         # a trained tower: its own features
    preds = instruct.answer_items(model, f_test, data["questions"], tokenizer)
    return {k: round(v, 4) for k, v in instruct.answer_accuracy(preds, data["items"]).items()}


def to_float16(model, tower: bool = False) -> None:
    """Round `model`'s shipped weights to float16 in place, so that what is measured is what ships."""
    model.load_state_dict({k: v.float() for k, v in instruct.instruct_state(model, tower).items()}, strict=False)


def save(name: str, model, config: dict, tower: bool = False) -> None:
    out = checkpoints.save_checkpoint(DATA_DIR / "checkpoints" / name, instruct.instruct_state(model, tower), config)
    print(f"  wrote {out.relative_to(DATA_DIR.parent)} ({out.stat().st_size / 1e6:.1f} MB)", flush=True)


def run(spec: dict, tokenizer, language_model, tower, data_cache: dict) -> None:
    start = time.perf_counter()
    layers = tuple(spec["layers"])
    if layers not in data_cache:
        data_cache[layers] = instruct.instruct_data(tokenizer, tower, layers)
    data = data_cache[layers]
    tower_trained = bool(spec.get("tower"))
    if tower_trained:
        data = dict(data, **instruct.tower_crops())
        with torch.no_grad():
            frozen = vqa_model.region_tokens(tower.eval(), data["train_crops"], data["train_geometry"], data["train_valid"])
        print(f"  crops {tuple(data['train_crops'].shape)}; frozen tower from crops vs shipped features: "
              f"max |difference| {(frozen - data['f_train'].float()).abs().max().item():.1e}", flush=True)
    model = instruct.new_instruct_model(copy.deepcopy(language_model), copy.deepcopy(tower) if tower_trained else tower,
                                        data["f_train"].shape[-1],
                                        spec["connector"])
    config = dict(spec, layers=list(layers), feature_dim=data["f_train"].shape[-1], data=instruct.DATA_RECIPE,
                  stage=STAGE, results={})
    for stage, steps, seed in (("stage1", spec["stage1"], 0), ("stage2", spec["stage2"], 1)):
        hist = instruct.train_stage(model, data, dict(STAGE, steps=steps, seed=seed), projector_only=stage == "stage1",
                                    progress=False, tower=tower_trained and stage == "stage2")
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        result = dict(steps=steps, seconds=round(hist.seconds, 1), seconds_per_step=round(hist.seconds / steps, 3),
                      final_loss=round(sum(hist.loss[-50:]) / len(hist.loss[-50:]), 4), trainable=trainable)
        shipped = stage == "stage2" or spec["name"].startswith("llava_instruct")   # main runs ship stage 1 too
        if shipped:
            to_float16(model, tower_trained)
        result["accuracy"] = evaluate(model, data, tokenizer, tower_trained)
        config["results"][stage] = result
        print(f"{spec['name']} {stage}: {steps} steps in {hist.seconds:.0f} s, loss {result['final_loss']}, "
              f"held-out {result['accuracy']}", flush=True)
        if shipped:
            save(spec["name"] + ("_stage1" if stage == "stage1" else ""), model, config, tower_trained)
    print(f"{spec['name']}: {time.perf_counter() - start:.0f} s; {json.dumps(config['results'])}", flush=True)


def main(which: str) -> None:
    env.set_threads(1)
    env.seed_everything(0)
    language_model, tokenizer = lm.load_pretrained("lm_shapes")
    tower = llava.load_clip_vision_tower()
    cache: dict = {}
    for spec in RUNS[which]:
        run(spec, tokenizer, language_model, tower, cache)
    print("now run scripts/update_manifest.py to record the new files in data/MANIFEST")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("which", choices=sorted(RUNS))
    main(parser.parse_args().which)
