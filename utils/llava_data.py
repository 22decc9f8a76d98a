"""Caption data and word-by-word scoring for TinyLlava (notebook 06): the chat-format training rows with their
label mask, batched greedy captioning from cached tower features, and per-word accuracy of the captions.

The frozen vision tower gives the same features every epoch, so notebook 06 computes them once
(`tower_features`) and trains the projector (and the LM) on them; `forward_from_features` and
`generate_from_features` are `TinyLlava.forward` / `.generate` with the tower's output passed in.
Shapes: n examples, B batch, L tokens, N image tokens, D_v vision width, D LM width.
"""
from __future__ import annotations

import re

import torch
from torch import nn

from . import shapes, vqa
from .lm import IGNORE_INDEX
from .lm_data import IMAGE_TOKEN, caption
from .llava import TinyLlava, select_image_features, splice_image_features

CAPTION_PROMPT = "Describe the image."
ATTRIBUTES = ("size", "color", "shape", "position")
_CAPTION_RE = re.compile(r"^an? (\w+) (\w+) (\w+) ((?:in|on|at) the [a-z ]+?)\s*$")


def prompt_text(prompt: str = CAPTION_PROMPT, image: bool = True, system: str | None = None) -> str:
    """The user turn (with the `<image>` placeholder when `image`) and the assistant header, in ChatML, after a
    system turn when `system` is given (SmolLM2's chat template always has one, notebook 07)."""
    user = f"{IMAGE_TOKEN}\n{prompt}" if image else prompt
    head = f"<|im_start|>system\n{system}<|im_end|>\n" if system is not None else ""
    return f"{head}<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"


def prompt_ids(tokenizer, n: int = 1, prompt: str = CAPTION_PROMPT, image: bool = True,
               system: str | None = None) -> torch.Tensor:
    """(n, L) the same prompt's token ids in every row (no padding is needed for batched generation)."""
    ids = tokenizer(prompt_text(prompt, image, system))["input_ids"]
    return torch.tensor(ids, dtype=torch.long).expand(n, len(ids)).contiguous()      # (n, L)


def caption_rows(tokenizer, captions: list[str], prompt: str = CAPTION_PROMPT) -> tuple[torch.Tensor, torch.Tensor]:
    """Training rows `prompt + caption + <|im_end|>`, right-padded with `<pad>` (notebook 06).

    Returns:
        input_ids (n, L) and labels (n, L): labels equal the ids on the answer (the caption and the closing
        `<|im_end|>`, so the model learns to stop) and are IGNORE_INDEX on the prompt and the padding.
    """
    if not captions:
        raise ValueError("captions must be a non-empty list of strings")
    return prompt_answer_rows(tokenizer, [prompt] * len(captions), captions)


def prompt_answer_rows(tokenizer, prompts: list[str], answers: list[str],
                       system: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Training rows `<image> + prompt -> answer + <|im_end|>` in ChatML (after a system turn when `system` is
    given), one prompt per row, right-padded with the tokenizer's pad token (notebooks 06, 07, 08, 10). Returns input_ids (n, L) and labels (n, L): IGNORE_INDEX everywhere but on
    the answer and its closing `<|im_end|>` (so the model learns to stop)."""
    if len(prompts) != len(answers) or not prompts:
        raise ValueError(f"prompts and answers must be non-empty and as many, got {len(prompts)} and {len(answers)}")
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    rows = [(tokenizer(prompt_text(p, system=system))["input_ids"], tokenizer(a)["input_ids"] + [end])
            for p, a in zip(prompts, answers)]
    L = max(len(h) + len(a) for h, a in rows)
    ids = torch.full((len(rows), L), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), L), IGNORE_INDEX, dtype=torch.long)
    for i, (h, a) in enumerate(rows):
        ids[i, :len(h) + len(a)] = torch.tensor(h + a)
        labels[i, len(h):len(h) + len(a)] = torch.tensor(a)
    return ids, labels


@torch.no_grad()
def trim_to_labels(input_ids: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the trailing columns of a batch of right-padded rows (n, L) where no row carries a label: they
    change no loss and cost time (notebooks 07, 10)."""
    if input_ids.shape != labels.shape or labels.dim() != 2:
        raise ValueError(f"input_ids and labels must be (n, L) of the same shape, got {tuple(input_ids.shape)} and "
                         f"{tuple(labels.shape)}")
    carried = (labels != IGNORE_INDEX).any(0).nonzero()
    if not len(carried):
        raise ValueError("labels must carry at least one label (every entry is IGNORE_INDEX)")
    end = int(carried.max()) + 1
    return input_ids[:, :end], labels[:, :end]


def tower_features(model: TinyLlava, pixel_values: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """The frozen tower's selected features (n, N, D_v) (layer and CLS/patch choice from `model.cfg`),
    before the projector; computed once, since a frozen tower gives the same features every step."""
    return frozen_features(model.vision_tower, pixel_values, model.cfg.vision_feature_layer,
                           model.cfg.vision_feature_select_strategy, batch_size)


def frozen_features(tower: nn.Module, pixel_values: torch.Tensor, vision_feature_layer: int | list[int],
                    vision_feature_select_strategy: str, batch_size: int = 500) -> torch.Tensor:
    """`select_image_features` of a frozen tower's hidden states, in batches: (n, N, D_v)."""
    tower.eval()
    return torch.cat([select_image_features(tower.hidden_states(pixel_values[i:i + batch_size]),
                                            vision_feature_layer, vision_feature_select_strategy)
                      for i in range(0, len(pixel_values), batch_size)])                 # (n, N, D_v)


def _spliced(model: TinyLlava, features: torch.Tensor, input_ids: torch.Tensor, labels=None):
    projected = model.multi_modal_projector(features)                                    # (B, N, D)
    embeds = model.language_model.embed_tokens(input_ids)                                # (B, L, D)
    return splice_image_features(input_ids, embeds, projected, model.cfg.image_token_id, labels)


def forward_from_features(model: TinyLlava, features: torch.Tensor, input_ids: torch.Tensor,
                          labels: torch.Tensor | None = None):
    """`TinyLlava.forward` from cached tower features (n, N, D_v): project, splice, run the LM (LMOutput).
    With the 'cross_attention' connector nothing is spliced: the `<image>` placeholder stays one token and
    the LM's gated cross-attention blocks read the projected features (notebook 07)."""
    if model.cfg.connector == "cross_attention":
        context = model.multi_modal_projector(features)                                  # (B, N, D)
        return model.language_model(input_ids, labels=labels, context=context)
    embeds, labels = _spliced(model, features, input_ids, labels)                        # (B, L - 1 + N, D)
    return model.language_model(inputs_embeds=embeds, labels=labels)


@torch.no_grad()
def generate_from_features(model: TinyLlava, features: torch.Tensor, input_ids: torch.Tensor,
                           batch_size: int = 500, **generate_kwargs) -> torch.Tensor:
    """Batched generation from cached tower features; every row must have the same prompt length (no padding).
    Returns (n, S) generated tokens; `generate_kwargs` go to `LM.generate` (greedy by default, KV cache on)."""
    model.eval()
    out = []
    for i in range(0, len(features), batch_size):
        if model.cfg.connector == "cross_attention":
            context = model.multi_modal_projector(features[i:i + batch_size])            # (B, N, D)
            out.append(model.language_model.generate(input_ids[i:i + batch_size], context=context, **generate_kwargs))
            continue
        embeds, _ = _spliced(model, features[i:i + batch_size], input_ids[i:i + batch_size])
        out.append(model.language_model.generate(inputs_embeds=embeds, **generate_kwargs))
    S = max(o.shape[1] for o in out)
    pad = generate_kwargs.get("pad_token_id", generate_kwargs.get("eos_token_id", 0))
    pad = pad[0] if isinstance(pad, (list, tuple)) else pad
    return torch.cat([torch.nn.functional.pad(o, (0, S - o.shape[1]), value=pad) for o in out])  # (n, S)


# ----------------------------------------------------------------------------- scoring
def caption_words(obj: shapes.ShapeObject, canvas: int = 32) -> dict[str, str]:
    """The four words (phrases) a caption must get right: {'size', 'color', 'shape', 'position'}."""
    return dict(size=obj.size, color=obj.color, shape=obj.shape, position=vqa.WHERE_ANSWERS[obj.position(canvas)])


def parse_caption(text: str) -> dict[str, str | None]:
    """Read 'a small red circle in the top left' back into its four slots; None for each slot that a
    caption of another form does not give."""
    m = _CAPTION_RE.match(text.strip())
    if not m:
        return dict.fromkeys(ATTRIBUTES)
    return dict(zip(ATTRIBUTES, m.groups()))


def word_accuracy(texts: list[str], objects: list[shapes.ShapeObject], canvas: int = 32,
                  read=parse_caption) -> dict[str, float]:
    """Per-word accuracy of generated captions against the objects (notebook 06): the fraction of captions
    whose size / colour / shape / position slot is the right word; an unreadable caption is wrong in all.
    `read(text) -> {slot: word or None}` reads a text's slots (`utils.smollm.first_mentions` reads free text)."""
    if len(texts) != len(objects) or not texts:
        raise ValueError(f"texts and objects must be non-empty and of the same length, got {len(texts)} and {len(objects)}")
    hits = dict.fromkeys(ATTRIBUTES, 0)
    for text, obj in zip(texts, objects):
        got, want = read(text), caption_words(obj, canvas)
        for a in ATTRIBUTES:
            hits[a] += got[a] == want[a]
    return {a: hits[a] / len(texts) for a in ATTRIBUTES}


def captions_of(ds) -> tuple[list[str], list[shapes.ShapeObject]]:
    """The canonical captions (`utils.lm_data.caption`) and objects of a one-object ShapesWorld dataset."""
    objects = [shapes.Scene.from_json(s).objects[0] for s in ds["scene"]]
    return [caption(o) for o in objects], objects
