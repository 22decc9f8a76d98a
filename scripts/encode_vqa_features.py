"""Frozen image features of notebook 05's VQA training items, shipped as
data/checkpoints/vqa_train_features.{safetensors,json}. Deterministic (2 threads); about 20 s on 2 cores.

The tower is frozen, so these features are the same every time they are computed: shipping them saves
notebook 05 the ~15 s of encoding its training items. The notebook encodes its test items live, recomputes
the first training items with the same code and checks they match (so does tests/test_vqa_nb05_helpers.py).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from utils import DATA_DIR, checkpoints, clip_shapes, env, vqa, vqa_model  # noqa: E402

RECIPE = {"n": 3000, "seed": 1, "tower": "clip_minilm", "image_tokens": "objects"}


def main():
    env.set_threads(2)
    ds = vqa.make_vqa_dataset(RECIPE["n"], seed=RECIPE["seed"])
    tower = clip_shapes.load_shipped("minilm", DATA_DIR / "checkpoints").vision_tower
    images = ds.with_format("numpy")["image"]
    tokens, valid = vqa_model.frozen_image_tokens(images, tower, "objects")        # (n, 4, 67), (n, 4)
    global_tokens, global_valid = vqa_model.global_image_tokens(images, tower)     # (n, 1, 67), (n, 1)
    out = checkpoints.save_checkpoint(DATA_DIR / "checkpoints" / "vqa_train_features",
                                      {"tokens": tokens, "valid": valid, "global_tokens": global_tokens,
                                       "global_valid": global_valid}, {"recipe": RECIPE})
    print("wrote", out.relative_to(DATA_DIR.parent), tuple(tokens.shape), tuple(global_tokens.shape))


if __name__ == "__main__":
    main()
