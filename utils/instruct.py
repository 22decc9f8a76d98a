"""Visual instruction data in LLaVA's conversation format, written from scene descriptions, and its scoring
(notebook 07).

LLaVA (Liu et al., 2023, "Visual Instruction Tuning") had a text-only GPT-4 write (instruction, answer)
conversations from the captions and boxes of COCO images: the writer never saw a pixel. Here a few rules play
that writer: they read a ShapesWorld scene's description (each object's colour, shape and position) and write
questions of notebook 05's kinds (colour, shape, count, where, yes/no), answered in words, and requests for a
description. A conversation holds several turns about one image; the `<image>` placeholder opens the first
user turn, and only the assistant's tokens carry loss.
Shapes: n conversations or items, L tokens, N image tokens.
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import torch

from . import shapes, validate, vqa
from .lm import IGNORE_INDEX
from .lm_data import IMAGE_TOKEN, caption

QTYPES = vqa.QUESTION_TYPES + ("describe",)   # the five question kinds of notebook 05, then descriptions
DESCRIBE_PROMPT = "Describe the image."


# ----------------------------------------------------------------------------- the writer
def describe(scene: shapes.Scene) -> str:
    """The scene's description, objects in reading order (top to bottom, then left to right):
    "a small red circle in the top left and a small blue cross at the bottom"."""
    validate.instance("scene", scene, shapes.Scene)
    objs = sorted(scene.objects, key=lambda o: (o.y // (scene.canvas / 3), o.x))
    parts = [caption(o, scene.canvas) for o in objs]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def questions_about(scene: shapes.Scene, rng: np.random.Generator, count_present: float = 0.0) -> list[tuple[str, str, str]]:
    """One (qtype, question, answer) per question kind that the description can answer, read from the
    description only: colour of the object whose shape is unique, shape of the object whose colour is
    unique, a count of a colour or a shape (0 to 4), where the object with a unique colour and shape is,
    and whether an object has a colour ("yes" or "no, it is <colour>"). Answers are `utils.vqa`'s words.
    `count_present`: the probability that the count asks about the colour or shape of one of the scene's objects
    (an answer of 1 to 4, larger counts as often as their objects) instead of any of the 6 colours or 4 shapes
    (mostly absent ones: answer 0)."""
    validate.instance("scene", scene, shapes.Scene)
    validate.instance("rng", rng, np.random.Generator)
    validate.number("count_present", count_present, 0.0, 1.0)
    objs = scene.objects
    by_shape, by_colour = Counter(o.shape for o in objs), Counter(o.color for o in objs)
    pairs = Counter((o.color, o.shape) for o in objs)
    out = []
    unique_shape = [o for o in objs if by_shape[o.shape] == 1]
    if unique_shape:
        o = unique_shape[rng.integers(len(unique_shape))]
        out.append(("colour", f"What colour is the {o.shape}?", o.color))
    unique_colour = [o for o in objs if by_colour[o.color] == 1]
    if unique_colour:
        o = unique_colour[rng.integers(len(unique_colour))]
        out.append(("shape", f"What shape is the {o.color} object?", o.shape))
    present = lambda: count_present > 0 and rng.random() < count_present   # noqa: E731 (no draw at 0: the old stream)
    if rng.random() < 0.5:
        colours = [o.color for o in objs] if present() else shapes.COLOR_NAMES       # an object's: weighted by count
        c = colours[rng.integers(len(colours))]
        out.append(("count", f"How many {c} objects are there?", str(by_colour[c])))
    else:
        kinds = [o.shape for o in objs] if present() else shapes.SHAPES
        s = kinds[rng.integers(len(kinds))]
        out.append(("count", f"How many {vqa.PLURALS[s]} are there?", str(by_shape[s])))
    unique_pair = [o for o in objs if pairs[o.color, o.shape] == 1]
    if unique_pair:
        o = unique_pair[rng.integers(len(unique_pair))]
        out.append(("where", f"Where is the {o.color} {o.shape}?", vqa.WHERE_ANSWERS[o.position(scene.canvas)]))
    if unique_shape:
        o = unique_shape[rng.integers(len(unique_shape))]
        asked = o.color if rng.random() < 0.4 else shapes.COLOR_NAMES[rng.integers(len(shapes.COLOR_NAMES))]
        out.append(("yes/no", f"Is the {o.shape} {asked}?", "yes" if asked == o.color else f"no, it is {o.color}"))
    return out


def sample_scene(rng: np.random.Generator, n_objects: int, canvas: int = 32) -> shapes.Scene:
    """A scene of `n_objects` (1 to 4) small objects of any colour and shape, not overlapping (as
    `utils.vqa.place_objects` places them), drawn by vectorised rejection: fast enough for thousands."""
    validate.instance("rng", rng, np.random.Generator)
    validate.integer("n_objects", n_objects, 1, 4)
    r = shapes.SIZES[vqa.VQA_SIZE] * canvas
    while True:
        xy = rng.uniform(r + 0.5, canvas - r - 0.5, size=(32, 2)).round(2)    # (32, 2) candidate centres
        kept = []
        for p in xy:
            if all(np.hypot(*(p - q)) >= 2 * r + 1 for q in kept):
                kept.append(p)
                if len(kept) == n_objects:
                    objs = tuple(shapes.ShapeObject(shapes.SHAPES[rng.integers(4)], shapes.COLOR_NAMES[rng.integers(6)],
                                                    vqa.VQA_SIZE, float(x), float(y)) for x, y in kept)
                    return shapes.Scene(objs, canvas, round(float(rng.uniform(0.05, 0.2)), 3), int(rng.integers(2 ** 31)))


def make_conversations(n: int, seed: int = 0, turns: int = 3, p_describe: float = 0.25, canvas: int = 32,
                       max_objects: int = 4) -> tuple[list[shapes.Scene], list[list[tuple[str, str, str]]]]:
    """`n` scenes of 1 to `max_objects` small objects and, for each, a conversation of up to `turns`
    (qtype, question, answer) turns: a description request with probability `p_describe`, then questions of
    distinct kinds in random order. Deterministic for `seed`."""
    validate.integer("n", n, min=1)
    validate.integer("seed", seed, min=0)
    validate.integer("turns", turns, min=1)
    validate.number("p_describe", p_describe, 0.0, 1.0)
    validate.integer("max_objects", max_objects, 1, 4)
    rng = np.random.default_rng(seed)
    scenes, convs = [], []
    for _ in range(n):
        scene = sample_scene(rng, int(rng.integers(1, max_objects + 1)), canvas)
        scenes.append(scene)
        convs.append(_writer_turns(scene, rng, p_describe)[:turns])
    return scenes, convs


def _writer_turns(scene: shapes.Scene, rng: np.random.Generator, p_describe: float, skip_kind: str | None = None,
                  count_present: float = 0.0):
    """The writer's turns about one scene: its questions (all kinds but `skip_kind`) in random order, after a
    description request with probability `p_describe`."""
    qs = [t for t in questions_about(scene, rng, count_present) if t[0] != skip_kind]
    qs = [qs[i] for i in rng.permutation(len(qs))]
    return ([("describe", DESCRIBE_PROMPT, describe(scene))] if rng.random() < p_describe else []) + qs


def item_conversations(ds, seed: int = 0, turns: int = 4, p_describe: float = 0.25,
                       count_present: float = 0.0) -> list[list[tuple[str, str, str]]]:
    """Conversations about the scenes of a `utils.vqa.make_vqa_dataset` (notebook 05's items): each starts
    with the item's own question and its answer in words, then the writer's questions of the other kinds about
    the same scene (`questions_about`, read from the description) in random order, after a description request
    with probability `p_describe`; at most `turns` turns. Deterministic for `seed`."""
    validate.integer("seed", seed, min=0)
    validate.integer("turns", turns, min=1)
    validate.number("p_describe", p_describe, 0.0, 1.0)
    rng = np.random.default_rng(seed)
    convs = []
    for scene_json, question, choices, answer, qtype in zip(ds["scene"], ds["question"], ds["choices"], ds["answer"],
                                                            ds["qtype"]):
        more = _writer_turns(shapes.Scene.from_json(scene_json), rng, p_describe, skip_kind=qtype, count_present=count_present)
        convs.append([(qtype, question, choices[answer])] + more[:turns - 1])
    return convs


# ----------------------------------------------------------------------------- token rows and the loss mask
def user_text(question: str, image: bool = True, image_first: bool = True) -> str:
    """The first user turn's text: LLaVA's data puts `<image>` before the question or after it."""
    if not image:
        return question
    return f"{IMAGE_TOKEN}\n{question}" if image_first else f"{question}\n{IMAGE_TOKEN}"


def prompt_text(question: str, image: bool = True, image_first: bool = True) -> str:
    """A one-question prompt in ChatML, ending with the assistant header the model continues."""
    return f"<|im_start|>user\n{user_text(question, image, image_first)}<|im_end|>\n<|im_start|>assistant\n"


def conversation_text(turns: list[tuple[str, str, str]] | list[tuple[str, str]], image: bool = True,
                      image_first: bool = True) -> str:
    """The conversation in ChatML, the `<image>` placeholder in the first user turn (LLaVA's layout)."""
    if not turns:
        raise ValueError("turns must hold at least one (question, answer) turn")
    out = []
    for k, t in enumerate(turns):
        question, answer = t[-2], t[-1]
        user = user_text(question, image, image_first) if k == 0 else question
        out.append(f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n{answer}<|im_end|>\n")
    return "".join(out)


def conversation_rows(tokenizer, conversations: list[list[tuple]], image: bool = True, image_first: bool = True
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Training rows of whole conversations, right-padded with `<pad>` (notebook 07).

    Returns:
        input_ids (n, L) and labels (n, L): labels equal the ids on every assistant answer and the
        `<|im_end|>` that closes it (so the model learns to stop); IGNORE_INDEX on the user turns, the
        assistant headers, the newline after each answer and the padding.
    """
    if not conversations or isinstance(conversations, str):
        raise ValueError("conversations must be a non-empty list of lists of (question, answer) turns")
    end, rows = tokenizer.convert_tokens_to_ids("<|im_end|>"), []
    texts = sorted({"<|im_start|>user\n" + (user_text(t[-2], image, image_first) if k == 0 else t[-2])
                    for conv in conversations for k, t in enumerate(conv)} | {t[-1] for conv in conversations for t in conv})
    cache = dict(zip(texts, tokenizer(texts)["input_ids"]))               # each distinct text tokenized once
    mid = tokenizer("<|im_end|>\n<|im_start|>assistant\n")["input_ids"]
    tail = tokenizer("\n")["input_ids"]
    for conv in conversations:
        if not conv:
            raise ValueError("conversations must not hold an empty conversation")
        ids, labels = [], []
        for k, t in enumerate(conv):
            question, answer = t[-2], t[-1]
            user = user_text(question, image, image_first) if k == 0 else question
            head = cache[f"<|im_start|>user\n{user}"] + mid
            ans = cache[answer] + [end]
            ids += head + ans + tail
            labels += [IGNORE_INDEX] * len(head) + ans + [IGNORE_INDEX] * len(tail)
        rows.append((ids, labels))
    L = max(len(i) for i, _ in rows)
    input_ids = torch.full((len(rows), L), tokenizer.pad_token_id, dtype=torch.long)
    label_t = torch.full((len(rows), L), IGNORE_INDEX, dtype=torch.long)
    for r, (i, lab) in enumerate(rows):
        input_ids[r, :len(i)], label_t[r, :len(lab)] = torch.tensor(i), torch.tensor(lab)
    return input_ids, label_t


@torch.no_grad()
def answer_items(model, features: torch.Tensor | None, questions: list[str], tokenizer, max_new_tokens: int = 48,
                 image: bool = True, image_first: bool = True) -> list[str]:
    """Greedy answers of a `utils.llava.TinyLlava` to one question per image, from cached image features
    (n, N, D_v): prompts of the same token length are generated as one batch (with the KV cache), so no
    padding is needed. With `image=False` the LM answers blind and `features` is not used (it may be None)."""
    from .llava_data import generate_from_features

    if image and (not isinstance(features, torch.Tensor) or features.dim() != 3 or len(features) != len(questions)):
        raise ValueError(f"features must be (n, N, D_v) with n = len(questions) = {len(questions)}, "
                         f"got {getattr(features, 'shape', type(features).__name__)}")
    validate.integer("max_new_tokens", max_new_tokens, min=1)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    prompts = tokenizer([prompt_text(q, image, image_first) for q in questions])["input_ids"]
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(len(p), []).append(i)
    answers = [""] * len(questions)
    for idx in groups.values():
        ids = torch.tensor([prompts[i] for i in idx])                          # (b, L)
        if image:
            out = generate_from_features(model, features[idx], ids, max_new_tokens=max_new_tokens, eos_token_id=end)
        else:
            model.eval()
            out = model.language_model.generate(ids, max_new_tokens=max_new_tokens, eos_token_id=end)
        for i, text in zip(idx, tokenizer.batch_decode(out, skip_special_tokens=True)):
            answers[i] = text
    return answers


# ----------------------------------------------------------------------------- held-out items and scoring
def test_items(n_per_type: int, seed: int = 0, canvas: int = 32) -> list[dict]:
    """Held-out items: `n_per_type` notebook 05 items of each question kind (answer-first, so answers are
    balanced; `utils.vqa.make_item`), each with its correct answer in words, then `n_per_type` description
    requests on scenes of 1 to 4 objects. Each item: scene, qtype, question, answer."""
    validate.integer("n_per_type", n_per_type, min=1)
    validate.integer("seed", seed, min=0)
    rng = np.random.default_rng(seed)
    items = []
    for qtype in vqa.QUESTION_TYPES:
        for _ in range(n_per_type):
            it = vqa.make_item(rng, qtype, canvas)
            items.append(dict(scene=it["scene"], qtype=qtype, question=it["question"],
                              answer=it["choices"][it["answer"]]))
    for _ in range(n_per_type):
        scene = sample_scene(rng, int(rng.integers(1, 5)), canvas)
        items.append(dict(scene=scene, qtype="describe", question=DESCRIBE_PROMPT, answer=describe(scene)))
    return items


def described_question(item: dict) -> str:
    """The item's question after its scene's true description, for the LM to read without an image."""
    return f"{describe(shapes.Scene.from_json(item['scene']))}\n{item['question']}"


def answers_by_kind(answers: list[str], items: list[dict]) -> dict[str, Counter]:
    """How often each answer (stripped) was given, per question kind present in `items`."""
    if len(answers) != len(items):
        raise ValueError(f"answers and items must be of the same length, got {len(answers)} and {len(items)}")
    out: dict[str, Counter] = {}
    for a, it in zip(answers, items):
        out.setdefault(it["qtype"], Counter())[a.strip()] += 1
    return out


def description_objects(text: str) -> Counter:
    """The objects a description names, as a multiset of captions ("a small red circle in the top left"),
    whatever their order."""
    text = text.strip().rstrip(".")
    parts = [p.strip() for chunk in text.split(", ") for p in chunk.split(" and ")]
    return Counter(p for p in parts if p)


def is_correct(prediction: str, answer: str, qtype: str) -> bool:
    """Exact match after stripping spaces and a final full stop; a description is right when it names
    exactly the scene's objects, in any order."""
    if qtype == "describe":
        return description_objects(prediction) == description_objects(answer)
    return prediction.strip().rstrip(".").strip() == answer.strip()


def answer_accuracy(predictions: list[str], items: list[dict]) -> dict[str, float]:
    """Exact-match accuracy per question kind present in `items`, and 'overall' over the five question kinds
    of notebook 05 (descriptions are reported on their own)."""
    if len(predictions) != len(items) or not items:
        raise ValueError(f"predictions and items must be non-empty and of the same length, "
                         f"got {len(predictions)} and {len(items)}")
    hits: dict[str, list[bool]] = {}
    for p, it in zip(predictions, items):
        hits.setdefault(it["qtype"], []).append(is_correct(p, it["answer"], it["qtype"]))
    out = {q: float(np.mean(hits[q])) for q in QTYPES if q in hits}
    asked = [h for q in vqa.QUESTION_TYPES if q in hits for h in hits[q]]
    if asked:
        out["overall"] = float(np.mean(asked))
    return out


def assistant_labels(input_ids: torch.Tensor, header_ids: list[int], end_id: int) -> torch.Tensor:
    """Labels of one ChatML row read from its tokens alone (what LLaVA's preprocessing does): every token after
    an assistant header (`header_ids`, the tokens of "<|im_start|>assistant\\n") up to and including the
    `end_id` (`<|im_end|>`) that closes the answer keeps its id; everything else is IGNORE_INDEX.

    Args:
        input_ids: (L,) token ids of one conversation (padding after it is ignored).
        header_ids: the assistant header's token ids.
        end_id: the id of `<|im_end|>`.
    Returns:
        (L,) labels.
    """
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 1:
        raise ValueError(f"input_ids must be a 1-d tensor (L,), got {getattr(input_ids, 'shape', type(input_ids).__name__)}")
    if not header_ids:
        raise ValueError("header_ids must hold the assistant header's token ids")
    ids, h = input_ids.tolist(), list(header_ids)
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    i = 0
    while i < len(ids):
        if ids[i:i + len(h)] == h:
            j = i + len(h)
            while j < len(ids) and ids[j] != end_id:
                j += 1
            labels[i + len(h):j + 1] = input_ids[i + len(h):j + 1]   # the answer and its <|im_end|>
            i = j + 1
        else:
            i += 1
    return labels


# ----------------------------------------------------------------------------- training (notebook 07, scripts/train_llava_instruct.py)
# LLaVA's two stages on cached image features (the tower is frozen, so its features can be computed once; with
# `train_stage(tower=True)` it trains too and they are recomputed from `tower_crops` at every step). The
# training scenes are notebook 05's (their region features are shipped in data/checkpoints/vqa_train_features),
# the held-out scenes notebook 05's test set.
DATA_RECIPE = dict(train=dict(n=3000, seed=1), test=dict(n=400, seed=2),
                   conversations=dict(seed=0, turns=4, p_describe=0.25))


def instruct_data(tokenizer, tower, layers: tuple[int, ...] = (), recipe: dict = DATA_RECIPE) -> dict:
    """Training rows and held-out items: f_train (n, 4, F) region features of notebook 05's training scenes
    (shipped when `layers` is empty, else encoded here with `utils.vqa_model.object_features(layers=...)`),
    train_ids / train_labels (n, L) conversation rows, f_test (m, 4, F) features of the held-out scenes,
    items (qtype, question, answer in words, scene) and their questions, and both datasets (the training one
    without images when its features are the shipped ones)."""
    from . import DATA_DIR, vqa_model
    from .checkpoints import load_checkpoint

    if not layers:
        shipped, cfg = load_checkpoint(DATA_DIR / "checkpoints" / "vqa_train_features")
        if {k: cfg["recipe"][k] for k in ("n", "seed")} != recipe["train"]:
            raise ValueError(f"the shipped vqa_train_features were made for {cfg['recipe']}, the recipe asks for "
                             f"{recipe['train']}")
    train_ds = vqa.make_vqa_dataset(recipe["train"]["n"], seed=recipe["train"]["seed"], images=bool(layers))
    test_ds = vqa.make_vqa_dataset(recipe["test"]["n"], seed=recipe["test"]["seed"])
    f_train = (vqa_model.object_features(train_ds.with_format("numpy")["image"], tower, layers=tuple(layers))[0]
               if layers else shipped["tokens"])
    f_test, _ = vqa_model.object_features(test_ds.with_format("numpy")["image"], tower, layers=tuple(layers))
    convs = item_conversations(train_ds, **recipe["conversations"])
    ids, labels = conversation_rows(tokenizer, convs)
    items = dataset_items(test_ds)
    return dict(f_train=f_train, train_ids=ids, train_labels=labels, conversations=convs, f_test=f_test,
                items=items, questions=[it["question"] for it in items], train_ds=train_ds, test_ds=test_ds)


def dataset_items(ds) -> list[dict]:
    """A `utils.vqa.make_vqa_dataset`'s items as held-out items: qtype, question, the answer in words, scene (JSON)."""
    return [dict(qtype=q, question=text, answer=c[a], scene=s)
            for q, text, c, a, s in zip(ds["qtype"], ds["question"], ds["choices"], ds["answer"], ds["scene"])]


def tower_crops(recipe: dict = DATA_RECIPE) -> dict:
    """The tower's inputs behind `instruct_data`'s training features (`vqa_model.object_crops`), for training
    with the tower unfrozen: train_crops (n, 4, 3, H, W), train_geometry (n, 4, 3), train_valid (n, 4). The
    training images are rendered again (same recipe). A trained tower's held-out features are
    `vqa_model.object_features(images, model.vision_tower)`."""
    from . import vqa_model

    train_ds = vqa.make_vqa_dataset(recipe["train"]["n"], seed=recipe["train"]["seed"])
    crops, geometry, valid = vqa_model.object_crops(train_ds.with_format("numpy")["image"])
    return dict(train_crops=crops, train_geometry=geometry, train_valid=valid)


def instruct_state(model, tower: bool = False) -> dict[str, torch.Tensor]:
    """What a trained instruction model ships: every weight but the frozen tower's (the tower's too with
    `tower`, when it was trained), in float16."""
    return {k: v.detach().half() for k, v in model.state_dict().items() if tower or not k.startswith("vision_tower.")}


def load_instruct(name: str, language_model, tower):
    """A model saved by scripts/train_llava_instruct.py (data/checkpoints/<name>) on a copy of
    `language_model` (and of `tower` when the checkpoint holds a trained tower; `tower` itself is never
    changed): (model, the checkpoint's config)."""
    import copy

    from . import DATA_DIR
    from .checkpoints import load_checkpoint

    state, cfg = load_checkpoint(DATA_DIR / "checkpoints" / name)
    tower_keys = {k for k in state if k.startswith("vision_tower.")}    # compare_tower ships its trained tower
    trained_tower = bool(tower_keys)
    if trained_tower and tower_keys != {f"vision_tower.{k}" for k in tower.state_dict()}:
        raise ValueError(f"{name} holds part of a tower: {len(tower_keys)} of its weights, "
                         f"the tower has {len(tower.state_dict())}")
    model = new_instruct_model(copy.deepcopy(language_model), copy.deepcopy(tower) if trained_tower else tower,
                               cfg["feature_dim"], cfg["connector"])
    missing, unexpected = model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    if unexpected or any(not k.startswith("vision_tower.") for k in missing):
        raise ValueError(f"{name} does not fit a {cfg['connector']} model: missing {missing}, unexpected {unexpected}")
    return model.eval(), cfg


def new_instruct_model(language_model, tower, feature_dim: int, connector: str = "mlp2x_gelu", seed: int = 0):
    """A `utils.llava.TinyLlava` on `language_model` whose connector reads cached features of width
    `feature_dim` (region features: 64 + 3); cross-attention blocks before every LM layer."""
    from . import llava

    torch.manual_seed(seed)
    model = llava.TinyLlava(llava.TinyLlavaConfig(connector=connector,
                                                  cross_attention_layers=list(range(language_model.cfg.n_layers))),
                            language_model, vision_tower=tower)
    model.multi_modal_projector = llava.make_projector(connector, feature_dim, language_model.cfg.dim)
    return model


def rows_loss(model, batch) -> torch.Tensor:
    """The next-token loss of a batch (features, input_ids, labels) of conversation rows, without the
    columns that are padding in every row."""
    from .llava_data import forward_from_features, trim_to_labels

    features, ids, labels = batch
    return forward_from_features(model, features, *trim_to_labels(ids, labels)).loss


def is_connector(name: str) -> bool:
    """Whether a parameter of a `TinyLlava` belongs to the connector: the projector, and for the
    cross-attention connector the gated blocks inserted into the LM."""
    return name.startswith(("multi_modal_projector.", "language_model.inserted."))


def tower_rows_loss(model, batch) -> torch.Tensor:
    """`rows_loss` with the region features computed by the (trainable) tower from the crops:
    batch = (crops, geometry, valid, input_ids, labels)."""
    from . import vqa_model
    from .llava_data import forward_from_features, trim_to_labels

    crops, geometry, valid, ids, labels = batch
    features = vqa_model.region_tokens(model.vision_tower, crops, geometry, valid)       # (B, 4, F)
    return forward_from_features(model, features, *trim_to_labels(ids, labels)).loss


def train_stage(model, data: dict, train_cfg: dict, projector_only: bool, progress: bool = True,
                tower: bool = False, eval_fn=None):
    """LLaVA's stage 1 (`projector_only`: the LM frozen) or stage 2 (projector and LM; for the
    cross-attention connector the gated blocks count as the connector). `tower`: train the vision tower too,
    from `tower_crops`' crops in `data` (the tower's features are recomputed every step). `eval_fn` is
    `utils.training.train`'s, run every `train_cfg["eval_every"]` steps and at the end."""
    from .training import TrainConfig, train

    if tower and projector_only:
        raise ValueError("tower=True trains the tower with the projector and the LM (stage 2); "
                         "it cannot be combined with projector_only=True")
    connector = [p for n, p in model.named_parameters() if is_connector(n)]
    params = connector if projector_only else [p for n, p in model.named_parameters()
                                               if not n.startswith("vision_tower.")]
    if tower:
        params = params + list(model.vision_tower.parameters())
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    if tower:
        rows = (data["train_crops"], data["train_geometry"], data["train_valid"], data["train_ids"], data["train_labels"])
        return train(model, rows, tower_rows_loss, TrainConfig(**train_cfg, progress=progress), eval_fn, params)
    return train(model, (data["f_train"], data["train_ids"], data["train_labels"]), rows_loss,
                 TrainConfig(**train_cfg, progress=progress), eval_fn, params)
