"""The multiple-choice scorer of notebook 05 and the frozen features it reads.

Jabri et al., 2016, "Revisiting Visual Question Answering Baselines": an MLP scores the concatenated
(image, question, answer) features of each candidate; a softmax over the candidates is trained with
cross-entropy on the correct index. Image features are region features from the frozen CLIP image tower
(one per object proposal, as in Anderson et al., 2018) or its patch tokens.
Shapes: B items, A candidates, T image tokens, D image width, E text width, h hidden width.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from . import validate
from .vqa import QUESTION_TYPES


def _check_image(name: str, image) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"{name} must be an (H, W, 3) uint8 image, got shape {arr.shape} and dtype {arr.dtype}")
    return arr


# ----------------------------------------------------------------------------- object (region) features
def object_masks(image: np.ndarray, saturation: float = 0.3, min_area: int = 6, max_objects: int = 4) -> list[np.ndarray]:
    """Object proposals without learning: ShapesWorld's background is grey and its shapes are saturated, so
    pixels whose saturation (max - min of R, G, B in [0, 1]) exceeds `saturation` are foreground, and each
    connected component of at least `min_area` pixels is an object. Returns up to `max_objects` (H, W) bool
    masks, largest first. (Real VQA systems get such regions from a trained detector.)"""
    from scipy import ndimage

    _check_image("image", image)
    validate.number("saturation", saturation, 0.0, 1.0)
    validate.integer("min_area", min_area, min=1)
    validate.integer("max_objects", max_objects, min=1)
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

    _check_image("image", image)
    validate.instance("rng", rng, np.random.Generator)
    if isinstance(masks, np.ndarray) or not isinstance(masks, (list, tuple)) or not masks:
        raise TypeError(f"masks must be a non-empty list of (H, W) bool masks (from object_masks), got {type(masks).__name__}")
    validate.integer("k", k, 0, len(masks) - 1)
    rgb = np.asarray(image, dtype=np.float32) / 255.0
    grown = grown if grown is not None else [ndimage.binary_dilation(m) for m in masks]
    foreground = np.logical_or.reduce(grown)
    background = np.median(rgb[~foreground], axis=0) if (~foreground).any() else np.full(3, 0.12)
    others = foreground & ~grown[k]
    out = rgb.copy()
    out[others] = background + rng.normal(0.0, 0.04, (int(others.sum()), 3))
    return np.clip(out, 0.0, 1.0)


@torch.no_grad()
def object_features(images, vision_tower: nn.Module, max_objects: int = 4, seed: int = 0, batch_size: int = 500,
                    layers: tuple[int, ...] = ()):
    """Region features from a frozen image tower: for each object proposal, the tower's CLS feature of the
    image with only that object left, plus where it is (centre x, centre y, area as fractions of the canvas).
    `layers`: hidden states (0 = the embedding, i = after block i) whose CLS state is appended to the final
    feature, as Llama 3.2 concatenates features from several encoder layers.

    Returns tokens (B, K, D * (1 + len(layers)) + 3) and valid (B, K) bool, K = max_objects (absent objects are
    zeros, not valid).
    """
    validate.instance("vision_tower", vision_tower, nn.Module)
    depth = len(getattr(vision_tower, "blocks", ()))
    if not isinstance(layers, (tuple, list)) or not all(isinstance(i, int) and 0 <= i <= depth for i in layers):
        raise ValueError(f"layers must be hidden-state indices 0..{depth} of this tower, got {layers!r}")
    validate.integer("batch_size", batch_size, min=1)
    crops, slots = _isolated_objects(images, max_objects, seed)
    vision_tower.eval()
    x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float()                        # (n_objects, 3, H, W)
    def cls_features(batch):                                                                 # (b, D * (1 + len(layers)))
        if not layers:
            return vision_tower(batch)
        states = vision_tower.hidden_states(batch)
        return torch.cat([vision_tower.head(vision_tower.norm(states[-1])[:, 0])] + [states[i][:, 0] for i in layers], -1)

    cls = torch.cat([cls_features(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])  # (n_objects, D')
    tokens = torch.zeros(len(images), max_objects, cls.shape[1] + 3)
    valid = torch.zeros(len(images), max_objects, dtype=torch.bool)
    for (b, k, cx, cy, area), f in zip(slots, cls):
        tokens[b, k, :-3], tokens[b, k, -3:], valid[b, k] = f, torch.tensor([cx, cy, area]), True
    return tokens, valid


def _isolated_objects(images, max_objects: int, seed: int) -> tuple[list[np.ndarray], list[tuple]]:
    """Every object of every image isolated on its own ((H, W, 3) floats in [0, 1]), and its slot
    (image b, object k, centre x, centre y, area as fractions of the canvas)."""
    from scipy import ndimage

    validate.integer("max_objects", max_objects, min=1)
    validate.integer("seed", seed, min=0)
    if isinstance(images, (str, torch.Tensor)) or not hasattr(images, "__len__") or len(images) == 0:
        raise ValueError(f"images must be a non-empty list of (H, W, 3) uint8 images, got {type(images).__name__}")
    rng = np.random.default_rng(seed)
    crops, slots = [], []
    for b, image in enumerate(images):
        masks = object_masks(image, max_objects=max_objects)
        grown = [ndimage.binary_dilation(m) for m in masks]
        H, W = masks[0].shape if masks else (1, 1)
        for k, m in enumerate(masks):
            crops.append(isolate_object(image, masks, k, rng, grown))
            ys, xs = np.nonzero(m)
            slots.append((b, k, xs.mean() / W, ys.mean() / H, m.sum() / (H * W)))
    if not crops:
        raise ValueError(f"images hold no object: none of the {len(images)} images has a saturated region "
                         f"(object_masks finds ShapesWorld's coloured shapes on a grey background)")
    return crops, slots


def object_crops(images, max_objects: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The tower's inputs behind `object_features`, kept so that the tower can be trained (unfrozen):
    crops (B, K, 3, H, W) (each object alone, as `object_features` encodes it; zeros where absent),
    geometry (B, K, 3) (centre x, centre y, area) and valid (B, K) bool. Same `seed`, same crops."""
    crops, slots = _isolated_objects(images, max_objects, seed)
    H, W, _ = crops[0].shape
    x = torch.zeros(len(images), max_objects, 3, H, W)
    geometry = torch.zeros(len(images), max_objects, 3)
    valid = torch.zeros(len(images), max_objects, dtype=torch.bool)
    for (b, k, cx, cy, area), crop in zip(slots, crops):
        x[b, k] = torch.from_numpy(crop).permute(2, 0, 1).float()
        geometry[b, k], valid[b, k] = torch.tensor([cx, cy, area]), True
    return x, geometry, valid


def region_tokens(vision_tower: nn.Module, crops: torch.Tensor, geometry: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """`object_features`' tokens (B, K, D + 3) from `object_crops`' outputs, with gradients through the tower
    (notebook 07's unfrozen-tower run): the tower's feature of each present crop, then its geometry."""
    B, K = valid.shape
    flat = crops.reshape(B * K, *crops.shape[2:])[valid.flatten()]            # (n_objects, 3, H, W)
    feats = vision_tower(flat)                                                # (n_objects, D)
    out = feats.new_zeros(B * K, feats.shape[-1])
    out = out.index_put((valid.flatten().nonzero().flatten(),), feats)       # (B * K, D), zeros where absent
    return torch.cat([out.reshape(B, K, -1), geometry], -1)                   # (B, K, D + 3)


# ----------------------------------------------------------------------------- the scorer
@dataclass
class VQAConfig:
    token_dim: int = 67          # width of an image token: a 64-d feature, then centre x, centre y and area
    text_dim: int = 384          # E, width of the frozen text features (MiniLM)
    hidden: int = 128            # hidden width
    use_image: bool = True       # the ablations switch inputs off
    use_question: bool = True
    use_answer: bool = True
    pool: str = "attention"      # 'mean' over image tokens, or 'attention' conditioned on the question
    heads: int = 2               # glimpses of the question-conditioned attention

    def __post_init__(self):
        validate.integer("token_dim", self.token_dim, min=4)  # a feature, then x, y and area
        validate.integer("text_dim", self.text_dim, min=1)
        validate.integer("hidden", self.hidden, min=1)
        validate.integer("heads", self.heads, min=1)
        for name in ("use_image", "use_question", "use_answer"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
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
        cfg = self.cfg
        validate.tensor("answers", answers, dim=3, floating=True)
        B, A, E = answers.shape
        validate.tensor("question", question, dim=2, floating=True)
        validate.tensor("tokens", tokens, dim=3, floating=True)
        validate.tensor("valid", valid, dim=2)
        if E != cfg.text_dim or tuple(question.shape) != (B, cfg.text_dim):
            raise ValueError(f"question (B, E) and answers (B, A, E) must have E = text_dim = {cfg.text_dim} and the "
                             f"same B, got {tuple(question.shape)} and {tuple(answers.shape)}")
        if tokens.shape[0] != B or tokens.shape[2] != cfg.token_dim or tuple(valid.shape) != tuple(tokens.shape[:2]):
            raise ValueError(f"tokens must be (B={B}, T, token_dim={cfg.token_dim}) and valid (B, T) bool, got "
                             f"{tuple(tokens.shape)} and {tuple(valid.shape)}")
        if valid.dtype != torch.bool:
            raise TypeError(f"valid must be a bool tensor (True where a token is real), got {valid.dtype}")
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
def frozen_image_tokens(images, vision_tower: nn.Module, kind: str = "objects", layer: int = 2, batch_size: int = 500):
    """Frozen image tokens (B, T, D + 3) and valid (B, T) from the CLIP image tower.

    kind: 'objects' (one region feature per object proposal, `object_features`) or 'patches' (the patch
    tokens after block `layer`, each with its grid position, like an object's centre and area).
    """
    validate.integer("layer", layer, min=0)
    validate.integer("batch_size", batch_size, min=1)
    if kind == "objects":
        return object_features(images, vision_tower)
    if kind != "patches":
        raise ValueError(f"kind (image_tokens) must be 'objects' or 'patches', got {kind!r}")
    from .shapes import images_to_tensor

    x = images_to_tensor(images)
    vision_tower.eval()
    tokens = torch.cat([vision_tower.hidden_states(x[i:i + batch_size])[layer][:, 1:]
                        for i in range(0, len(x), batch_size)])                   # (B, N, D) patch tokens
    grid = int(tokens.shape[1] ** 0.5)
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    where = torch.stack([(cols.flatten() + 0.5) / grid, (rows.flatten() + 0.5) / grid,
                         torch.full((grid * grid,), 1 / grid ** 2)], -1)           # (N, 3)
    tokens = torch.cat([tokens, where.expand(len(tokens), -1, -1)], -1)           # (B, N, D + 3)
    return tokens, torch.ones(tokens.shape[:2], dtype=torch.bool)


def _encode(ds, vision_tower, text_features, candidates: str, kind: str, layer: int, question=None,
            image_features=None) -> dict:
    missing = {"image", candidates, "answer"} - set(getattr(ds, "column_names", ()))
    if missing:
        raise ValueError(f"ds must be a datasets.Dataset with columns image, {candidates}, answer; it lacks {sorted(missing)}")
    if not callable(text_features):
        raise TypeError(f"text_features must be a function texts -> (n, E) features, got {type(text_features).__name__}")
    if image_features is None:
        validate.instance("vision_tower", vision_tower, nn.Module)
        tokens, valid = frozen_image_tokens(ds.with_format("numpy")["image"], vision_tower, kind, layer)
    else:   # features computed earlier (e.g. shipped by scripts/encode_vqa_features.py): no tower pass
        pair = list(image_features) if isinstance(image_features, (tuple, list)) else []
        shapes_ = [tuple(t.shape) for t in pair if isinstance(t, torch.Tensor)]
        if len(shapes_) != 2 or len(pair) != 2 or len(shapes_[0]) != 3 or shapes_[1] != shapes_[0][:2] \
                or shapes_[0][0] != len(ds):
            raise ValueError(f"image_features must be (tokens (B, T, D), valid (B, T)) with B = len(ds) = {len(ds)}, "
                             f"got {shapes_ or type(image_features).__name__}")
        tokens, valid = pair
    choices = [list(c) for c in ds[candidates]]
    flat = [a for c in choices for a in c]
    answers = text_features(flat)
    if not isinstance(answers, torch.Tensor) or answers.dim() != 2 or len(answers) != len(flat):
        raise ValueError(f"text_features must return a ({len(flat)}, E) tensor for {len(flat)} texts, got "
                         f"{tuple(getattr(answers, 'shape', ())) or type(answers).__name__}")
    validate.tensor("text_features(...)", answers, finite=True)
    answers = answers.reshape(len(choices), len(choices[0]), -1)
    return {"tokens": tokens, "valid": valid, "answers": answers, "answer": torch.tensor(ds["answer"]),
            "question": question if question is not None else text_features(list(ds["question"])),
            "qtype": list(ds["qtype"]) if "qtype" in ds.column_names else ["caption"] * len(ds)}


@torch.no_grad()
def encode_items(ds, vision_tower: nn.Module | None, text_features, image_tokens: str = "objects", layer: int = 2,
                 image_features: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict:
    """Frozen features of a VQA dataset.

    Args:
        vision_tower: the CLIP image tower (a `utils.vit.ViT` with num_classes=0), kept frozen.
        text_features: texts -> (n, E) frozen sentence features (e.g. MiniLM's).
        image_tokens: 'objects' or 'patches' (see `frozen_image_tokens`).
        image_features: optional (tokens, valid) computed earlier for these items; then the tower is not run.
    Returns:
        dict with tokens (B, T, token_dim), valid (B, T), question (B, E), answers (B, A, E), answer (B,), qtype.
    """
    return _encode(ds, vision_tower, text_features, "choices", image_tokens, layer, image_features=image_features)


@torch.no_grad()
def encode_caption_items(ds, vision_tower: nn.Module, text_features, text_dim: int = 384) -> dict:
    """Frozen features of a caption-matching dataset in `encode_items`' layout: object tokens, the five
    captions as the candidate answers, and an all-zero question (the scorer is used without one)."""
    return _encode(ds, vision_tower, text_features, "captions", "objects", 2, question=torch.zeros(len(ds), text_dim))


FIELDS = ("tokens", "valid", "question", "answers", "answer")


def vqa_loss(model: AnswerScorer, batch) -> torch.Tensor:
    tokens, valid, question, answers, answer = batch
    return nn.functional.cross_entropy(model(tokens, valid, question, answers), answer)


def train_scorer(cfg: VQAConfig, feats: dict, steps: int = 1500, batch_size: int = 128, lr: float = 1e-3,
                 seed: int = 0, progress: bool = True):
    """Train an AnswerScorer on encoded items with the shared loop; returns (model, History)."""
    from .training import TrainConfig, train

    validate.instance("cfg", cfg, VQAConfig)
    if not isinstance(feats, dict) or set(FIELDS) - set(feats):
        raise ValueError(f"feats must be the dict of encode_items with keys {FIELDS}, got "
                         f"{sorted(feats) if isinstance(feats, dict) else type(feats).__name__}")
    torch.manual_seed(seed)
    model = AnswerScorer(cfg)
    hist = train(model, tuple(feats[k] for k in FIELDS), vqa_loss,
                 TrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup=50, weight_decay=0.01, seed=seed,
                             progress=progress))
    return model, hist


@torch.no_grad()
def evaluate(model: AnswerScorer, feats: dict) -> dict:
    """Accuracy overall and per question type, with the (B, A) probabilities."""
    validate.instance("model", model, AnswerScorer)
    if not isinstance(feats, dict) or set(FIELDS + ("qtype",)) - set(feats):
        raise ValueError(f"feats must be the dict of encode_items with keys {FIELDS + ('qtype',)}, got "
                         f"{sorted(feats) if isinstance(feats, dict) else type(feats).__name__}")
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


# ----------------------------------------------------------------------------- notebook 05: the published baseline, probes
@torch.no_grad()
def global_image_tokens(images, vision_tower: nn.Module, batch_size: int = 500):
    """The image input of a Jabri-style baseline (Jabri et al.'s): one global feature of the whole image (here the
    frozen CLIP tower's CLS feature of the full scene, no object proposals), in the layout of the other image
    tokens so that `AnswerScorer` (pool='mean') reads it: its position is the whole canvas (centre 0.5, 0.5,
    area 1). Introduced in notebook 05.

    Args:
        images: (H, W, 3) uint8 images (a list or array), or a (B, 3, H, W) float tensor in [0, 1].
        vision_tower: the CLIP image tower (a `utils.vit.ViT` with num_classes=0), kept frozen.
    Returns:
        tokens (B, 1, D + 3) and valid (B, 1) bool (all True).
    """
    from .shapes import images_to_tensor

    if not isinstance(vision_tower, nn.Module):
        raise TypeError(f"vision_tower must be an nn.Module, got {type(vision_tower).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    x = images if isinstance(images, torch.Tensor) else images_to_tensor(images)           # (B, 3, H, W)
    if x.dim() != 4 or len(x) == 0:
        raise ValueError(f"images must hold at least one image of shape (3, H, W), got shape {tuple(x.shape)}")
    vision_tower.eval()
    cls = torch.cat([vision_tower(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])  # (B, D)
    where = torch.tensor([0.5, 0.5, 1.0]).expand(len(cls), 3)                                # (B, 3)
    return torch.cat([cls, where], -1)[:, None], torch.ones(len(cls), 1, dtype=torch.bool)


def tokens_under_objects(scenes, tokens: torch.Tensor, valid: torch.Tensor):
    """For every object of every scene, the image token nearest to the object's centre: for patch tokens the
    patch under the centre, for object (region) tokens the proposal found there. The data of notebook 05's
    probe: can a linear classifier read an object's shape and colour from that one token?

    Args:
        scenes: B `utils.shapes.Scene`s (or their JSON), the scenes the tokens were computed from.
        tokens: (B, T, D + 3) image tokens whose last 3 numbers are centre x, centre y (fractions of the
            canvas) and area, as `frozen_image_tokens` and `object_features` make them.
        valid: (B, T) bool, which tokens exist.
    Returns:
        features (n, D) without the position numbers, and a dict of (n,) labels: 'shape' (index into
        shapes.SHAPES) and 'colour' (index into shapes.COLOR_NAMES); n = the number of objects in all scenes.
    """
    from .shapes import COLOR_NAMES, SHAPES, Scene

    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 3 or tokens.shape[-1] < 4:
        raise ValueError(f"tokens must be a (B, T, D + 3) tensor, got {getattr(tokens, 'shape', type(tokens).__name__)}")
    if not isinstance(valid, torch.Tensor) or valid.shape != tokens.shape[:2] or valid.dtype != torch.bool:
        raise ValueError(f"valid must be a (B, T) bool tensor matching tokens {tuple(tokens.shape[:2])}, "
                         f"got {getattr(valid, 'shape', type(valid).__name__)}")
    if len(scenes) != len(tokens):
        raise ValueError(f"scenes ({len(scenes)}) and tokens ({len(tokens)}) must hold the same images")
    features, shape_labels, colour_labels = [], [], []
    for b, scene in enumerate(scenes):
        scene = Scene.from_json(scene) if isinstance(scene, str) else scene
        for obj in scene.objects:
            centre = torch.tensor([obj.x, obj.y]) / scene.canvas                               # (2,)
            dist = (tokens[b, :, -3:-1] - centre).norm(dim=-1).masked_fill(~valid[b], float("inf"))  # (T,)
            features.append(tokens[b, dist.argmin(), :-3])
            shape_labels.append(SHAPES.index(obj.shape))
            colour_labels.append(COLOR_NAMES.index(obj.color))
    return torch.stack(features), {"shape": torch.tensor(shape_labels), "colour": torch.tensor(colour_labels)}
