"""Train the tiny ViT of notebook 02 on ShapesWorld shape classification; ship it as
data/checkpoints/vit_shapes.{safetensors,json}. Deterministic (seed 0, 2 threads); about 70 s on 2 cores.
Notebook 02 runs the same recipe live; notebook 01 loads this checkpoint for its learned position embeddings.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch.nn.functional as F  # noqa: E402

from utils import DATA_DIR, checkpoints, env, shapes, training, vit  # noqa: E402

RECIPE = vit.SHAPES_VIT_RECIPE


def main():
    env.seed_everything(0)
    env.set_threads(2)
    xtr, ytr = shapes.dataset_tensors(shapes.make_shapes_dataset(RECIPE["n_train"], seed=RECIPE["data_seed_train"]))
    xte, yte = shapes.dataset_tensors(shapes.make_shapes_dataset(RECIPE["n_test"], seed=RECIPE["data_seed_test"]))
    model = vit.ViT(vit.ViTConfig(**vit.SHAPES_VIT))
    hist = training.train(model, (xtr, ytr), lambda m, b: F.cross_entropy(m(b[0]), b[1]),
                          training.TrainConfig(**RECIPE["train"]))
    acc = training.accuracy(training.predict(model, xte), yte)
    print(f"test accuracy {acc:.4f} after {hist.seconds:.0f} s")
    out = checkpoints.save_checkpoint(DATA_DIR / "checkpoints" / "vit_shapes", model.state_dict(),
                                      {"model": vit.SHAPES_VIT, "recipe": RECIPE, "test_accuracy": round(acc, 4)})
    print("wrote", out.relative_to(DATA_DIR.parent))


if __name__ == "__main__":
    main()
