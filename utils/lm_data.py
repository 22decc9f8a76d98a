"""Text for the course LM (notebooks 06 and 07, scripts/train_lm.py): a corpus about ShapesWorld written from
scenes, its byte-level BPE tokenizer with ChatML special tokens, and packing into training blocks.

The corpus is text only: captions of one-object scenes ("a small red circle in the top left"), descriptions
of 1-4 object scenes, counts, questions answered in words (the notebook 05 kinds, from `utils.vqa`), facts
about colours and shapes, and the same in LLaVA's chat format, so that instruction prompts with an `<image>`
placeholder are natural to the LM before it ever sees an image.
Shapes: n documents or blocks, L tokens per block.
"""
from __future__ import annotations

import numpy as np
import torch

from . import shapes, vqa

IMAGE_TOKEN = "<image>"  # the placeholder that utils.llava replaces with image features
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>", IMAGE_TOKEN)  # ids 0..4
# ChatML, as SmolLM2-Instruct writes it
CHAT_TEMPLATE = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
                 "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
                 "{% endif %}")
# how scripts/train_lm.py makes data/checkpoints/lm_shapes (the LM itself is LMConfig.preset("course"))
COURSE_RECIPE = dict(n_train_docs=8000, n_test_docs=1000, seed_train=0, seed_test=1, vocab_size=512, block=128,
                     train=dict(steps=250, batch_size=8, lr=3e-3, warmup=20, weight_decay=0.1, seed=0))
NUMBER_WORDS = ("no", "one", "two", "three", "four")
CAPTION_PROMPTS = ("Describe the image.", "What is in the image?", "Write a short caption for the image.",
                   "What do you see?", "Describe the picture in a few words.")
FACTS = [f"{c} is a colour." for c in shapes.COLOR_NAMES] + [f"a {s} is a shape." for s in shapes.SHAPES] + [
    "small and large are sizes.", "a circle is round and has no corners.", "a square has four equal sides.",
    "a triangle has three corners.", "a cross has four arms.", "the colours are red, green, blue, yellow, purple and orange.",
    "the shapes are circles, squares, triangles and crosses.", "the shapes sit on a dark background.",
    "an image can show one, two, three or four shapes.", "the top left is above the bottom left.",
    "the left is opposite the right.", "the top is opposite the bottom.", "the center is in the middle of the image."]


def caption(obj: shapes.ShapeObject, canvas: int = 32) -> str:
    """The canonical caption of one object, the one notebook 06 trains and scores word by word:
    "a small red circle in the top left" (position words as in `utils.vqa.WHERE_ANSWERS`)."""
    where = vqa.WHERE_ANSWERS[obj.position(canvas)]
    return shapes.describe("a {size} {color} {shape} " + where, obj.color, obj.shape, obj.size, "")


def describe_scene(scene: shapes.Scene, rng: np.random.Generator) -> str:
    """A description of a scene in one of a few phrasings; one object gets a caption template."""
    objs, n = scene.objects, len(scene.objects)
    if n == 1:
        if rng.random() < 0.5:
            return caption(objs[0], scene.canvas)
        return shapes.caption(objs[0], scene.canvas, int(rng.integers(len(shapes.CAPTION_TEMPLATES))))
    parts = [caption(o, scene.canvas) for o in objs]
    listed = ", ".join(parts[:-1]) + " and " + parts[-1]
    style = int(rng.integers(3))
    if style == 0:
        return f"there are {NUMBER_WORDS[n]} shapes: {listed}."
    if style == 1:
        return f"the image shows {listed}."
    return listed


def count_sentence(scene: shapes.Scene, rng: np.random.Generator) -> str:
    """How many objects of a colour or a shape the scene holds, in words: "there are two red objects"."""
    if rng.random() < 0.5:
        c = shapes.COLOR_NAMES[rng.integers(len(shapes.COLOR_NAMES))]
        k = sum(o.color == c for o in scene.objects)
        thing = f"{c} object" + ("" if k == 1 else "s")
    else:
        s = shapes.SHAPES[rng.integers(len(shapes.SHAPES))]
        k = sum(o.shape == s for o in scene.objects)
        thing = s if k == 1 else vqa.PLURALS[s]
    return f"there {'is' if k == 1 else 'are'} {NUMBER_WORDS[k]} {thing}."


def chat(user: str, assistant: str, image: bool = False) -> str:
    """One LLaVA-style exchange in ChatML; `image=True` puts the `<image>` placeholder before the user text."""
    user = f"{IMAGE_TOKEN}\n{user}" if image else user
    return f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n{assistant}<|im_end|>\n"


def make_document(rng: np.random.Generator, canvas: int = 32) -> str:
    """One training document of a randomly chosen kind (plain text or chat), without the end-of-text token."""
    kind = rng.choice(["caption", "scene", "qa", "chat_caption", "chat_qa", "chat_read", "facts"],
                      p=[0.22, 0.14, 0.12, 0.16, 0.14, 0.14, 0.08])
    if kind in ("caption", "chat_caption"):
        scene = shapes.sample_scene(rng, 1, canvas)
        text = describe_scene(scene, rng)
        if kind == "caption":
            return text + ("." if rng.random() < 0.5 else "")
        return chat(CAPTION_PROMPTS[rng.integers(len(CAPTION_PROMPTS))], text, image=True)
    if kind == "facts":
        return " ".join(FACTS[i] for i in rng.permutation(len(FACTS))[:4])
    item = vqa.make_item(rng, vqa.QUESTION_TYPES[rng.integers(len(vqa.QUESTION_TYPES))], canvas)
    scene, question, answer = item["scene"], item["question"], item["choices"][item["answer"]]
    if kind == "scene":
        return describe_scene(scene, rng).rstrip(".") + ". " + count_sentence(scene, rng)
    if kind == "qa":
        return f"{describe_scene(scene, rng)}\nQuestion: {question}\nAnswer: {answer}"
    if kind == "chat_qa":
        return chat(question, answer, image=True)
    return chat(f"{describe_scene(scene, rng)}\n{question}", answer)  # chat_read: the answer is in the text


def make_corpus(n: int, seed: int = 0, canvas: int = 32) -> list[str]:
    """`n` documents, deterministic for `seed`."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    return [make_document(rng, canvas) for _ in range(n)]


# ----------------------------------------------------------------------------- the tokenizer
def train_tokenizer(texts: list[str], vocab_size: int = 512):
    """A byte-level BPE `tokenizers.Tokenizer` trained on `texts`, with SPECIAL_TOKENS as ids 0..4."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must be at least {256 + len(SPECIAL_TOKENS)} (bytes + special tokens), "
                         f"got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def wrap_tokenizer(tokenizer_object):
    """A `tokenizers.Tokenizer` as a `transformers.PreTrainedTokenizerFast` with the chat roles set:
    bos `<|im_start|>`, eos `<|im_end|>` (ends an assistant turn), pad `<pad>`, `<|endoftext|>` between
    documents, `<image>` the image placeholder, and the ChatML chat template."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tokenizer_object, bos_token="<|im_start|>",
                                   eos_token="<|im_end|>", pad_token="<pad>",
                                   additional_special_tokens=["<|endoftext|>", IMAGE_TOKEN],
                                   chat_template=CHAT_TEMPLATE, padding_side="right")


def load_tokenizer(path=None, verify: bool | None = None):
    """The shipped BPE tokenizer (data/checkpoints/lm_tokenizer.json; files under data/ are hash-checked
    against data/MANIFEST) as a `PreTrainedTokenizerFast`, so `tokenizer(texts)` and `apply_chat_template` work."""
    from pathlib import Path

    from tokenizers import Tokenizer

    from . import DATA_DIR
    from .checkpoints import verify_file

    path = Path(DATA_DIR / "checkpoints" / "lm_tokenizer.json" if path is None else path)
    if not path.exists():
        raise FileNotFoundError(f"{path.name} not found; scripts/train_lm.py makes it")
    if verify if verify is not None else DATA_DIR.resolve() in path.resolve().parents:
        verify_file(path)
    return wrap_tokenizer(Tokenizer.from_file(str(path)))


# ----------------------------------------------------------------------------- training blocks
def pack(token_lists: list[list[int]], block: int, eot_id: int = 0) -> torch.Tensor:
    """Documents' token ids joined by the end-of-text token and cut into rows: (n, block) int64.

    The tail that does not fill a row is dropped (nanoGPT's packing); rows may start mid-document.
    """
    if block < 2:
        raise ValueError(f"block must be >= 2, got {block}")
    stream = [t for ids in token_lists for t in (*ids, eot_id)]
    n = len(stream) // block
    if n == 0:
        raise ValueError(f"the documents hold {len(stream)} tokens, fewer than one block of {block}")
    return torch.tensor(stream[:n * block], dtype=torch.long).view(n, block)  # (n, L)


def pack_documents(tokenizer, docs: list[str], block: int) -> torch.Tensor:
    """`pack` of `docs` tokenized by a `tokenizers.Tokenizer` (or the transformers tokenizer wrapping one)."""
    tok = getattr(tokenizer, "backend_tokenizer", tokenizer)
    return pack([e.ids for e in tok.encode_batch(docs)], block)  # (n, block)


@torch.no_grad()
def perplexity(model, blocks: torch.Tensor, batch_size: int = 64) -> float:
    """exp(mean next-token cross-entropy) of `model` (a `utils.lm.LM`) over packed `blocks` (n, L)."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(blocks), batch_size):
        x = blocks[i:i + batch_size]
        total += model(x, labels=x).loss.item() * x.shape[0] * (x.shape[1] - 1)
        count += x.shape[0] * (x.shape[1] - 1)
    return float(np.exp(total / count))
