"""Multiple-choice VQA and caption matching on ShapesWorld (notebook 05).

Items follow the lecture's Visual7W-style format: a question and four candidate answers, exactly one correct,
all of the question's answer type. Each item is generated answer-first: the correct answer is drawn uniformly,
then a scene is built that makes it true, so neither the answers alone nor the question with the answers
give the correct choice away (notebook 05 measures that). The model is the "simple, yet strong baseline" of
Jabri et al., 2016, "Revisiting Visual Question Answering Baselines": an MLP scores the concatenated
(image, question, answer) features of each candidate; a softmax over the four scores is trained with
cross-entropy on the correct index.
Shapes: B items, A = 4 candidates, N patch tokens, D image width, E text width.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from .shapes import COLOR_NAMES, SHAPES, SIZES, Scene, ShapeObject, position_name, render_scene

QUESTION_TYPES = ("colour", "shape", "count", "where", "yes/no")
POSITIONS = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")
WHERE_ANSWERS = {p: f"{'on the' if p in ('left', 'right') else 'at the' if p in ('top', 'bottom') else 'in the'} {p}"
                 for p in POSITIONS}  # "in the top left", "at the top", "on the left", "in the center"
COUNTS = ("0", "1", "2", "3")
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses"}
VQA_SIZE = "small"  # up to 4 objects must fit on the 32x32 canvas


# ----------------------------------------------------------------------------- scenes that make an answer true
def place_objects(rng: np.random.Generator, specs: list[tuple[str, str, str | None]], canvas: int = 32,
                  max_tries: int = 500) -> tuple[ShapeObject, ...]:
    """Place small objects (shape, colour, position name or None) without overlap.

    A position name puts the object's centre in that ninth of the canvas. `ValueError` when they do not fit.
    """
    r = SIZES[VQA_SIZE] * canvas
    if len(specs) * (2 * r) ** 2 > canvas ** 2:
        raise ValueError(f"{len(specs)} objects of size {VQA_SIZE!r} cannot fit on a {canvas}x{canvas} canvas")
    third = canvas / 3
    for _ in range(max_tries):
        placed: list[ShapeObject] = []
        for shape, colour, where in specs:
            for _ in range(max_tries):
                if where is None:
                    x, y = rng.uniform(r + 0.5, canvas - r - 0.5, size=2)
                else:
                    row, col = divmod(POSITIONS.index(where), 3)
                    x = rng.uniform(max(col * third, r + 0.5), min((col + 1) * third, canvas - r - 0.5))
                    y = rng.uniform(max(row * third, r + 0.5), min((row + 1) * third, canvas - r - 0.5))
                obj = ShapeObject(shape, colour, VQA_SIZE, round(float(x), 2), round(float(y), 2))
                if (where is None or position_name(obj.x, obj.y, canvas) == where) and all(
                        np.hypot(obj.x - p.x, obj.y - p.y) >= 2 * r + 1 for p in placed):
                    placed.append(obj)
                    break
            else:
                break
        if len(placed) == len(specs):
            order = rng.permutation(len(placed))  # the asked-about object is not always drawn first
            return tuple(placed[i] for i in order)
    raise ValueError(f"could not place {len(specs)} objects without overlap on a {canvas}x{canvas} canvas")


def _pick(rng, options, exclude=()):
    pool = [o for o in options if o not in exclude]
    return pool[rng.integers(len(pool))]


def _choices(rng, correct: str, vocabulary, k: int = 4) -> tuple[list[str], int]:
    """The correct answer and k-1 distinct distractors from the same vocabulary, shuffled."""
    distractors = list(rng.choice([v for v in vocabulary if v != correct], size=k - 1, replace=False))
    choices = [correct] + [str(d) for d in distractors]
    order = rng.permutation(k)
    return [choices[i] for i in order], int(np.argmax(order == 0))


def _others(rng, n: int, avoid_shape=None, avoid_colour=None, avoid_pair=None):
    """n distractor objects that never match what the question singles out."""
    out = []
    while len(out) < n:
        s, c = _pick(rng, SHAPES), _pick(rng, COLOR_NAMES)
        if s == avoid_shape or c == avoid_colour or (s, c) == avoid_pair:
            continue
        out.append((s, c, None))
    return out


def make_item(rng: np.random.Generator, qtype: str, canvas: int = 32) -> dict:
    """One multiple-choice item of type `qtype`: scene, question, four choices, the correct index."""
    n_objects = int(rng.integers(2, 5))  # 2 to 4 objects
    if qtype == "colour":      # What colour is the circle?  (the only circle in the scene)
        shape, colour = _pick(rng, SHAPES), _pick(rng, COLOR_NAMES)
        specs = [(shape, colour, None)] + _others(rng, n_objects - 1, avoid_shape=shape)
        question, (choices, answer) = f"What colour is the {shape}?", _choices(rng, colour, COLOR_NAMES)
    elif qtype == "shape":     # What shape is the red object?  (the only red object)
        shape, colour = _pick(rng, SHAPES), _pick(rng, COLOR_NAMES)
        specs = [(shape, colour, None)] + _others(rng, n_objects - 1, avoid_colour=colour)
        question, (choices, answer) = f"What shape is the {colour} object?", _choices(rng, shape, SHAPES)
    elif qtype == "count":     # How many red objects are there? / How many circles are there?
        count = int(rng.integers(0, 4))
        n_objects = max(n_objects, count, 1) if count < 3 else max(n_objects, 3)
        if rng.random() < 0.5:
            colour = _pick(rng, COLOR_NAMES)
            specs = [(_pick(rng, SHAPES), colour, None) for _ in range(count)]
            specs += _others(rng, n_objects - count, avoid_colour=colour)
            question = f"How many {colour} objects are there?"
        else:
            shape = _pick(rng, SHAPES)
            specs = [(shape, _pick(rng, COLOR_NAMES), None) for _ in range(count)]
            specs += _others(rng, n_objects - count, avoid_shape=shape)
            question = f"How many {PLURALS[shape]} are there?"
        choices, answer = _choices(rng, str(count), COUNTS)
    elif qtype == "where":     # Where is the red circle?  (the only red circle)
        shape, colour, where = _pick(rng, SHAPES), _pick(rng, COLOR_NAMES), _pick(rng, POSITIONS)
        specs = [(shape, colour, where)] + _others(rng, n_objects - 1, avoid_pair=(shape, colour))
        question = f"Where is the {colour} {shape}?"
        choices, answer = _choices(rng, WHERE_ANSWERS[where], list(WHERE_ANSWERS.values()))
    elif qtype == "yes/no":    # Is the circle red?  -> "yes" or "no, it is <its colour>"
        shape, asked, truth = _pick(rng, SHAPES), _pick(rng, COLOR_NAMES), None
        correct_is_yes = rng.random() < 0.25  # one of four candidates is "yes": a quarter keeps it at chance
        truth = asked if correct_is_yes else _pick(rng, COLOR_NAMES, exclude=(asked,))
        specs = [(shape, truth, None)] + _others(rng, n_objects - 1, avoid_shape=shape)
        question = f"Is the {shape} {asked}?"
        nos = [f"no, it is {c}" for c in COLOR_NAMES if c != asked]
        correct = "yes" if correct_is_yes else f"no, it is {truth}"
        # "yes" is always a candidate and right a quarter of the time, so its presence tells nothing
        other_nos = [str(c) for c in rng.permutation([c for c in nos if c != correct])]
        distractors = other_nos[:3] if correct_is_yes else ["yes"] + other_nos[:2]
        choices = [correct] + distractors
        order = rng.permutation(4)
        choices, answer = [choices[i] for i in order], int(np.argmax(order == 0))
    else:
        raise ValueError(f"qtype must be one of {QUESTION_TYPES}, got {qtype!r}")
    objects = place_objects(rng, specs, canvas)
    scene = Scene(objects, canvas, round(float(rng.uniform(0.05, 0.2)), 3), int(rng.integers(2 ** 31)))
    return {"scene": scene, "question": question, "choices": choices, "answer": answer, "qtype": qtype}


def make_vqa_dataset(n: int, seed: int = 0, canvas: int = 32, qtypes=QUESTION_TYPES, noise: float = 0.04):
    """A `datasets.Dataset` of `n` items, question types in turn, deterministic for `seed`.

    Columns: image, question, choices (4 strings), answer (index of the correct choice), qtype, scene (JSON).
    """
    from datasets import Dataset, Features, Image, Sequence, Value

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    rows = {k: [] for k in ("image", "question", "choices", "answer", "qtype", "scene")}
    for i in range(n):
        item = make_item(rng, qtypes[i % len(qtypes)], canvas)
        rows["image"].append(render_scene(item["scene"], noise))
        rows["scene"].append(item["scene"].to_json())
        for k in ("question", "choices", "answer", "qtype"):
            rows[k].append(item[k])
    features = Features(image=Image(), question=Value("string"), choices=Sequence(Value("string"), length=4),
                        answer=Value("int64"), qtype=Value("string"), scene=Value("string"))
    return Dataset.from_dict(rows, features=features)


# ----------------------------------------------------------------------------- caption matching
def make_caption_matching_dataset(n: int, seed: int = 0, canvas: int = 32, noise: float = 0.04):
    """One-object scenes, each with its true caption and four distractors that each change one attribute
    (colour, shape, size, position), shuffled. Columns: image, captions (5), answer, changed (5), scene."""
    from datasets import Dataset, Features, Image, Sequence, Value

    from .shapes import SIZE_NAMES, caption, sample_scene

    rng = np.random.default_rng(seed)
    template = "a {size} {color} {shape} in the {position}"
    rows = {k: [] for k in ("image", "captions", "answer", "changed", "scene")}
    for _ in range(n):
        scene = sample_scene(rng, 1, canvas)
        obj = scene.objects[0]
        where = obj.position(canvas)
        true = caption(obj, canvas, template)
        fields = {"color": obj.color, "shape": obj.shape, "size": obj.size, "position": where}
        variants = {"colour": dict(fields, color=_pick(rng, COLOR_NAMES, (obj.color,))),
                    "shape": dict(fields, shape=_pick(rng, SHAPES, (obj.shape,))),
                    "size": dict(fields, size=_pick(rng, SIZE_NAMES, (obj.size,))),
                    "position": dict(fields, position=_pick(rng, POSITIONS, (where,)))}
        texts = [true] + [caption(obj, canvas, template.replace("{position}", v["position"]).replace(
            "{color}", v["color"]).replace("{shape}", v["shape"]).replace("{size}", v["size"])) for v in variants.values()]
        kinds = ["true"] + list(variants)
        order = rng.permutation(5)
        rows["image"].append(render_scene(scene, noise))
        rows["captions"].append([texts[i] for i in order])
        rows["changed"].append([kinds[i] for i in order])
        rows["answer"].append(int(np.argmax(order == 0)))
        rows["scene"].append(scene.to_json())
    features = Features(image=Image(), captions=Sequence(Value("string"), length=5), answer=Value("int64"),
                        changed=Sequence(Value("string"), length=5), scene=Value("string"))
    return Dataset.from_dict(rows, features=features)


# ----------------------------------------------------------------------------- object (region) features
def object_masks(image: np.ndarray, saturation: float = 0.3, min_area: int = 6, max_objects: int = 4) -> list[np.ndarray]:
    """Object proposals without learning: ShapesWorld's background is grey and its shapes are saturated, so
    pixels whose saturation (max - min of R, G, B in [0, 1]) exceeds `saturation` are foreground, and each
    connected component of at least `min_area` pixels is an object. Returns up to `max_objects` (H, W) bool
    masks, largest first. (Real VQA systems get such regions from a trained detector.)"""
    from scipy import ndimage

    rgb = np.asarray(image, dtype=np.float32) / 255.0
    labels, n = ndimage.label(rgb.max(-1) - rgb.min(-1) > saturation)
    masks = [labels == i for i in range(1, n + 1)]
    return sorted((m for m in masks if m.sum() >= min_area), key=lambda m: -m.sum())[:max_objects]


def isolate_object(image: np.ndarray, masks: list[np.ndarray], k: int, rng: np.random.Generator,
                   grown: list[np.ndarray] | None = None) -> np.ndarray:
    """The image with every object but the k-th painted over with the background grey and light noise:
    a one-object scene, the kind the CLIP image tower was trained on. Returns (H, W, 3) floats in [0, 1].
    `grown` may pass the masks already dilated by one pixel (to cover anti-aliased edges)."""
    from scipy import ndimage

    rgb = np.asarray(image, dtype=np.float32) / 255.0
    grown = grown if grown is not None else [ndimage.binary_dilation(m) for m in masks]
    foreground = np.logical_or.reduce(grown)
    background = np.median(rgb[~foreground], axis=0) if (~foreground).any() else np.full(3, 0.12)
    others = foreground & ~grown[k]
    out = rgb.copy()
    out[others] = background + rng.normal(0.0, 0.04, (int(others.sum()), 3))
    return np.clip(out, 0.0, 1.0)


@torch.no_grad()
def object_features(images, vision_tower: nn.Module, max_objects: int = 4, seed: int = 0, batch_size: int = 500):
    """Region features from a frozen image tower: for each object proposal, the tower's CLS feature of the
    image with only that object left, plus where it is (centre x, centre y, area as fractions of the canvas).

    Returns tokens (B, K, D + 3) and valid (B, K) bool, K = max_objects (absent objects are zeros, not valid).
    """
    rng = np.random.default_rng(seed)
    crops, slots = [], []
    from scipy import ndimage

    for b, image in enumerate(images):
        masks = object_masks(image, max_objects=max_objects)
        grown = [ndimage.binary_dilation(m) for m in masks]
        H, W = masks[0].shape if masks else (1, 1)
        for k, m in enumerate(masks):
            crops.append(isolate_object(image, masks, k, rng, grown))
            ys, xs = np.nonzero(m)
            slots.append((b, k, xs.mean() / W, ys.mean() / H, m.sum() / (H * W)))
    vision_tower.eval()
    x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float()                        # (n_objects, 3, H, W)
    cls = torch.cat([vision_tower(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])  # (n_objects, D)
    tokens = torch.zeros(len(images), max_objects, cls.shape[1] + 3)
    valid = torch.zeros(len(images), max_objects, dtype=torch.bool)
    for (b, k, cx, cy, area), f in zip(slots, cls):
        tokens[b, k, :-3], tokens[b, k, -3:], valid[b, k] = f, torch.tensor([cx, cy, area]), True
    return tokens, valid


# ----------------------------------------------------------------------------- the scorer
@dataclass
class VQAConfig:
    token_dim: int = 67          # width of an image token: a 64-d feature, then centre x, centre y and area
    text_dim: int = 384          # E, width of the frozen text features (MiniLM)
    hidden: int = 256            # hidden width
    use_image: bool = True       # the ablations switch inputs off
    use_question: bool = True
    use_answer: bool = True
    pool: str = "attention"      # 'mean' over image tokens, or 'attention' conditioned on the question
    heads: int = 2               # glimpses of the question-conditioned attention

    def __post_init__(self):
        if self.pool not in {"mean", "attention"}:
            raise ValueError(f"pool must be 'mean' or 'attention', got {self.pool!r}")
        if self.pool == "attention" and not self.use_question:
            raise ValueError("pool='attention' needs use_question=True (the question is the query)")
        if not (self.use_image or self.use_question or self.use_answer):
            raise ValueError("at least one of use_image, use_question, use_answer must be True")


class AnswerScorer(nn.Module):
    """score(image, question, answer) = MLP([image features; question features; answer features]).

    Image features pool the image tokens (patch tokens or object tokens): by their mean, or by attention
    with the question as the query (`heads` glimpses), plus a soft count (the sum of a per-token sigmoid)
    per glimpse, since a softmax average cannot count.
    """

    def __init__(self, cfg: VQAConfig):
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden
        self.question = nn.Sequential(nn.Linear(cfg.text_dim, h), nn.GELU())
        self.answer = nn.Sequential(nn.Linear(cfg.text_dim, h), nn.GELU())
        self.token_norm = nn.LayerNorm(cfg.token_dim - 3)  # the feature part; position and area go in as they are
        self.token = nn.Sequential(nn.Linear(cfg.token_dim, h), nn.GELU(), nn.Linear(h, h))
        pooled = cfg.heads * (h + 1) if cfg.pool == "attention" else h
        self.attention = nn.Linear(h, cfg.heads) if cfg.pool == "attention" else None
        self.count = nn.Linear(h, cfg.heads) if cfg.pool == "attention" else None
        self.image = nn.Linear(pooled, h)
        width = h * (cfg.use_image + cfg.use_question + cfg.use_answer)
        self.mlp = nn.Sequential(nn.Linear(width, h), nn.GELU(), nn.Linear(h, h), nn.GELU(), nn.Linear(h, 1))

    def image_features(self, tokens: torch.Tensor, valid: torch.Tensor, q: torch.Tensor, return_weights: bool = False):
        """tokens (B, T, token_dim), valid (B, T), q (B, h) -> (B, h) (and the (B, T, heads) attention)."""
        t = self.token(torch.cat([self.token_norm(tokens[..., :-3]), tokens[..., -3:]], -1))  # (B, T, h)
        if self.attention is None:
            m = valid[..., None].float()
            pooled, weights = (t * m).sum(1) / m.sum(1).clamp_min(1.0), None        # (B, h)
        else:
            match = t * q[:, None]                                                  # (B, T, h)
            logits = self.attention(match).masked_fill(~valid[..., None], float("-inf"))
            weights = logits.softmax(1).nan_to_num(0.0)                             # (B, T, heads)
            glimpses = torch.einsum("bth,btd->bhd", weights, t).flatten(1)          # (B, heads * h)
            counts = (torch.sigmoid(self.count(match)) * valid[..., None]).sum(1)   # (B, heads)
            pooled = torch.cat([glimpses, counts], dim=-1)
        v = self.image(pooled)                                                      # (B, h)
        return (v, weights) if return_weights else v

    def forward(self, tokens, valid, question, answers) -> torch.Tensor:
        """tokens (B, T, token_dim), valid (B, T), question (B, E), answers (B, A, E) -> logits (B, A)."""
        B, A, _ = answers.shape
        q = self.question(question)                                                 # (B, h)
        parts = []
        if self.cfg.use_image:
            parts.append(self.image_features(tokens, valid, q)[:, None].expand(B, A, -1))  # (B, A, h)
        if self.cfg.use_question:
            parts.append(q[:, None].expand(B, A, -1))                              # (B, A, h)
        if self.cfg.use_answer:
            parts.append(self.answer(answers))                                      # (B, A, h)
        return self.mlp(torch.cat(parts, dim=-1)).squeeze(-1)                     # (B, A)


# ----------------------------------------------------------------------------- features, training, evaluation
@torch.no_grad()
def encode_items(ds, vision_tower: nn.Module, text_features, image_tokens: str = "objects", layer: int = 2,
                 batch_size: int = 500) -> dict:
    """Frozen features of a VQA dataset.

    Args:
        vision_tower: the CLIP image tower (a `utils.vit.ViT` with num_classes=0), kept frozen.
        text_features: texts -> (n, E) frozen sentence features (e.g. MiniLM's).
        image_tokens: 'objects' (one region feature per object proposal, `object_features`) or 'patches'
            (the patch tokens after block `layer`, with their grid position).
    Returns:
        dict with tokens (B, T, token_dim), valid (B, T), question (B, E), answers (B, A, E), answer (B,), qtype.
    """
    images = ds.with_format("numpy")["image"]
    if image_tokens == "objects":
        tokens, valid = object_features(images, vision_tower)
    elif image_tokens == "patches":
        from .shapes import images_to_tensor

        x = images_to_tensor(images)
        vision_tower.eval()
        tokens = torch.cat([vision_tower.hidden_states(x[i:i + batch_size])[layer][:, 1:]
                            for i in range(0, len(x), batch_size)])                   # (B, N, D) patch tokens
        grid = int(tokens.shape[1] ** 0.5)
        rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
        where = torch.stack([(cols.flatten() + 0.5) / grid, (rows.flatten() + 0.5) / grid,
                             torch.full((grid * grid,), 1 / grid ** 2)], -1)           # (N, 3) like an object's
        tokens = torch.cat([tokens, where.expand(len(tokens), -1, -1)], -1)           # (B, N, D + 3)
        valid = torch.ones(tokens.shape[:2], dtype=torch.bool)
    else:
        raise ValueError(f"image_tokens must be 'objects' or 'patches', got {image_tokens!r}")
    choices = [list(c) for c in ds["choices"]]
    return {"tokens": tokens, "valid": valid, "question": text_features(list(ds["question"])),
            "answers": text_features([a for c in choices for a in c]).reshape(len(choices), len(choices[0]), -1),
            "answer": torch.tensor(ds["answer"]), "qtype": list(ds["qtype"])}


FIELDS = ("tokens", "valid", "question", "answers", "answer")


def vqa_loss(model: AnswerScorer, batch) -> torch.Tensor:
    tokens, valid, question, answers, answer = batch
    return nn.functional.cross_entropy(model(tokens, valid, question, answers), answer)


def train_scorer(cfg: VQAConfig, feats: dict, steps: int = 1500, batch_size: int = 128, lr: float = 1e-3,
                 seed: int = 0, progress: bool = True):
    """Train an AnswerScorer on encoded items with the shared loop; returns (model, History)."""
    from .training import TrainConfig, train

    torch.manual_seed(seed)
    model = AnswerScorer(cfg)
    hist = train(model, tuple(feats[k] for k in FIELDS), vqa_loss,
                 TrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup=50, weight_decay=0.01, seed=seed,
                             progress=progress))
    return model, hist


@torch.no_grad()
def evaluate(model: AnswerScorer, feats: dict) -> dict:
    """Accuracy overall and per question type, with the (B, A) probabilities."""
    model.eval()
    probs = model(feats["tokens"], feats["valid"], feats["question"], feats["answers"]).softmax(-1)
    correct = probs.argmax(-1) == feats["answer"]
    out = {"overall": correct.float().mean().item()}
    for t in QUESTION_TYPES:
        mask = torch.tensor([q == t for q in feats["qtype"]])
        if mask.any():
            out[t] = correct[mask].float().mean().item()
    out["probs"] = probs
    return out
