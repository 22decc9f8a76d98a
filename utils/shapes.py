"""ShapesWorld: coloured shapes on a small canvas, generated from a seed (used from notebook 02 on).

A *scene* is a plain description (objects with shape, colour, size and position) that renders to an image.
Later notebooks derive multi-object scenes, multiple-choice questions and short videos from the same
description, so everything here is data first (`Scene`, `ShapeObject`), pixels second (`render_scene`).
Shapes: an image is (H, W, C) uint8 when rendered, (B, C, H, W) float in [0, 1] as a tensor batch.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Iterable, Sequence

import numpy as np
import torch

from . import validate

SHAPES = ("circle", "square", "triangle", "cross")
COLORS = {  # RGB in [0, 1]; hues far apart so that light noise never changes the name of a colour
    "red": (0.86, 0.16, 0.16), "green": (0.18, 0.70, 0.24), "blue": (0.20, 0.36, 0.92),
    "yellow": (0.93, 0.83, 0.16), "purple": (0.60, 0.24, 0.80), "orange": (0.97, 0.52, 0.10),
}
COLOR_NAMES = tuple(COLORS)
SIZES = {"small": 0.17, "large": 0.28}  # object radius as a fraction of the canvas side
SIZE_NAMES = tuple(SIZES)
# (colour, shape) pairs never seen in the "train" split: one per colour, spread over the shapes
DEFAULT_HOLDOUT = (("red", "triangle"), ("green", "cross"), ("blue", "circle"),
                   ("yellow", "square"), ("purple", "triangle"), ("orange", "cross"))

CAPTION_TEMPLATES = (
    "a {color} {shape}",
    "a {size} {color} {shape}",
    "a {color} {shape} in the {position}",
    "a photo of a {size} {color} {shape}",
    "there is a {color} {shape} at the {position}",
    "a {size} {shape} coloured {color}",
    "the {shape} is {color}",
    "a {size} {color} {shape} near the {position}",
)


@dataclass(frozen=True)
class ShapeObject:
    shape: str   # one of SHAPES
    color: str   # one of COLOR_NAMES
    size: str    # one of SIZE_NAMES
    x: float     # centre column, pixels
    y: float     # centre row, pixels

    def __post_init__(self):
        validate.choice("shape", self.shape, SHAPES)
        validate.choice("color", self.color, COLOR_NAMES)
        validate.choice("size", self.size, SIZE_NAMES)
        validate.number("x", self.x)
        validate.number("y", self.y)

    def radius(self, canvas: int) -> float:
        return SIZES[self.size] * canvas

    def position(self, canvas: int) -> str:
        """Where the object sits, in words: 'top left', 'center', 'bottom', ..."""
        return position_name(self.x, self.y, canvas)


@dataclass(frozen=True)
class Scene:
    objects: tuple[ShapeObject, ...]
    canvas: int = 32                  # H = W, pixels
    background: float = 0.12          # grey level of the background in [0, 1]
    noise_seed: int = 0               # seeds the light pixel noise and colour jitter of the rendering
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        if not isinstance(self.objects, tuple) or not all(isinstance(o, ShapeObject) for o in self.objects):
            raise TypeError(f"objects must be a tuple of ShapeObject, got {type(self.objects).__name__}")
        _check_canvas(self.canvas)
        validate.number("background", self.background, 0.0, 1.0)
        validate.integer("noise_seed", self.noise_seed, min=0)

    def to_json(self) -> str:
        return json.dumps({"objects": [asdict(o) for o in self.objects], "canvas": self.canvas,
                           "background": self.background, "noise_seed": self.noise_seed})

    @staticmethod
    def from_json(text: str) -> "Scene":
        validate.instance("text", text, (str, bytes))
        try:
            d = json.loads(text)
            return Scene(tuple(ShapeObject(**o) for o in d["objects"]), d["canvas"], d["background"], d["noise_seed"])
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"text must be a scene's JSON (Scene.to_json), got {text[:60]!r} ({e})") from None


def _check_canvas(canvas) -> int:
    """A canvas side in pixels: an int >= 8 (a large shape is 0.56 of the side across and needs a margin)."""
    return validate.integer("canvas", canvas, min=8)


def position_name(x: float, y: float, canvas: int) -> str:
    validate.number("x", x)
    validate.number("y", y)
    _check_canvas(canvas)
    return _position_name(x, y, canvas)


def _position_name(x: float, y: float, canvas: int) -> str:
    """`position_name` without the argument checks, for the inner loops of scene sampling."""
    col = ("left", "", "right")[min(int(3 * x / canvas), 2)]
    row = ("top", "", "bottom")[min(int(3 * y / canvas), 2)]
    return f"{row} {col}".strip() or "center"


# ----------------------------------------------------------------------------- rendering
def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-test in coordinates normalized by the radius (u right, v down)."""
    if shape == "circle":
        return u ** 2 + v ** 2 <= 1.0
    if shape == "square":
        return (np.abs(u) <= 0.82) & (np.abs(v) <= 0.82)
    if shape == "triangle":  # apex up, base down
        return (v <= 0.75) & (v >= -1.0) & (np.abs(u) <= (v + 1.0) / 1.75 * 1.0)
    if shape == "cross":
        return ((np.abs(u) <= 0.32) & (np.abs(v) <= 0.95)) | ((np.abs(v) <= 0.32) & (np.abs(u) <= 0.95))
    raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")


def render_scene(scene: Scene, noise: float = 0.04, supersample: int = 4) -> np.ndarray:
    """Render a scene to an (H, W, 3) uint8 image: anti-aliased shapes, colour jitter, Gaussian noise."""
    validate.instance("scene", scene, Scene)
    validate.number("noise", noise, min=0.0)
    validate.integer("supersample", supersample, min=1)
    n, s = scene.canvas, supersample
    rng = np.random.default_rng(scene.noise_seed)
    img = np.full((n, n, 3), scene.background, dtype=np.float64)
    for obj in scene.objects:
        r = obj.radius(n)
        # only the object's bounding box is supersampled: pixels [r0, r1) x [c0, c1)
        r0, r1 = max(int(obj.y - r) - 1, 0), min(int(obj.y + r) + 2, n)
        c0, c1 = max(int(obj.x - r) - 1, 0), min(int(obj.x + r) + 2, n)
        ys = (np.arange(r0 * s, r1 * s) + 0.5) / s
        xs = (np.arange(c0 * s, c1 * s) + 0.5) / s
        yy, xx = np.meshgrid(ys, xs, indexing="ij")                   # (h*s, w*s) pixel-centre coordinates
        mask = _shape_mask(obj.shape, (xx - obj.x) / r, (yy - obj.y) / r)
        cover = mask.reshape(r1 - r0, s, c1 - c0, s).mean(axis=(1, 3))[..., None]  # (h, w, 1) coverage
        color = np.clip(np.array(COLORS[obj.color]) + rng.uniform(-0.05, 0.05, 3), 0, 1)
        img[r0:r1, c0:c1] = img[r0:r1, c0:c1] * (1 - cover) + color * cover
    img = img + rng.normal(0.0, noise, img.shape)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


# ----------------------------------------------------------------------------- sampling
def _check_holdout(holdout: Iterable[tuple[str, str]]) -> frozenset:
    if isinstance(holdout, str) or not hasattr(holdout, "__iter__"):
        raise TypeError(f"holdout must be a list of (colour, shape) pairs, got {type(holdout).__name__} {holdout!r}")
    pairs = []
    for p in holdout:
        if isinstance(p, str) or not hasattr(p, "__len__") or len(p) != 2:
            raise ValueError(f"holdout pairs must be (colour, shape) from {COLOR_NAMES} x {SHAPES}, got {p!r}")
        pairs.append(tuple(p))
    pairs = frozenset(pairs)
    for color, shape in pairs:
        if color not in COLORS or shape not in SHAPES:
            raise ValueError(f"holdout pairs must be (colour, shape) from {COLOR_NAMES} x {SHAPES}, got {(color, shape)}")
    return pairs


def allowed_pairs(split: str = "all", holdout: Iterable[tuple[str, str]] = DEFAULT_HOLDOUT) -> list[tuple[str, str]]:
    """(colour, shape) pairs a split may show: 'train' leaves out `holdout`, 'heldout' is only `holdout`."""
    held = _check_holdout(holdout)
    every = [(c, s) for c in COLOR_NAMES for s in SHAPES]
    validate.choice("split", split, ("all", "train", "heldout"))
    pairs = {"all": every, "train": [p for p in every if p not in held], "heldout": [p for p in every if p in held]}[split]
    if not pairs:
        raise ValueError(f"holdout leaves no (colour, shape) pair for split={split!r}: "
                         f"{'it holds every pair' if split == 'train' else 'it is empty'}")
    return pairs


def sample_object(rng: np.random.Generator, canvas: int, pairs: Sequence[tuple[str, str]],
                  sizes: Sequence[str] = SIZE_NAMES) -> ShapeObject:
    validate.instance("rng", rng, np.random.Generator)
    _check_canvas(canvas)
    if not pairs:
        raise ValueError("pairs must hold at least one (colour, shape) pair, got none")
    _check_sizes(sizes)
    color, shape = pairs[rng.integers(len(pairs))]
    size = sizes[rng.integers(len(sizes))]
    r = SIZES[size] * canvas
    x, y = rng.uniform(r + 0.5, canvas - r - 0.5, size=2)
    return ShapeObject(shape, color, size, round(float(x), 2), round(float(y), 2))


def sample_scene(rng: np.random.Generator, n_objects: int = 1, canvas: int = 32, split: str = "all",
                 holdout: Iterable[tuple[str, str]] = DEFAULT_HOLDOUT, sizes: Sequence[str] = SIZE_NAMES,
                 max_tries: int = 200) -> Scene:
    """A scene with `n_objects` non-overlapping objects; `ValueError` when they cannot fit on the canvas."""
    validate.instance("rng", rng, np.random.Generator)
    validate.integer("n_objects", n_objects)
    _check_canvas(canvas)
    _check_sizes(sizes)
    validate.integer("max_tries", max_tries, min=1)
    if n_objects < 1:
        raise ValueError(f"n_objects must be >= 1, got {n_objects}")
    min_r = min(SIZES[s] for s in sizes) * canvas
    if n_objects * (2 * min_r) ** 2 > canvas ** 2:
        raise ValueError(f"n_objects={n_objects} objects of size {min(sizes, key=SIZES.get)!r} cannot fit "
                         f"on a {canvas}x{canvas} canvas")
    pairs = allowed_pairs(split, holdout)
    for _ in range(max_tries):
        objects: list[ShapeObject] = []
        for _ in range(n_objects):
            for _ in range(max_tries):
                o = sample_object(rng, canvas, pairs, sizes)
                if all(np.hypot(o.x - p.x, o.y - p.y) >= o.radius(canvas) + p.radius(canvas) + 1 for p in objects):
                    objects.append(o)
                    break
            else:
                break
        if len(objects) == n_objects:
            return Scene(tuple(objects), canvas, round(float(rng.uniform(0.05, 0.2)), 3), int(rng.integers(2 ** 31)))
    raise ValueError(f"could not place n_objects={n_objects} without overlap on a {canvas}x{canvas} canvas "
                     f"after {max_tries} tries; use fewer or smaller objects or a larger canvas")


def _check_sizes(sizes) -> None:
    if isinstance(sizes, str) or not sizes or any(s not in SIZES for s in sizes):
        raise ValueError(f"sizes must be a non-empty list of {SIZE_NAMES}, got {sizes!r}")


def describe(template: str, color: str, shape: str, size: str, position: str) -> str:
    """Fill a caption template with attribute words, with the right article ("an orange circle")."""
    validate.instance("template", template, str)
    for name, value in (("color", color), ("shape", shape), ("size", size), ("position", position)):
        validate.instance(name, value, str)
    try:
        text = template.format(color=color, shape=shape, size=size, position=position)
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(f"template may only use {{color}}, {{shape}}, {{size}}, {{position}}, got {template!r} ({e!r})") from None
    return re.sub(r"\ba (?=[aeiou])", "an ", text)


def caption(obj: ShapeObject, canvas: int, template: int | str = 0) -> str:
    """Describe one object with a caption template (an index into CAPTION_TEMPLATES, or a format string)."""
    validate.instance("obj", obj, ShapeObject)
    if isinstance(template, bool) or not isinstance(template, (int, str)):
        raise TypeError(f"template must be an index into CAPTION_TEMPLATES or a format string, got {template!r}")
    if isinstance(template, int):
        validate.integer("template", template, 0, len(CAPTION_TEMPLATES) - 1)
    fmt = CAPTION_TEMPLATES[template] if isinstance(template, int) else template
    return describe(fmt, obj.color, obj.shape, obj.size, obj.position(canvas))


# ----------------------------------------------------------------------------- datasets
def make_shapes_dataset(n: int, seed: int = 0, canvas: int = 32, split: str = "all",
                        holdout: Iterable[tuple[str, str]] = DEFAULT_HOLDOUT, noise: float = 0.04):
    """A `datasets.Dataset` of `n` one-object scenes, deterministic for `seed`.

    Columns: image (Image), shape / color / size (ClassLabel), x, y (pixels), position (words),
    caption (a randomly chosen template), scene (the JSON description that renders the image).
    """
    from datasets import ClassLabel, Dataset, Features, Image, Value

    validate.integer("n", n)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    validate.integer("seed", seed, min=0)
    _check_canvas(canvas)
    validate.number("noise", noise, min=0.0)
    holdout = holdout if isinstance(holdout, str) or not hasattr(holdout, "__iter__") else tuple(holdout)
    allowed_pairs(split, holdout)  # refuses a bad split or an impossible holdout before any work
    rng = np.random.default_rng(seed)
    rows = {k: [] for k in ("image", "shape", "color", "size", "x", "y", "position", "caption", "scene")}
    for _ in range(n):
        scene = sample_scene(rng, 1, canvas, split, holdout)
        obj = scene.objects[0]
        rows["image"].append(render_scene(scene, noise))
        rows["shape"].append(SHAPES.index(obj.shape))
        rows["color"].append(COLOR_NAMES.index(obj.color))
        rows["size"].append(SIZE_NAMES.index(obj.size))
        rows["x"].append(obj.x)
        rows["y"].append(obj.y)
        rows["position"].append(obj.position(canvas))
        rows["caption"].append(caption(obj, canvas, int(rng.integers(len(CAPTION_TEMPLATES)))))
        rows["scene"].append(scene.to_json())
    features = Features(image=Image(), shape=ClassLabel(names=list(SHAPES)), color=ClassLabel(names=list(COLOR_NAMES)),
                        size=ClassLabel(names=list(SIZE_NAMES)), x=Value("float32"), y=Value("float32"),
                        position=Value("string"), caption=Value("string"), scene=Value("string"))
    return Dataset.from_dict(rows, features=features)


def images_to_tensor(images) -> torch.Tensor:
    """A list/array of (H, W, 3) uint8 images (or PIL images) -> (B, 3, H, W) float32 in [0, 1]."""
    if isinstance(images, torch.Tensor):
        raise TypeError("images must be (H, W, 3) uint8 arrays or PIL images, got a torch.Tensor (already converted?)")
    if isinstance(images, (str, bytes)) or not hasattr(images, "__len__") or len(images) == 0:
        raise ValueError(f"images must be a non-empty list of (H, W, 3) uint8 images, got {type(images).__name__}")
    arrays = [np.asarray(im) for im in images]
    if any(a.shape != arrays[0].shape for a in arrays) or arrays[0].ndim != 3 or arrays[0].shape[-1] != 3:
        raise ValueError(f"images must all be (H, W, 3), got shapes {sorted({a.shape for a in arrays})[:3]}")
    if arrays[0].dtype != np.uint8:
        raise ValueError(f"images must be uint8 in [0, 255], got dtype {arrays[0].dtype}")
    arr = np.stack(arrays)                                  # (B, H, W, 3)
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255.0  # (B, 3, H, W)


def dataset_tensors(ds, label: str | Sequence[str] = "shape"):
    """Images of a ShapesWorld dataset as (B, 3, H, W) floats, with one or more label columns as int64."""
    labels = [label] if isinstance(label, str) else list(label)
    for c in labels:
        if c not in getattr(ds, "column_names", ()):
            raise ValueError(f"label {c!r} is not a column of ds; its columns: {getattr(ds, 'column_names', None)}")
    images = images_to_tensor(ds.with_format("numpy")["image"])
    return (images, *(torch.as_tensor(np.asarray(ds[c]), dtype=torch.long) for c in labels))
