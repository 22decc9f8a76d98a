"""Every public helper refuses bad input at its boundary: a TypeError (wrong kind of thing) or ValueError (right
kind, wrong value) whose message names the argument. Each case is (module, label, call, exception, name); the
call runs lazily so that building the cases costs nothing. `CASES_PER_MODULE` counts them."""
import collections
import json
import math

import numpy as np
import pytest
import torch

from utils import (audio, checkpoints, checks, clip, clip_shapes, env, pretrained, shapes, text, training, vit, vqa,
                   vqa_model)

NAN = float("nan")
RNG = lambda: np.random.default_rng(0)  # noqa: E731
X = torch.randn(16000, generator=torch.Generator().manual_seed(0)) * 0.1  # one second of noise at 16 kHz
NAN_X = X.clone()
NAN_X[100] = NAN
OBJ = shapes.ShapeObject("circle", "red", "small", 16.0, 16.0)
SCENE = shapes.Scene((OBJ,))
IMG = shapes.render_scene(SCENE)                                          # (32, 32, 3) uint8, one object
TINY_VIT = dict(image_size=32, patch_size=8, dim=16, depth=1, heads=2, mlp_dim=32, num_classes=0)
NAMES = ["red circle", "blue square"]
TEMPLATES = ["a {}", "a photo of a {}"]


def enc_ok(texts):
    return torch.randn(len(texts), 8)


def tiny_tower():
    return vit.ViT(vit.ViTConfig(**TINY_VIT))


def scorer_inputs(**change):
    cfg = vqa_model.VQAConfig(token_dim=19, text_dim=8, hidden=16)
    args = dict(tokens=torch.randn(2, 3, 19), valid=torch.ones(2, 3, dtype=torch.bool), question=torch.randn(2, 8),
                answers=torch.randn(2, 4, 8))
    args.update(change)
    return lambda: vqa_model.AnswerScorer(cfg)(**args)


def linear_data(x=None):
    x = torch.randn(64, 4) if x is None else x
    return x, (x.sum(1) > 0).long()


def ce(model, batch):
    return torch.nn.functional.cross_entropy(model(batch[0]), batch[1])


def train_call(data=None, loss_fn=ce, cfg=None, model=None, **kw):
    cfg = cfg or training.TrainConfig(steps=3, batch_size=16, progress=False)
    return lambda: training.train(model if model is not None else torch.nn.Linear(4, 2),
                                  data if data is not None else linear_data(), loss_fn, cfg, **kw)


def mutated_cfg():
    cfg = training.TrainConfig(steps=3, batch_size=16, progress=False)
    cfg.steps = 0
    return cfg


def nan_loss(model, batch):
    return model(batch[0]).sum() * NAN


NOOP_TOKENIZER = lambda *a, **k: None  # noqa: E731  (validation comes before any use)
ALL_PAIRS = [(c, s) for c in shapes.COLOR_NAMES for s in shapes.SHAPES]


def checkpoint_with(tmp, weights: bytes | None = None, config: str | None = None):
    path = checkpoints.save_checkpoint(tmp / "m", {"w": torch.zeros(2)}, {"a": 1})
    if weights is not None:
        path.write_bytes(weights)
    if config is not None:
        path.with_suffix(".json").write_text(config)
    return lambda: checkpoints.load_checkpoint(path)


CASES = [
    # ------------------------------------------------------------------ shapes
    ("shapes", "n=0", lambda: shapes.make_shapes_dataset(0), ValueError, "n"),
    ("shapes", "n as str", lambda: shapes.make_shapes_dataset("10"), TypeError, "n"),
    ("shapes", "noise=nan", lambda: shapes.make_shapes_dataset(4, noise=NAN), ValueError, "noise"),
    ("shapes", "noise<0", lambda: shapes.make_shapes_dataset(4, noise=-0.1), ValueError, "noise"),
    ("shapes", "canvas=0", lambda: shapes.make_shapes_dataset(4, canvas=0), ValueError, "canvas"),
    ("shapes", "canvas float", lambda: shapes.make_shapes_dataset(4, canvas=32.0), TypeError, "canvas"),
    ("shapes", "seed<0", lambda: shapes.make_shapes_dataset(4, seed=-1), ValueError, "seed"),
    ("shapes", "holdout = every pair", lambda: shapes.make_shapes_dataset(4, split="train", holdout=ALL_PAIRS),
     ValueError, "holdout"),
    ("shapes", "empty holdout, heldout split", lambda: shapes.make_shapes_dataset(4, split="heldout", holdout=[]),
     ValueError, "holdout"),
    ("shapes", "holdout as str", lambda: shapes.make_shapes_dataset(4, holdout="red triangle"), TypeError, "holdout"),
    ("shapes", "unknown split", lambda: shapes.allowed_pairs("test"), ValueError, "split"),
    ("shapes", "unknown colour in holdout", lambda: shapes.allowed_pairs("train", [("pink", "circle")]),
     ValueError, "holdout"),
    ("shapes", "too many objects", lambda: shapes.sample_scene(RNG(), n_objects=20), ValueError, "n_objects"),
    ("shapes", "negative canvas", lambda: shapes.sample_scene(RNG(), 1, canvas=-5), ValueError, "canvas"),
    ("shapes", "rng as int", lambda: shapes.sample_scene(0, 1), TypeError, "rng"),
    ("shapes", "unknown size", lambda: shapes.sample_scene(RNG(), 1, sizes=["huge"]), ValueError, "sizes"),
    ("shapes", "render noise=nan", lambda: shapes.render_scene(SCENE, noise=NAN), ValueError, "noise"),
    ("shapes", "render a str", lambda: shapes.render_scene("scene"), TypeError, "scene"),
    ("shapes", "unknown shape", lambda: shapes.ShapeObject("hexagon", "red", "small", 1.0, 1.0), ValueError, "shape"),
    ("shapes", "x=nan", lambda: shapes.ShapeObject("circle", "red", "small", NAN, 3.0), ValueError, "x"),
    ("shapes", "template index out of range", lambda: shapes.caption(OBJ, 32, template=99), ValueError, "template"),
    ("shapes", "template with unknown field", lambda: shapes.describe("a {colour}", "red", "circle", "small", "top"),
     ValueError, "template"),
    ("shapes", "no images", lambda: shapes.images_to_tensor([]), ValueError, "images"),
    ("shapes", "float images", lambda: shapes.images_to_tensor([IMG / 255.0]), ValueError, "images"),
    ("shapes", "a tensor as images", lambda: shapes.images_to_tensor(torch.zeros(1, 3, 32, 32)), TypeError, "images"),
    ("shapes", "unknown label column", lambda: shapes.dataset_tensors(shapes.make_shapes_dataset(2), "colour"),
     ValueError, "label"),
    ("shapes", "scene JSON malformed", lambda: shapes.Scene.from_json("{not json"), ValueError, "text"),
    ("shapes", "position_name canvas=0", lambda: shapes.position_name(1.0, 2.0, 0), ValueError, "canvas"),
    # ------------------------------------------------------------------ vqa
    ("vqa", "n=0", lambda: vqa.make_vqa_dataset(0), ValueError, "n"),
    ("vqa", "n float", lambda: vqa.make_vqa_dataset(2.5), TypeError, "n"),
    ("vqa", "qtypes=[]", lambda: vqa.make_vqa_dataset(4, qtypes=[]), ValueError, "qtypes"),
    ("vqa", "qtypes a str", lambda: vqa.make_vqa_dataset(4, qtypes="colour"), TypeError, "qtypes"),
    ("vqa", "unknown qtype", lambda: vqa.make_vqa_dataset(4, qtypes=["color"]), ValueError, "qtypes"),
    ("vqa", "noise=nan", lambda: vqa.make_vqa_dataset(4, noise=NAN), ValueError, "noise"),
    ("vqa", "canvas too small", lambda: vqa.make_vqa_dataset(4, canvas=4), ValueError, "canvas"),
    ("vqa", "caption matching n=0", lambda: vqa.make_caption_matching_dataset(0), ValueError, "n"),
    ("vqa", "caption matching n<0", lambda: vqa.make_caption_matching_dataset(-3), ValueError, "n"),
    ("vqa", "caption matching noise=inf", lambda: vqa.make_caption_matching_dataset(3, noise=math.inf),
     ValueError, "noise"),
    ("vqa", "caption matching seed str", lambda: vqa.make_caption_matching_dataset(3, seed="0"), TypeError, "seed"),
    ("vqa", "unknown qtype item", lambda: vqa.make_item(RNG(), "why"), ValueError, "qtype"),
    ("vqa", "rng None", lambda: vqa.make_item(None, "colour"), TypeError, "rng"),
    ("vqa", "unknown position", lambda: vqa.place_objects(RNG(), [("circle", "red", "middle")]), ValueError, "specs"),
    ("vqa", "no specs", lambda: vqa.place_objects(RNG(), []), ValueError, "specs"),
    ("vqa", "nine objects", lambda: vqa.place_objects(RNG(), [("circle", "red", None)] * 9), ValueError, "specs"),
    # ------------------------------------------------------------------ vqa_model
    ("vqa_model", "float image", lambda: vqa_model.object_masks(IMG / 255.0), ValueError, "image"),
    ("vqa_model", "saturation=nan", lambda: vqa_model.object_masks(IMG, saturation=NAN), ValueError, "saturation"),
    ("vqa_model", "max_objects=0", lambda: vqa_model.object_masks(IMG, max_objects=0), ValueError, "max_objects"),
    ("vqa_model", "no masks", lambda: vqa_model.isolate_object(IMG, [], 0, RNG()), TypeError, "masks"),
    ("vqa_model", "k out of range", lambda: vqa_model.isolate_object(IMG, vqa_model.object_masks(IMG), 5, RNG()),
     ValueError, "k"),
    ("vqa_model", "images without objects",
     lambda: vqa_model.object_features([np.full((32, 32, 3), 30, np.uint8)], tiny_tower()), ValueError, "images"),
    ("vqa_model", "no images", lambda: vqa_model.object_features([], tiny_tower()), ValueError, "images"),
    ("vqa_model", "tower a str", lambda: vqa_model.object_features([IMG], "clip"), TypeError, "vision_tower"),
    ("vqa_model", "hidden=0", lambda: vqa_model.VQAConfig(hidden=0), ValueError, "hidden"),
    ("vqa_model", "pool=max", lambda: vqa_model.VQAConfig(pool="max"), ValueError, "pool"),
    ("vqa_model", "use_image='yes'", lambda: vqa_model.VQAConfig(use_image="yes"), TypeError, "use_image"),
    ("vqa_model", "question width", scorer_inputs(question=torch.randn(2, 9)), ValueError, "question"),
    ("vqa_model", "valid as floats", scorer_inputs(valid=torch.ones(2, 3)), TypeError, "valid"),
    ("vqa_model", "answers numpy", scorer_inputs(answers=np.zeros((2, 4, 8), np.float32)), TypeError, "answers"),
    ("vqa_model", "unknown kind", lambda: vqa_model.frozen_image_tokens([IMG], tiny_tower(), kind="pixels"),
     ValueError, "kind"),
    ("vqa_model", "layer<0", lambda: vqa_model.frozen_image_tokens([IMG], tiny_tower(), "patches", layer=-1),
     ValueError, "layer"),
    ("vqa_model", "feats empty", lambda: vqa_model.train_scorer(vqa_model.VQAConfig(), {}), ValueError, "feats"),
    ("vqa_model", "evaluate a str", lambda: vqa_model.evaluate("model", {}), TypeError, "model"),
    ("vqa_model", "ds lacks columns", lambda: vqa_model.encode_items(__import__("datasets").Dataset.from_dict({"x": [1]}),
                                                                     tiny_tower(), enc_ok), ValueError, "ds"),
    ("vqa_model", "text_features a str", lambda: vqa_model.encode_items(__import__("datasets").Dataset.from_dict(
        {"image": [0], "choices": [["a"]], "answer": [0]}), tiny_tower(), "minilm"), TypeError, "text_features"),
    # ------------------------------------------------------------------ clip
    ("clip", "NaN image_embeds", lambda: clip.clip_loss(torch.full((4, 8), NAN), torch.randn(4, 8), torch.tensor(0.0)),
     ValueError, "image_embeds"),
    ("clip", "NaN text_embeds", lambda: clip.clip_loss(torch.randn(4, 8), torch.full((4, 8), NAN), torch.tensor(0.0)),
     ValueError, "text_embeds"),
    ("clip", "t=nan", lambda: clip.clip_loss(torch.randn(4, 8), torch.randn(4, 8), torch.tensor(NAN)), ValueError, "t"),
    ("clip", "t a str", lambda: clip.clip_loss(torch.randn(4, 8), torch.randn(4, 8), "1.0"), TypeError, "t"),
    ("clip", "t not 0-d", lambda: clip.clip_loss(torch.randn(4, 8), torch.randn(4, 8), torch.ones(2)), ValueError, "t"),
    ("clip", "numpy image_embeds", lambda: clip.clip_loss(np.zeros((4, 8)), torch.randn(4, 8), 0.0),
     TypeError, "image_embeds"),
    ("clip", "integer embeds", lambda: clip.clip_loss(torch.ones(4, 8, dtype=torch.long), torch.randn(4, 8), 0.0),
     ValueError, "image_embeds"),
    ("clip", "logits width", lambda: clip.clip_logits(torch.randn(4, 8), torch.randn(3, 7), 0.0), ValueError,
     "text_embeds"),
    ("clip", "classnames a str", lambda: clip.zero_shot_classifier(enc_ok, "red circle", TEMPLATES), TypeError,
     "classnames"),
    ("clip", "encoder drops a row", lambda: clip.zero_shot_classifier(lambda t: torch.randn(len(t) - 1, 8), NAMES,
                                                                      TEMPLATES), ValueError, "encode_texts"),
    ("clip", "encoder returns NaN", lambda: clip.zero_shot_classifier(lambda t: torch.full((len(t), 8), NAN), NAMES,
                                                                      TEMPLATES), ValueError, "encode_texts"),
    ("clip", "templates a str", lambda: clip.zero_shot_classifier(enc_ok, NAMES, "a {}"), TypeError, "templates"),
    ("clip", "no classnames", lambda: clip.zero_shot_classifier(enc_ok, [], TEMPLATES), ValueError, "classnames"),
    ("clip", "encoder a str", lambda: clip.zero_shot_classifier("minilm", NAMES, TEMPLATES), TypeError, "encode_texts"),
    ("clip", "classnames ints", lambda: clip.zero_shot_classifier(enc_ok, [1, 2], TEMPLATES), TypeError, "classnames"),
    ("clip", "predict width", lambda: clip.zero_shot_predict(torch.randn(3, 8), torch.randn(2, 7)), ValueError,
     "classifier"),
    ("clip", "predict NaN", lambda: clip.zero_shot_predict(torch.full((3, 8), NAN), torch.randn(2, 8)), ValueError,
     "image_embeds"),
    ("clip", "recall k=0", lambda: clip.recall_at_k(torch.randn(4, 4), 0), ValueError, "k"),
    ("clip", "recall k float", lambda: clip.recall_at_k(torch.randn(4, 4), 2.0), TypeError, "k"),
    ("clip", "recall NaN", lambda: clip.recall_at_k(torch.full((4, 4), NAN), 1), ValueError, "similarity"),
    ("clip", "keys a list", lambda: clip.first_occurrences([1, 2]), TypeError, "keys"),
    ("clip", "embed_dim=0", lambda: clip.CLIPConfig(embed_dim=0), ValueError, "embed_dim"),
    ("clip", "unknown text tower", lambda: clip.CLIPConfig(text_tower="bert"), ValueError, "text_tower"),
    ("clip", "text heads", lambda: clip.CLIPConfig(text_width=30, text_heads=4), ValueError, "text_width"),
    # ------------------------------------------------------------------ clip_shapes
    ("clip_shapes", "unknown tower", lambda: clip_shapes.TextEncoder("bert"), ValueError, "tower"),
    ("clip_shapes", "tower None", lambda: clip_shapes.TextEncoder(None), TypeError, "tower"),
    ("clip_shapes", "patch_size=0", lambda: clip_shapes.clip_config("minilm", patch_size=0), ValueError, "patch_size"),
    ("clip_shapes", "load unknown tower", lambda: clip_shapes.load_shipped("bert", "data/checkpoints"), ValueError,
     "tower"),
    ("clip_shapes", "directory an int", lambda: clip_shapes.load_shipped("minilm", 3), TypeError, "directory"),
    ("clip_shapes", "captions misaligned", lambda: clip_shapes.train_clip(
        "scratch", torch.rand(4, 3, 32, 32), ["a"] * 3, None, steps=1), ValueError, "captions"),
    ("clip_shapes", "NaN images", lambda: clip_shapes.train_clip(
        "scratch", torch.full((4, 3, 32, 32), NAN), ["a"] * 4, None, steps=1), ValueError, "images"),
    ("clip_shapes", "captions a str", lambda: clip_shapes.train_clip(
        "scratch", torch.rand(4, 3, 32, 32), "a red circle", None, steps=1), TypeError, "captions"),
    ("clip_shapes", "encoder missing", lambda: clip_shapes.train_clip(
        "scratch", torch.rand(4, 3, 32, 32), ["a"] * 4, None, steps=1), TypeError, "encoder"),
    ("clip_shapes", "numpy images", lambda: clip_shapes.image_embeddings(
        clip.TinyCLIP(clip_shapes.clip_config("scratch")), np.zeros((2, 3, 32, 32), np.float32)), TypeError, "images"),
    ("clip_shapes", "model a str", lambda: clip_shapes.image_embeddings("clip", torch.zeros(2, 3, 32, 32)), TypeError,
     "model"),
    # ------------------------------------------------------------------ vit
    ("vit", "numpy images", lambda: vit.patchify(np.zeros((1, 3, 32, 32)), 4), TypeError, "images"),
    ("vit", "patch_size float", lambda: vit.patchify(torch.zeros(1, 3, 32, 32), 4.0), ValueError, "patch_size"),
    ("vit", "3-D images", lambda: vit.patchify(torch.zeros(3, 32, 32), 4), ValueError, "images"),
    ("vit", "unpatchify P=0", lambda: vit.unpatchify(torch.zeros(1, 64, 48), 0, 32, 3), ValueError, "patch_size"),
    ("vit", "image_size a str", lambda: vit.unpatchify(torch.zeros(1, 64, 48), 4, "32", 3), TypeError, "image_size"),
    ("vit", "numpy patches", lambda: vit.unpatchify(np.zeros((1, 64, 48)), 4, 32, 3), TypeError, "patches"),
    ("vit", "conv weight shape", lambda: vit.linear_to_conv_weight(torch.zeros(8, 47), 4, 3), ValueError, "weight"),
    ("vit", "grid 0", lambda: vit.sincos_2d_position_embedding(0, 4, 16), ValueError, "grid_h"),
    ("vit", "dim not /4", lambda: vit.sincos_2d_position_embedding(4, 4, 18), ValueError, "dim"),
    ("vit", "temperature nan", lambda: vit.sincos_2d_position_embedding(4, 4, 16, temperature=NAN), ValueError,
     "temperature"),
    ("vit", "image_size % P", lambda: vit.PatchEmbedding(image_size=30, patch_size=4, channels=3, dim=8), ValueError,
     "image_size"),
    ("vit", "unknown pos", lambda: vit.PatchEmbedding(image_size=32, patch_size=4, channels=3, dim=8, pos="rope"),
     ValueError, "pos"),
    ("vit", "wrong image size", lambda: tiny_tower()(torch.zeros(1, 3, 16, 16)), ValueError, "images"),
    ("vit", "wrong channels", lambda: tiny_tower()(torch.zeros(1, 1, 32, 32)), ValueError, "images"),
    ("vit", "float mask", lambda: vit.scaled_dot_product_attention(*torch.randn(3, 2, 5, 4), mask=torch.ones(5, 5)),
     TypeError, "mask"),
    ("vit", "q and k widths", lambda: vit.scaled_dot_product_attention(torch.randn(5, 4), torch.randn(5, 3),
                                                                       torch.randn(5, 3)), ValueError, "q"),
    ("vit", "heads=0", lambda: vit.MultiHeadSelfAttention(64, 0), ValueError, "heads"),
    ("vit", "depth=0", lambda: vit.ViTConfig(depth=0), ValueError, "depth"),
    ("vit", "num_classes<0", lambda: vit.ViTConfig(num_classes=-1), ValueError, "num_classes"),
    ("vit", "unknown pos config", lambda: vit.ViTConfig(pos="abs"), ValueError, "pos"),
    ("vit", "dim a str", lambda: vit.ViTConfig(dim="64"), TypeError, "dim"),
    ("vit", "to_torchvision a Linear", lambda: vit.to_torchvision(torch.nn.Linear(2, 2)), TypeError, "model"),
    # ------------------------------------------------------------------ audio
    ("audio", "log-mel n_mels=0", lambda: audio.log_mel_spectrogram(X, 16000, n_mels=0), ValueError, "n_mels"),
    ("audio", "filter bank n_mels=0", lambda: audio.mel_filterbank(201, 0.0, 8000.0, 0, 16000), ValueError, "n_mels"),
    ("audio", "NaN waveform", lambda: audio.log_mel_spectrogram(NAN_X, 16000), ValueError, "waveform"),
    ("audio", "inf waveform", lambda: audio.log_mel_spectrogram(X * math.inf, 16000), ValueError, "waveform"),
    ("audio", "quantize NaN", lambda: audio.quantize(NAN_X, 16), ValueError, "waveform"),
    ("audio", "bits float", lambda: audio.quantize(X, 8.0), ValueError, "bits"),
    ("audio", "bits bool", lambda: audio.quantize(X, True), ValueError, "bits"),
    ("audio", "waveform a str", lambda: audio.quantize("abc", 8), TypeError, "waveform"),
    ("audio", "sample_rate a str", lambda: audio.log_mel_spectrogram(X, "16000"), TypeError, "sample_rate"),
    ("audio", "sample_rate float", lambda: audio.log_mel_spectrogram(X, 16000.0), TypeError, "sample_rate"),
    ("audio", "win_ms nan", lambda: audio.log_mel_spectrogram(X, 16000, win_ms=NAN), ValueError, "win_ms"),
    ("audio", "eps=0", lambda: audio.log_mel_spectrogram(X, 16000, eps=0.0), ValueError, "eps"),
    ("audio", "empty waveform", lambda: audio.log_mel_spectrogram(torch.zeros(0), 16000), ValueError, "waveform"),
    ("audio", "0-d waveform", lambda: audio.log_mel_spectrogram(torch.tensor(0.5), 16000), ValueError, "waveform"),
    ("audio", "n_freqs=1", lambda: audio.mel_filterbank(1, 0.0, 8000.0, 40, 16000), ValueError, "n_freqs"),
    ("audio", "f_min nan", lambda: audio.mel_filterbank(201, NAN, 8000.0, 40, 16000), ValueError, "f_min"),
    ("audio", "frame a str", lambda: audio.frame_signal("abc", 10, 5), TypeError, "waveform"),
    ("audio", "win_length float", lambda: audio.frame_signal(X, 10.5, 5), TypeError, "win_length"),
    ("audio", "window length 0", lambda: audio.window_function("hamming", 0), ValueError, "length"),
    ("audio", "window an int", lambda: audio.window_function(3, 10), TypeError, "window"),
    ("audio", "dequantize floats", lambda: audio.dequantize(torch.zeros(4), 8), ValueError, "codes"),
    ("audio", "dequantize bits=40", lambda: audio.dequantize(torch.zeros(4, dtype=torch.int16), 40), ValueError, "bits"),
    ("audio", "snr shapes", lambda: audio.snr_db(X, X[:10]), ValueError, "signal"),
    ("audio", "snr of silence", lambda: audio.snr_db(torch.zeros(10), torch.zeros(10)), ValueError, "signal"),
    ("audio", "mel of nan", lambda: audio.mel_scale(NAN), ValueError, "f_hz"),
    ("audio", "mel of -800 Hz", lambda: audio.mel_scale(-800.0), ValueError, "f_hz"),
    ("audio", "mel of a str", lambda: audio.mel_scale("440"), TypeError, "f_hz"),
    ("audio", "inverse mel of NaN", lambda: audio.inverse_mel_scale(torch.tensor([NAN])), ValueError, "m"),
    ("audio", "write NaN", lambda: audio.write_wav("/nonexistent/a.wav", NAN_X, 16000), ValueError, "waveform"),
    ("audio", "write sample_rate=0", lambda: audio.write_wav("/nonexistent/a.wav", X, 0), ValueError, "sample_rate"),
    ("audio", "read an int", lambda: audio.read_wav(123), TypeError, "path"),
    # ------------------------------------------------------------------ checkpoints (tmp is filled in by the test)
    ("checkpoints", "weights not safetensors", lambda tmp: checkpoint_with(tmp, weights=b"PK\x03\x04 a zip")(),
     ValueError, "m.safetensors"),
    ("checkpoints", "config malformed JSON", lambda tmp: checkpoint_with(tmp, config='{"a": 1,')(), ValueError,
     "m.json"),
    ("checkpoints", "config a JSON list", lambda tmp: checkpoint_with(tmp, config="[1, 2]")(), ValueError, "m.json"),
    ("checkpoints", "path an int", lambda tmp: checkpoints.load_checkpoint(123), TypeError, "path"),
    ("checkpoints", "verify a str", lambda tmp: checkpoints.load_checkpoint(tmp / "m", verify="yes"), TypeError,
     "verify"),
    ("checkpoints", "a module as state_dict", lambda tmp: checkpoints.save_checkpoint(tmp / "m", torch.nn.Linear(2, 2),
                                                                                      {}), TypeError, "state_dict"),
    ("checkpoints", "numpy in state_dict", lambda tmp: checkpoints.save_checkpoint(tmp / "m", {"w": np.zeros(2)}, {}),
     TypeError, "state_dict"),
    ("checkpoints", "config a str", lambda tmp: checkpoints.save_checkpoint(tmp / "m", {"w": torch.zeros(2)}, "cfg"),
     TypeError, "config"),
    ("checkpoints", "NaN in config", lambda tmp: checkpoints.save_checkpoint(tmp / "m", {"w": torch.zeros(2)},
                                                                             {"a": NAN}), TypeError, "config"),
    ("checkpoints", "object in config", lambda tmp: checkpoints.save_checkpoint(tmp / "m", {"w": torch.zeros(2)},
                                                                                {"a": object()}), TypeError, "config"),
    ("checkpoints", "expected not a sha256", lambda tmp: checkpoints.verify_file(__file__, expected="abc"), ValueError,
     "expected"),
    ("checkpoints", "missing file", lambda tmp: checkpoints.verify_file(tmp / "gone.bin", expected="0" * 64),
     FileNotFoundError, "gone.bin"),
    ("checkpoints", "malformed manifest", lambda tmp: (tmp / "MANIFEST").write_text("abc data/x\n")
     and checkpoints.read_manifest(tmp / "MANIFEST"), ValueError, "manifest"),
    ("checkpoints", "sha256 of None", lambda tmp: checkpoints.sha256(None), TypeError, "path"),
    ("checkpoints", "one path as files", lambda tmp: checkpoints.write_manifest("data/x", tmp / "M"), TypeError, "files"),
    # ------------------------------------------------------------------ training
    ("training", "steps=0", lambda: training.TrainConfig(steps=0), ValueError, "steps"),
    ("training", "step_seconds repeats=0", lambda: training.step_seconds(torch.nn.Linear(3, 2), torch.ones(4, 3),
                                                                        torch.zeros(4, dtype=torch.long), 0), ValueError, "repeats"),
    ("training", "step_seconds x/y lengths", lambda: training.step_seconds(torch.nn.Linear(3, 2), torch.ones(4, 3),
                                                                          torch.zeros(5, dtype=torch.long)), ValueError, "x and y"),
    ("training", "steps<0", lambda: training.TrainConfig(steps=-1), ValueError, "steps"),
    ("training", "batch_size=0", lambda: training.TrainConfig(batch_size=0), ValueError, "batch_size"),
    ("training", "lr<0", lambda: training.TrainConfig(lr=-1), ValueError, "lr"),
    ("training", "lr nan", lambda: training.TrainConfig(lr=NAN), ValueError, "lr"),
    ("training", "weight_decay<0", lambda: training.TrainConfig(weight_decay=-0.1), ValueError, "weight_decay"),
    ("training", "warmup<0", lambda: training.TrainConfig(warmup=-5), ValueError, "warmup"),
    ("training", "grad_clip<0", lambda: training.TrainConfig(grad_clip=-1), ValueError, "grad_clip"),
    ("training", "steps a str", lambda: training.TrainConfig(steps="100"), TypeError, "steps"),
    ("training", "steps float", lambda: training.TrainConfig(steps=10.0), TypeError, "steps"),
    ("training", "progress a str", lambda: training.TrainConfig(progress="no"), TypeError, "progress"),
    ("training", "NaN data", train_call(data=linear_data(torch.full((64, 4), NAN))), ValueError, "data[0]"),
    ("training", "NaN loss", train_call(loss_fn=nan_loss), ValueError, "loss_fn"),
    ("training", "cfg changed to steps=0", lambda: train_call(cfg=mutated_cfg())(), ValueError, "steps"),
    ("training", "data one tensor", train_call(data=torch.zeros(64, 4)), TypeError, "data"),
    ("training", "numpy data", train_call(data=(np.zeros((64, 4)), np.zeros(64))), TypeError, "data[0]"),
    ("training", "loss a float", train_call(loss_fn=lambda m, b: 1.0), TypeError, "loss_fn"),
    ("training", "model a str", train_call(model="linear"), TypeError, "model"),
    ("training", "cfg a dict", train_call(cfg={"steps": 3}), TypeError, "cfg"),
    ("training", "no params", train_call(params=[]), ValueError, "params"),
    ("training", "accuracy lengths", lambda: training.accuracy(torch.randn(4, 3), torch.zeros(5, dtype=torch.long)),
     ValueError, "labels"),
    ("training", "probe labels out of range", lambda: training.fit_linear_probe(
        torch.randn(8, 4), torch.arange(8), num_classes=4), ValueError, "labels"),
    ("training", "probe NaN features", lambda: training.fit_linear_probe(
        torch.full((8, 4), NAN), torch.zeros(8, dtype=torch.long), num_classes=2), ValueError, "features"),
    ("training", "probe num_classes=1", lambda: training.fit_linear_probe(
        torch.randn(8, 4), torch.zeros(8, dtype=torch.long), num_classes=1), ValueError, "num_classes"),
    ("training", "predict numpy", lambda: training.predict(torch.nn.Linear(4, 2), np.zeros((3, 4))), TypeError,
     "inputs"),
    ("training", "batches batch_size=0", lambda: next(training.batches(linear_data(), 0, torch.Generator())),
     ValueError, "batch_size"),
    ("training", "lr_at step<0", lambda: training.lr_at(-1, training.TrainConfig()), ValueError, "step"),
    ("training", "plot a str", lambda: training.plot_history("hist"), TypeError, "hist"),
    # ------------------------------------------------------------------ env
    ("env", "set_threads(0)", lambda: env.set_threads(0), ValueError, "n"),
    ("env", "set_threads(-2)", lambda: env.set_threads(-2), ValueError, "n"),
    ("env", "set_threads(2.5)", lambda: env.set_threads(2.5), TypeError, "n"),
    ("env", "set_threads('2')", lambda: env.set_threads("2"), TypeError, "n"),
    ("env", "seed<0", lambda: env.seed_everything(-1), ValueError, "seed"),
    ("env", "seed a str", lambda: env.seed_everything("0"), ValueError, "seed"),
    ("env", "seed a bool", lambda: env.seed_everything(True), ValueError, "seed"),
    ("env", "unknown device", lambda: env.pick_device("tpu9"), ValueError, "prefer"),
    ("env", "device an int", lambda: env.pick_device(3), TypeError, "prefer"),
    ("env", "timeout=0", lambda: env.is_online(timeout=0), ValueError, "timeout"),
    ("env", "port=0", lambda: env.is_online(port=0), ValueError, "port"),
    ("env", "setup threads=0", lambda: env.setup(threads=0), ValueError, "threads"),
    # ------------------------------------------------------------------ pretrained
    ("pretrained", "texts a str", lambda: pretrained.mean_pooled_embeddings(None, None, "a red circle"), TypeError,
     "texts"),
    ("pretrained", "no texts", lambda: pretrained.mean_pooled_embeddings(None, None, []), ValueError, "texts"),
    ("pretrained", "batch_size=0", lambda: pretrained.mean_pooled_embeddings(None, None, ["a"], batch_size=0),
     ValueError, "batch_size"),
    ("pretrained", "a number among texts", lambda: pretrained.mean_pooled_embeddings(None, None, ["a", 3]), TypeError,
     "texts[1]"),
    ("pretrained", "source an int", lambda: pretrained.load_minilm(source=3), TypeError, "source"),
    ("pretrained", "source missing", lambda: pretrained.load_minilm(source="/nonexistent/minilm"), FileNotFoundError,
     "source"),
    ("pretrained", "online a str", lambda: pretrained.load_minilm(online="yes"), TypeError, "online"),
    ("pretrained", "hf classnames a str", lambda: pretrained.hf_clip_zero_shot(None, None, [IMG], "a cat"), TypeError,
     "classnames"),
    ("pretrained", "hf template without {}", lambda: pretrained.hf_clip_zero_shot(None, None, [IMG], ["cat"],
                                                                                  templates=("a photo",)), ValueError,
     "template"),
    ("pretrained", "hf no images", lambda: pretrained.hf_clip_zero_shot(None, None, [], ["cat"]), ValueError, "images"),
    ("pretrained", "hf source an int", lambda: pretrained.load_hf_clip(source=3), TypeError, "source"),
    # ------------------------------------------------------------------ text
    ("text", "texts a str", lambda: text.tokenize(NOOP_TOKENIZER, "a red circle"), TypeError, "texts"),
    ("text", "no texts", lambda: text.tokenize(NOOP_TOKENIZER, []), ValueError, "texts"),
    ("text", "None among texts", lambda: text.tokenize(NOOP_TOKENIZER, ["a", None]), TypeError, "texts[1]"),
    ("text", "max_len=1", lambda: text.tokenize(NOOP_TOKENIZER, ["a"], max_len=1), ValueError, "max_len"),
    ("text", "max_len a str", lambda: text.tokenize(NOOP_TOKENIZER, ["a"], max_len="24"), TypeError, "max_len"),
    ("text", "tokenizer a str", lambda: text.tokenize("bert", ["a"]), TypeError, "tokenizer"),
    ("text", "online a str", lambda: text.wordpiece_tokenizer(online="no"), TypeError, "online"),
]
CASES_PER_MODULE = collections.Counter(c[0] for c in CASES)


@pytest.mark.parametrize("module,label,call,error,name", CASES, ids=[f"{c[0]}: {c[1]}" for c in CASES])
def test_bad_input_is_refused_naming_the_argument(module, label, call, error, name, tmp_path):
    with pytest.raises(error) as info:
        call(tmp_path) if module == "checkpoints" else call()
    assert name in str(info.value), f"{label}: the message does not name {name!r}: {info.value}"


def test_every_module_has_a_representative_set():
    assert set(CASES_PER_MODULE) == {"shapes", "vqa", "vqa_model", "clip", "clip_shapes", "vit", "audio", "checkpoints",
                                     "training", "env", "pretrained", "text"}
    assert min(CASES_PER_MODULE.values()) >= 7, CASES_PER_MODULE


@pytest.mark.parametrize("call,name", [
    (lambda: checks.assert_close(None, 1.0, verbose=False), "actual"),
    (lambda: checks.assert_close(1.0, None, verbose=False), "expected"),
    (lambda: checks.assert_close("abc", 1.0, verbose=False), "actual"),
    (lambda: checks.assert_close(torch.ones(2), torch.ones(2), atol=NAN, verbose=False), "atol"),
    (lambda: checks.assert_close(torch.ones(2), torch.ones(2), rtol=NAN, verbose=False), "rtol"),
    (lambda: checks.assert_close(torch.ones(2), torch.ones(2), atol=-1.0, verbose=False), "atol"),
])
def test_assert_close_refuses_what_it_cannot_compare_naming_the_argument(call, name):
    # a ValueError naming the argument, not torch's RuntimeError from inside
    with pytest.raises(ValueError, match=name):
        call()


# ---------------------------------------------------------------------- what is accepted instead of refused
def test_clip_loss_clips_the_scale_at_100_and_accepts_a_float_t():
    I, T = torch.randn(6, 8), torch.randn(6, 8)
    at_100 = clip.clip_loss(I, T, torch.tensor(math.log(100.0)))
    assert torch.equal(clip.clip_loss(I, T, torch.tensor(1000.0)), at_100)  # exp(1000) would be inf
    assert torch.allclose(clip.clip_loss(I, T, 1.0), clip.clip_loss(I, T, torch.tensor(1.0)))


def test_audio_accepts_numpy_waveforms_as_tensors():
    x = X.numpy()
    assert torch.equal(audio.log_mel_spectrogram(x, 16000), audio.log_mel_spectrogram(X, 16000))
    assert torch.equal(audio.quantize(x, 8), audio.quantize(X, 8))


def test_grad_clip_zero_still_means_off_and_training_is_unchanged():
    torch.manual_seed(0)
    data = linear_data()
    cfg = training.TrainConfig(steps=20, batch_size=16, grad_clip=0.0, progress=False)
    torch.manual_seed(1)
    hist = training.train(torch.nn.Linear(4, 2), data, ce, cfg)
    assert len(hist.loss) == 20 and all(math.isfinite(v) for v in hist.loss)


def test_nan_loss_stops_at_the_first_step_with_the_step_named():
    with pytest.raises(ValueError, match=r"nan at step 0"):
        train_call(loss_fn=nan_loss)()


def test_messages_say_what_was_expected_and_what_came():
    with pytest.raises(ValueError) as info:
        env.set_threads(0)
    assert "n must be an int >= 1" in str(info.value) and "got 0" in str(info.value)
    with pytest.raises(TypeError) as info:
        clip.zero_shot_classifier(enc_ok, "red circle", TEMPLATES)
    assert "list of strings" in str(info.value) and "'red circle'" in str(info.value)
    with pytest.raises(ValueError) as info:
        shapes.make_shapes_dataset(4, noise=NAN)
    assert "finite" in str(info.value) and "nan" in str(info.value)


def test_a_checkpoint_config_round_trips_unchanged(tmp_path):
    cfg = {"b": [1, 2.5], "a": {"c": None, "d": True}}
    path = checkpoints.save_checkpoint(tmp_path / "m", {"w": torch.arange(3.0)}, cfg)
    assert json.loads(path.with_suffix(".json").read_text()) == cfg
