"""Multiple-choice VQA and caption matching on ShapesWorld (notebook 05).

Items follow the lecture's Visual7W-style format: a question and four candidate answers, exactly one correct,
all of the question's answer type. Each item is generated answer-first: the correct answer is drawn uniformly,
then a scene is built that makes it true, so neither the answers alone nor the question with the answers
give the correct choice away (notebook 05 measures that). The model that answers them is in
`utils.vqa_model`.
"""
from __future__ import annotations

import math

import numpy as np

from . import validate
from .shapes import COLOR_NAMES, SHAPES, SIZES, Scene, ShapeObject, _check_canvas, _position_name, position_name, render_scene

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
    validate.instance("rng", rng, np.random.Generator)
    _check_canvas(canvas)
    validate.integer("max_tries", max_tries, min=1)
    if isinstance(specs, str) or not hasattr(specs, "__len__") or not specs:
        raise ValueError(f"specs must be a non-empty list of (shape, colour, position or None), got {specs!r}")
    for i, spec in enumerate(specs):
        if (not isinstance(spec, (tuple, list)) or len(spec) != 3 or spec[0] not in SHAPES or spec[1] not in COLOR_NAMES
                or (spec[2] is not None and spec[2] not in POSITIONS)):
            raise ValueError(f"specs[{i}] must be (shape in {SHAPES}, colour in {COLOR_NAMES}, a position in "
                             f"POSITIONS or None), got {spec!r}")
    r = SIZES[VQA_SIZE] * canvas
    if len(specs) * (2 * r) ** 2 > canvas ** 2:
        raise ValueError(f"specs: {len(specs)} objects of size {VQA_SIZE!r} cannot fit on a {canvas}x{canvas} canvas")
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
                x, y = round(float(x), 2), round(float(y), 2)  # checked as plain floats: this loop runs ~100x per item
                if (where is None or _position_name(x, y, canvas) == where) and all(
                        math.hypot(x - p.x, y - p.y) >= 2 * r + 1 for p in placed):
                    placed.append(ShapeObject(shape, colour, VQA_SIZE, x, y))
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


def _shuffled(rng, correct: str, distractors: list[str]) -> tuple[list[str], int]:
    """The correct answer and its distractors in random order, and where the correct one landed."""
    choices = [correct] + [str(d) for d in distractors]
    order = rng.permutation(len(choices))
    return [choices[i] for i in order], int(np.argmax(order == 0))


def _choices(rng, correct: str, vocabulary, k: int = 4) -> tuple[list[str], int]:
    """The correct answer and k-1 distinct distractors from the same vocabulary, shuffled."""
    return _shuffled(rng, correct, list(rng.choice([v for v in vocabulary if v != correct], size=k - 1, replace=False)))


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
    validate.instance("rng", rng, np.random.Generator)
    validate.choice("qtype", qtype, QUESTION_TYPES)
    _check_canvas(canvas)
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
        choices, answer = _shuffled(rng, correct, other_nos[:3] if correct_is_yes else ["yes"] + other_nos[:2])
    else:
        raise ValueError(f"qtype must be one of {QUESTION_TYPES}, got {qtype!r}")
    objects = place_objects(rng, specs, canvas)
    scene = Scene(objects, canvas, round(float(rng.uniform(0.05, 0.2)), 3), int(rng.integers(2 ** 31)))
    return {"scene": scene, "question": question, "choices": choices, "answer": answer, "qtype": qtype}


def make_vqa_dataset(n: int, seed: int = 0, canvas: int = 32, qtypes=QUESTION_TYPES, noise: float = 0.04,
                     images: bool = True):
    """A `datasets.Dataset` of `n` items, question types in turn, deterministic for `seed`.

    Columns: image, question, choices (4 strings), answer (index of the correct choice), qtype, scene (JSON).
    `images=False` leaves the image column out (the same items, without the time spent rendering them).
    """
    from datasets import Dataset, Features, Image, Sequence, Value

    _check_n_seed_canvas_noise(n, seed, canvas, noise)
    if isinstance(qtypes, str):
        raise TypeError(f"qtypes must be a list of question types, got one string {qtypes!r}; wrap it in a list")
    if not hasattr(qtypes, "__len__") or len(qtypes) == 0:
        raise ValueError(f"qtypes must be a non-empty list of {QUESTION_TYPES}, got {qtypes!r}")
    for q in qtypes:
        validate.choice("qtypes[i]", q, QUESTION_TYPES)
    rng = np.random.default_rng(seed)
    rows = {k: [] for k in ("image", "question", "choices", "answer", "qtype", "scene")}
    for i in range(n):
        item = make_item(rng, qtypes[i % len(qtypes)], canvas)
        if images:
            rows["image"].append(render_scene(item["scene"], noise))
        rows["scene"].append(item["scene"].to_json())
        for k in ("question", "choices", "answer", "qtype"):
            rows[k].append(item[k])
    features = Features(image=Image(), question=Value("string"), choices=Sequence(Value("string"), length=4),
                        answer=Value("int64"), qtype=Value("string"), scene=Value("string"))
    if not images:
        del rows["image"], features["image"]
    return Dataset.from_dict(rows, features=features)


def _check_n_seed_canvas_noise(n, seed, canvas, noise) -> None:
    validate.integer("n", n)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    validate.integer("seed", seed, min=0)
    _check_canvas(canvas)
    validate.number("noise", noise, min=0.0)


# ----------------------------------------------------------------------------- caption matching
def make_caption_matching_dataset(n: int, seed: int = 0, canvas: int = 32, noise: float = 0.04):
    """One-object scenes, each with its true caption and four distractors that each change one attribute
    (colour, shape, size, position), shuffled. Columns: image, captions (5), answer, changed (5), scene."""
    from datasets import Dataset, Features, Image, Sequence, Value

    from .shapes import SIZE_NAMES, describe, sample_scene

    _check_n_seed_canvas_noise(n, seed, canvas, noise)
    rng = np.random.default_rng(seed)
    template = "a {size} {color} {shape} in the {position}"
    rows = {k: [] for k in ("image", "captions", "answer", "changed", "scene")}
    for _ in range(n):
        scene = sample_scene(rng, 1, canvas)
        obj = scene.objects[0]
        where = obj.position(canvas)
        fields = {"color": obj.color, "shape": obj.shape, "size": obj.size, "position": where}
        variants = {"colour": dict(fields, color=_pick(rng, COLOR_NAMES, (obj.color,))),
                    "shape": dict(fields, shape=_pick(rng, SHAPES, (obj.shape,))),
                    "size": dict(fields, size=_pick(rng, SIZE_NAMES, (obj.size,))),
                    "position": dict(fields, position=_pick(rng, POSITIONS, (where,)))}
        texts = [describe(template, **fields)] + [describe(template, **v) for v in variants.values()]
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


