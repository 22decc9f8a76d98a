"""One training loop for every notebook (minGPT's Trainer, smaller): model, data, loss and config in;
history out. It knows nothing of ViT, CLIP or AST.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from . import validate
from .progress import progress


@dataclass
class TrainConfig:
    steps: int = 500             # optimizer steps
    batch_size: int = 128        # examples per step, drawn without replacement within an epoch
    lr: float = 3e-3             # peak learning rate (AdamW)
    weight_decay: float = 0.05   # AdamW weight decay
    warmup: int = 50             # linear warm-up steps, then cosine decay to 0
    grad_clip: float = 1.0       # max global gradient norm (0 = off)
    seed: int = 0                # seeds the batch order
    eval_every: int = 0          # call eval_fn every this many steps (0 = only at the end)
    progress: bool = True        # show a tqdm bar

    def __post_init__(self):
        validate.integer("steps", self.steps, min=1)
        validate.integer("batch_size", self.batch_size, min=1)
        validate.number("lr", self.lr, 0.0, strict_min=True)
        validate.number("weight_decay", self.weight_decay, min=0.0)
        validate.integer("warmup", self.warmup, min=0)
        validate.number("grad_clip", self.grad_clip, min=0.0)  # a negative max norm flips the gradient
        validate.integer("seed", self.seed, min=0)
        validate.integer("eval_every", self.eval_every, min=0)
        if not isinstance(self.progress, bool):
            raise TypeError(f"progress must be True or False, got {self.progress!r}")


@dataclass
class History:
    loss: list[float] = field(default_factory=list)           # training loss per step
    eval_steps: list[int] = field(default_factory=list)
    eval: list[dict] = field(default_factory=list)            # what eval_fn returned at eval_steps
    extra: dict[str, list[float]] = field(default_factory=dict)  # per-step values a loss_fn reports
    seconds: float = 0.0                                      # wall time of the loop


def lr_factor(step: int, steps: int, warmup: int) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to 0 at `steps`: the share of the peak rate at `step`."""
    validate.integer("step", step, min=0)
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.5 * (1 + torch.cos(torch.tensor(progress * torch.pi)).item())


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up then cosine decay: the learning rate at `step`."""
    return cfg.lr * lr_factor(step, cfg.steps, cfg.warmup)


def batches(tensors: Sequence[torch.Tensor], batch_size: int, generator: torch.Generator):
    """Endless shuffled mini-batches over aligned tensors (the same rows of each)."""
    _check_data(tensors)
    validate.integer("batch_size", batch_size, min=1)
    validate.instance("generator", generator, torch.Generator)
    n = len(tensors[0])
    if any(len(t) != n for t in tensors):
        raise ValueError(f"tensors must have the same length, got {[len(t) for t in tensors]}")
    if batch_size > n:
        raise ValueError(f"batch_size={batch_size} is larger than the data ({n} rows)")
    while True:
        order = torch.randperm(n, generator=generator)
        for i in range(0, n - batch_size + 1, batch_size):
            idx = order[i:i + batch_size]
            yield tuple(t[idx] for t in tensors)


def _check_data(data, name: str = "data") -> None:
    """A non-empty sequence of tensors with at least one row each (refused: one bare tensor, arrays, lists)."""
    if isinstance(data, torch.Tensor) or not isinstance(data, (tuple, list)) or not data:
        raise TypeError(f"{name} must be a non-empty tuple of aligned tensors, e.g. (images, labels), "
                        f"got {type(data).__name__}")
    for i, t in enumerate(data):
        validate.tensor(f"{name}[{i}]", t)
        if t.dim() == 0 or len(t) == 0:
            raise ValueError(f"{name}[{i}] must have at least one row, got shape {tuple(t.shape)}")


def train(model: torch.nn.Module, data: Sequence[torch.Tensor], loss_fn: Callable, cfg: TrainConfig,
          eval_fn: Callable[[torch.nn.Module], dict] | None = None,
          params: Sequence[torch.nn.Parameter] | None = None) -> History:
    """Train `model` with AdamW on mini-batches of `data`.

    Args:
        model: the module; put in train mode for the loop, eval mode at the end.
        data: aligned tensors, e.g. (images, labels); each batch is passed as `loss_fn(model, batch)`.
        loss_fn: returns a 0-d loss, or (loss, dict of floats to log each step).
        cfg: the TrainConfig.
        eval_fn: optional `eval_fn(model) -> dict`, run every `cfg.eval_every` steps and at the end.
        params: the parameters to optimize (default: every parameter that requires grad).
    Returns:
        History with the per-step loss, evaluations and wall time.
    """
    validate.instance("model", model, torch.nn.Module)
    _check_data(data)
    for i, t in enumerate(data):  # NaN or inf in the data would make every loss NaN without a word
        validate.tensor(f"data[{i}]", t, finite=True)
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be a function loss_fn(model, batch) -> loss, got {type(loss_fn).__name__}")
    validate.instance("cfg", cfg, TrainConfig)
    cfg.__post_init__()  # fields may have been changed after construction
    if eval_fn is not None and not callable(eval_fn):
        raise TypeError(f"eval_fn must be a function eval_fn(model) -> dict or None, got {type(eval_fn).__name__}")
    if cfg.batch_size > len(data[0]):
        raise ValueError(f"cfg.batch_size={cfg.batch_size} is larger than the data ({len(data[0])} rows)")
    params = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    if not params:
        raise ValueError("params must hold at least one parameter that requires grad; got none to train")
    decay = [p for p in params if p.dim() >= 2]  # no weight decay on biases, norms, scalars
    rest = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    stream, hist = batches(data, cfg.batch_size, gen), History()
    bar = progress(range(cfg.steps), disable=not cfg.progress, desc="training", leave=True)
    start = time.perf_counter()
    model.train()
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        out = loss_fn(model, next(stream))
        loss, logs = out if isinstance(out, tuple) else (out, {})
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            raise TypeError(f"loss_fn must return a 0-d loss tensor (or (loss, dict)), got "
                            f"{type(loss).__name__} {tuple(getattr(loss, 'shape', ()))}")
        value = loss.item()
        if not math.isfinite(value):
            raise ValueError(f"the loss is {value} at step {step}: loss_fn returned a non-finite loss (lower cfg.lr "
                             f"= {cfg.lr}, or check loss_fn and the model for NaN); training stopped")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        hist.loss.append(value)
        for k, v in logs.items():
            hist.extra.setdefault(k, []).append(float(v))
        if step % 10 == 0:
            bar.set_postfix(loss=f"{hist.loss[-1]:.3f}")
        if eval_fn is not None and cfg.eval_every and (step + 1) % cfg.eval_every == 0 and step + 1 < cfg.steps:
            hist.eval_steps.append(step + 1)
            hist.eval.append(eval_fn(model))
            model.train()
    hist.seconds = time.perf_counter() - start
    model.eval()
    if eval_fn is not None:
        hist.eval_steps.append(cfg.steps)
        hist.eval.append(eval_fn(model))
    return hist


def step_seconds(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, repeats: int = 6) -> float:
    """Mean wall time of one classification training step (forward, cross-entropy, backward, AdamW) on the
    batch (x, y): notebook 02's step-time comparison with torchvision and tests/test_vit_benchmark.py."""
    validate.instance("model", model, torch.nn.Module)
    validate.integer("repeats", repeats, min=1)
    validate.tensor("x", x, floating=True)
    validate.tensor("y", y, dim=1)
    if len(x) != len(y):
        raise ValueError(f"x and y must hold as many items, got {len(x)} and {len(y)}")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    start = time.perf_counter()
    for _ in range(repeats):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.perf_counter() - start) / repeats


def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes, num_classes) counts: row = the true class, column = the predicted one (notebooks 04, 10)."""
    validate.integer("num_classes", num_classes, min=1)
    validate.tensor("labels", labels, dim=1)
    validate.tensor("predictions", predictions, dim=1)
    if len(labels) != len(predictions):
        raise ValueError(f"labels and predictions must hold as many items, got {len(labels)} and {len(predictions)}")
    if len(labels) and (min(labels.min(), predictions.min()) < 0 or max(labels.max(), predictions.max()) >= num_classes):
        raise ValueError(f"labels and predictions must lie in [0, num_classes) = [0, {num_classes})")
    flat = labels.long() * num_classes + predictions.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


@torch.no_grad()
def predict(model: torch.nn.Module, inputs: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Model outputs over `inputs` in eval mode, batch by batch, concatenated."""
    validate.instance("model", model, torch.nn.Module)
    validate.tensor("inputs", inputs)
    validate.integer("batch_size", batch_size, min=1)
    if inputs.dim() == 0 or len(inputs) == 0:
        raise ValueError(f"inputs must have at least one row, got shape {tuple(inputs.shape)}")
    model.eval()
    return torch.cat([model(inputs[i:i + batch_size]) for i in range(0, len(inputs), batch_size)])


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in [0, 1]."""
    validate.tensor("logits", logits, dim=2, finite=True)
    validate.tensor("labels", labels, dim=1)
    if len(logits) != len(labels) or len(labels) == 0:
        raise ValueError(f"logits (n, K) and labels (n,) must have the same n >= 1, got {tuple(logits.shape)} and "
                         f"{tuple(labels.shape)}")
    return (logits.argmax(-1) == labels).float().mean().item()


def plot_history(hist: History, ax=None, smooth: int = 20, title: str = "training loss"):
    """The loss curve (raw and a moving average over `smooth` steps); returns the Axes."""
    import matplotlib.pyplot as plt

    validate.instance("hist", hist, History)
    validate.integer("smooth", smooth, min=1)
    ax = ax or plt.subplots(figsize=(5, 3))[1]
    loss = torch.tensor(hist.loss)
    ax.plot(loss, alpha=0.3, label="per step")
    if len(loss) >= smooth > 1:
        avg = loss.unfold(0, smooth, 1).mean(-1)
        ax.plot(range(smooth - 1, len(loss)), avg, label=f"mean of {smooth}")
    ax.set(xlabel="step", ylabel="loss", title=title)
    ax.legend()
    return ax


def fit_linear_probe(features: torch.Tensor, labels: torch.Tensor, num_classes: int, steps: int = 300,
                     lr: float = 0.05, weight_decay: float = 1e-3, seed: int = 0) -> torch.nn.Linear:
    """Logistic regression on frozen features (n, d) -> a Linear(d, num_classes), full-batch AdamW.

    Features are L2-normalized first, as CLIP's linear probes are; apply the same to test features.
    """
    validate.tensor("features", features, dim=2, floating=True, finite=True)
    validate.tensor("labels", labels, dim=1)
    if labels.is_floating_point():
        raise ValueError(f"labels must hold class indices (int64), got dtype {labels.dtype}")
    if len(features) != len(labels):
        raise ValueError(f"features and labels must have the same length, got {len(features)} and {len(labels)}")
    validate.integer("num_classes", num_classes, min=2)
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must be in [0, num_classes={num_classes}), got [{labels.min().item()}, {labels.max().item()}]")
    validate.integer("steps", steps, min=1)
    validate.number("lr", lr, 0.0, strict_min=True)
    validate.number("weight_decay", weight_decay, min=0.0)
    validate.integer("seed", seed, min=0)
    torch.manual_seed(seed)
    x = torch.nn.functional.normalize(features.detach(), dim=-1)
    probe = torch.nn.Linear(x.shape[1], num_classes)
    opt = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(probe(x), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return probe.eval()
