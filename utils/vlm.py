"""A real small VLM, online and opt-in (notebook 07, section 9): HuggingFaceTB/SmolVLM-256M-Instruct.

SmolVLM follows Idefics3: a SigLIP-style vision tower, a connector that pixel-shuffles the patch vectors (each
s x s block of neighbours becomes one vector, s^2 times wider; s = `config.scale_factor`) and projects them
with a linear layer, and a decoder-only LM.
The processor writes one `<image>` token per connector vector into the prompt and the model swaps them for
the vectors: LLaVA's splice with the placeholder expanded in advance. `llava_splice_embeds` rebuilds the
model's input with our own `llava.splice_image_features` to show that they are the same operation.

Offline, `tests/test_vlm.py` runs all of this on a tiny random Idefics3 built locally.
"""
from __future__ import annotations

from pathlib import Path

import torch

from utils import llava, validate

SMOLVLM_HUB_ID = "HuggingFaceTB/SmolVLM-256M-Instruct"
# a full commit of the model repository, as two unrelated public projects pin it; not checked against the Hub
# here (no network), so the loader falls back to nothing: a wrong pin fails loudly online
SMOLVLM_REVISION = "7e3e67edbbed1bf9888184d9df282b700a323964"
DESCRIBE_PROMPT = "Describe this image in one sentence."


def load_smolvlm(source: str | Path = SMOLVLM_HUB_ID, revision: str | None = SMOLVLM_REVISION):
    """(model in eval mode, float32, processor): the Hub model at its pinned revision, or a local folder."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    validate.instance("source", source, (str, Path))
    kwargs = {"revision": revision} if str(source) == SMOLVLM_HUB_ID and revision is not None else {}
    model = AutoModelForImageTextToText.from_pretrained(source, dtype=torch.float32, **kwargs)
    return model.eval(), AutoProcessor.from_pretrained(source, **kwargs)


def chat_inputs(processor, image, question: str) -> dict:
    """The model's inputs for one image and one user turn, in its chat template, with the generation prompt.

    Image splitting is off: the image becomes one sub-image, so the prompt holds one run of `<image>` tokens
    (64 for SmolVLM-256M at 512 x 512) instead of up to 17 runs, which keeps generation fast on a CPU.
    """
    validate.instance("question", question, str)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    return dict(processor(text=text, images=[image], do_image_splitting=False, return_tensors="pt"))


@torch.no_grad()
def describe(model, processor, images: list, question: str = DESCRIBE_PROMPT, max_new_tokens: int = 40) -> list[str]:
    """The model's greedy answer to `question` about each image ((H, W, 3) uint8 arrays or PIL images)."""
    if isinstance(images, (str, bytes)) or len(images) == 0:
        raise ValueError(f"images must be a non-empty list of images, got {type(images).__name__}")
    validate.integer("max_new_tokens", max_new_tokens, min=1)
    texts = []
    for image in images:
        inputs = chat_inputs(processor, image, question)
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)   # (1, L + new)
        texts.append(processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    return texts


def count_image_tokens(model, inputs: dict) -> int:
    """How many `<image>` positions the prompt of one example holds (= vectors the connector hands the LM)."""
    return int((inputs["input_ids"][0] == model.config.image_token_id).sum())


@torch.no_grad()
def llava_splice_embeds(model, inputs: dict) -> torch.Tensor:
    """The LM's input (1, L, D) for one example, built LLaVA's way: the run of N `<image>` tokens collapsed to
    one placeholder, then `llava.splice_image_features` puts the connector's N vectors in its place."""
    ids = inputs["input_ids"]                                               # (1, L)
    if ids.shape[0] != 1:
        raise ValueError(f"llava_splice_embeds takes one image and one prompt (a batch of 1), got {ids.shape[0]}")
    image_token_id = model.config.image_token_id
    where = (ids[0] == image_token_id).nonzero().flatten()                 # (N,)
    if len(where) == 0 or not torch.equal(where, torch.arange(where[0], where[0] + len(where))):
        raise ValueError("the prompt must hold exactly one run of <image> tokens (image splitting off)")
    out = model.get_image_features(inputs["pixel_values"], inputs.get("pixel_attention_mask"), return_dict=True)
    features = torch.cat(list(out.pooler_output)) if isinstance(out.pooler_output, (list, tuple)) else out.pooler_output
    features = features.reshape(1, len(where), -1)                           # (1, N, D)
    keep = torch.ones(ids.shape[1], dtype=torch.bool)
    keep[where[1:]] = False
    one = ids[:, keep]                                                       # (1, L - N + 1): one placeholder
    embeds, _ = llava.splice_image_features(one, model.get_input_embeddings()(one), features, image_token_id)
    return embeds                                                            # (1, L, D)


def parameter_groups(model) -> dict[str, int]:
    """Parameter counts of the three parts: vision tower, connector, language model (lm_head included)."""
    inner = model.model
    groups = {"vision tower": sum(p.numel() for p in inner.vision_model.parameters()),
              "connector": sum(p.numel() for p in inner.connector.parameters())}
    groups["language model"] = sum(p.numel() for p in model.parameters()) - sum(groups.values())
    return groups
