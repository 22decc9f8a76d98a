"""Train the tiny CLIPs that notebooks 04-05 load: data/checkpoints/clip_minilm (frozen pretrained
all-MiniLM-L6-v2 text tower, only W_t trained) and data/checkpoints/clip_scratch (a small text Transformer
trained from scratch). Deterministic (seeds, 2 threads); each takes about 5 minutes on 2 cores.
Usage: python scripts/train_clip.py [minilm] [scratch]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from utils import DATA_DIR, checkpoints, clip_shapes, env, shapes  # noqa: E402


def main(towers):
    env.set_threads(2)
    for tower in towers:
        recipe = clip_shapes.RECIPES[tower]
        env.seed_everything(recipe["seed"])
        images, captions, _ = clip_shapes.captioned_images(recipe["n_train"], recipe["data_seed"], "train")
        encoder = clip_shapes.TextEncoder(tower)
        model, hist = clip_shapes.train_clip(tower, images, captions, encoder, recipe["steps"], recipe["batch_size"],
                                             recipe["lr"], recipe["patch_size"], recipe["seed"])
        seen = clip_shapes.zero_shot_eval(model, encoder, shapes.make_shapes_dataset(1000, seed=12, split="train"))
        held = clip_shapes.zero_shot_eval(model, encoder, shapes.make_shapes_dataset(600, seed=13, split="heldout"))
        print(f"{tower}: {hist.seconds:.0f} s; zero-shot seen {seen['accuracy']:.3f} held-out {held['accuracy']:.3f}")
        config = clip_shapes.describe(hist, tower, recipe)
        out = checkpoints.save_checkpoint(DATA_DIR / "checkpoints" / f"clip_{tower}", model.state_dict(), config)
        print("wrote", out.relative_to(DATA_DIR.parent))


if __name__ == "__main__":
    main(sys.argv[1:] or ["minilm", "scratch"])
