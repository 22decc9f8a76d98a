"""Train the projector that makes SmolLM2-135M-Instruct describe ShapesWorld images (notebook 07, section 8).

LLaVA's stage 1 on a real pretrained LM: the frozen CLIP tower's CLS feature (notebook 06's image token) ->
mlp2x_gelu projector (trained) -> spliced in place of `<image>` -> SmolLM2, frozen. Data: notebook 06's 3,000
one-object captions ("a small red circle in the top left") in SmolLM2's chat format, loss on the caption only.
The descriptions of 100 held-out images are scored word by word every 125 steps, and of all 300 at the end.
Deterministic (seeds); two threads. Writes data/checkpoints/smollm_projector (float32, 1.5 MB).

    python scripts/train_smollm_projector.py            # 500 steps of 16 captions (26 min of training, 28 min in all)
    python scripts/train_smollm_projector.py --steps 4  # a smoke run (writes nothing)
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from utils import DATA_DIR, checkpoints, env, llava, smollm, training  # noqa: E402

TRAIN = dict(batch_size=16, lr=3e-3, warmup=20, weight_decay=0.0)


def main(steps: int, eval_every: int) -> None:
    env.set_threads(2)
    env.seed_everything(0)
    start = time.perf_counter()
    language_model, tokenizer = smollm.load_smollm2()
    image_token_id = smollm.add_image_token(tokenizer)
    language_model.requires_grad_(False)                              # stage 1: the LM is frozen
    data = smollm.caption_data(tokenizer, llava.load_clip_vision_tower())
    model = smollm.SmolLlava(language_model, data["f_train"].shape[-1], image_token_id)
    print(f"loaded in {time.perf_counter() - start:.0f} s; rows {tuple(data['ids'].shape)}", flush=True)

    def eval_fn(m):
        acc = smollm.mention_accuracy(smollm.describe(m, data["f_test"][:100], tokenizer), data["test_objects"][:100])
        print(f"  held-out 100: {acc}", flush=True)
        return acc

    hist = training.train(model, (data["f_train"], data["ids"], data["labels"]), lambda m, b: m.loss(*b),
                          training.TrainConfig(steps=steps, eval_every=eval_every, **TRAIN), eval_fn=eval_fn,
                          params=list(model.multi_modal_projector.parameters()))
    texts = smollm.describe(model, data["f_test"], tokenizer)
    acc = smollm.mention_accuracy(texts, data["test_objects"])
    blind = smollm.blind_description(language_model, tokenizer)
    blind_acc = smollm.mention_accuracy([blind] * len(data["test_objects"]), data["test_objects"])
    results = dict(steps=steps, seconds=round(hist.seconds, 1), seconds_per_step=round(hist.seconds / steps, 3),
                   final_loss=round(sum(hist.loss[-50:]) / len(hist.loss[-50:]), 4), held_out_300=acc,
                   blind=blind, blind_300=blind_acc, loss=[round(x, 4) for x in hist.loss],
                   eval_steps=hist.eval_steps, eval=hist.eval, first_descriptions=texts[:8])
    print(f"{steps} steps in {hist.seconds:.0f} s; held-out 300: {acc}; blind {blind!r}: {blind_acc}", flush=True)
    if steps < 100:
        print("smoke run: nothing written")
        return
    config = dict(connector="mlp2x_gelu", vision_dim=data["f_train"].shape[-1], feature_layer=smollm.FEATURE_LAYER,
                  feature_select=smollm.FEATURE_SELECT, system_prompt=smollm.SYSTEM_PROMPT, train=TRAIN,
                  lm=smollm.SMOLLM_HUB_ID, gguf_sha256=smollm.GGUF_SHA256, results=results)
    state = {k: v.detach().float() for k, v in model.multi_modal_projector.state_dict().items()}
    out = checkpoints.save_checkpoint(DATA_DIR / "checkpoints" / smollm.PROJECTOR_CHECKPOINT, state, config)
    print(f"wrote {out.relative_to(DATA_DIR.parent)} ({out.stat().st_size / 1e6:.1f} MB) after "
          f"{time.perf_counter() - start:.0f} s; now run scripts/update_manifest.py", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--eval-every", type=int, default=125)
    args = parser.parse_args()
    main(args.steps, args.eval_every)
