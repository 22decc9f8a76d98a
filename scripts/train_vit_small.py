"""Notebook 02's section 7, trained to the end: the tiny ViT from scratch on the same 256 labelled images,
with the same batch (64), learning rate (2e-3) and seed as the notebook's 100 steps, but for longer schedules
(each its own warm-up and cosine decay) until it fits its 256 images. Writes
data/checkpoints/vit_small_scratch.json: per schedule, training and test accuracy (1,000 test images) and the
seconds it took. No weights. Seeded, one thread, about 5 minutes.

    python scripts/train_vit_small.py
    python scripts/train_vit_small.py --smoke    # 2 steps; writes nothing
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch.nn.functional as F  # noqa: E402

from utils import DATA_DIR, env, shapes, training, vit  # noqa: E402

SCHEDULES = (100, 200, 400, 800)
OUT = DATA_DIR / "checkpoints" / "vit_small_scratch.json"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="2 steps; writes nothing")
    args = ap.parse_args()
    env.setup(seed=0, threads=1)
    recipe = vit.SHAPES_VIT_RECIPE
    x_train, y_train = shapes.dataset_tensors(shapes.make_shapes_dataset(recipe["n_train"], seed=recipe["data_seed_train"]), "shape")
    x_test, y_test = shapes.dataset_tensors(shapes.make_shapes_dataset(recipe["n_test"], seed=recipe["data_seed_test"]), "shape")
    small_x, small_y = x_train[:256], y_train[:256]
    runs = []
    for steps in (2,) if args.smoke else SCHEDULES:
        cfg = training.TrainConfig(steps=steps, batch_size=64, lr=2e-3, warmup=15, seed=0, progress=False)
        env.seed_everything(0)
        model = vit.ViT(vit.ViTConfig(**vit.SHAPES_VIT))
        start = time.perf_counter()
        training.train(model, (small_x, small_y), lambda m, b: F.cross_entropy(m(b[0]), b[1]), cfg)
        run = dict(steps=steps, train=round(training.accuracy(training.predict(model, small_x), small_y), 4),
                   test=round(training.accuracy(training.predict(model, x_test), y_test), 4),
                   seconds=round(time.perf_counter() - start, 1))
        print(run, flush=True)
        runs.append(run)
    if args.smoke:
        print("smoke run: nothing written")
        return
    OUT.write_text(json.dumps(dict(recipe=dict(images=256, batch_size=64, lr=2e-3, warmup=15, seed=0, threads=1,
                                               data="notebook 02's first 256 training images"),
                                   runs=runs), indent=1) + "\n")
    print(f"wrote {OUT.relative_to(DATA_DIR.parent)}; now run scripts/update_manifest.py")


if __name__ == "__main__":
    main()
