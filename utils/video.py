"""Video as in Llama 3.2 (notebook 08): uniformly sampled frames, each through the image tower, merged by a
Perceiver resampler, 32 consecutive frames into one; and the LM reading them through gated cross-attention
blocks, image blocks over every frame's tokens and video blocks over the aggregated ones, a video block before
every k-th image block (`video_cross_attention_layout`, `VideoCrossAttentionLM`).

Llama Team, 2024, "The Llama 3 Herd of Models" §7 (video: up to 64 uniformly sampled frames, a temporal
aggregator that merges 32 consecutive frames into one, video cross-attention layers before every fourth image
cross-attention layer; the released Llama 3.2 Vision weights are image-only);
Jaegle et al., 2021, "Perceiver"; Alayrac et al., 2022, "Flamingo" (the Perceiver *resampler*: learned latents
whose keys and values are the frame tokens concatenated with the latents, and a learned time embedding per
frame). Names follow transformers' `IdeficsPerceiverResampler`, which tests/test_video.py checks against.

ShapesWorld clips are descriptions first (`Clip`, `Track`), pixels second (`render_frame`): a frame is a
`utils.shapes.Scene` of the objects visible at time t, at integer pixel positions, so equal frames are equal
images and a notebook encodes each distinct frame once (`frame_features`). No video codec anywhere.
Shapes: B clips, T frames, N tokens per frame, D width, L latents, K sampled frames.
"""
from __future__ import annotations

import json
import zlib
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import shapes, validate

DIRECTIONS = ("left", "right", "up", "down")
FIRST = ("circle", "square")            # which of the two objects appeared first
TASKS = {"direction": DIRECTIONS, "first": FIRST, "color": shapes.COLOR_NAMES}  # 'color': the control
ANSWER_WORDS = {"left": "left", "right": "right", "up": "top", "down": "bottom"}  # words the course LM knows
MIN_FRAMES, MAX_FRAMES = 40, 300
BACKGROUND = 0.12
SPLITS = ("train", "heldout")


# ----------------------------------------------------------------------------- clips
@dataclass(frozen=True)
class Track:
    """One object, visible for frames start <= t < end, moving in a straight line from (x0, y0) at `start`
    to (x1, y1) at `end - 1` (integer pixels; positions in between rounded), wrapping around the canvas
    when `wrap` (only the aliasing demo's fast clips wrap)."""
    shape: str
    color: str
    size: str
    x0: float
    y0: float
    x1: float
    y1: float
    start: int
    end: int
    wrap: bool = False

    def position(self, t: int, canvas: int) -> tuple[float, float] | None:
        if not self.start <= t < self.end:
            return None
        span = max(self.end - 1 - self.start, 1)
        f = (t - self.start) / span
        x, y = self.x0 + (self.x1 - self.x0) * f, self.y0 + (self.y1 - self.y0) * f
        if self.wrap:
            return float(np.floor(x + 0.5) % canvas), float(np.floor(y + 0.5) % canvas)
        # integer arithmetic so that a clip and its reverse round every frame the same way
        num_x = self.x0 * span + (self.x1 - self.x0) * (t - self.start)
        num_y = self.y0 * span + (self.y1 - self.y0) * (t - self.start)
        return float(np.floor(num_x / span + 0.5)), float(np.floor(num_y / span + 0.5))


@dataclass(frozen=True)
class Clip:
    tracks: tuple[Track, ...]
    num_frames: int
    canvas: int = 32

    def to_json(self) -> str:
        return json.dumps({"tracks": [asdict(t) for t in self.tracks], "num_frames": self.num_frames,
                           "canvas": self.canvas})

    @staticmethod
    def from_json(text: str) -> "Clip":
        validate.instance("text", text, (str, bytes))
        try:
            d = json.loads(text)
            return Clip(tuple(Track(**t) for t in d["tracks"]), d["num_frames"], d["canvas"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"text must be a clip's JSON (Clip.to_json), got {str(text)[:60]!r} ({e})") from None


def reverse_clip(clip: Clip) -> Clip:
    """The same clip played backwards: frame t of the result is frame T - 1 - t of `clip`."""
    validate.instance("clip", clip, Clip)
    T = clip.num_frames
    return Clip(tuple(Track(k.shape, k.color, k.size, k.x1, k.y1, k.x0, k.y0, T - k.end, T - k.start, k.wrap)
                      for k in clip.tracks), T, clip.canvas)


def frame_key(clip: Clip, t: int) -> tuple:
    """What frame t shows: the visible objects with their integer positions (equal keys, equal images)."""
    objs = []
    for k in clip.tracks:
        p = k.position(t, clip.canvas)
        if p is not None:
            objs.append((k.shape, k.color, k.size, *p))
            if k.wrap:  # the part that left one edge comes back at the other
                objs += [(k.shape, k.color, k.size, p[0] + dx, p[1] + dy) for dx, dy in
                         ((-clip.canvas, 0), (clip.canvas, 0), (0, -clip.canvas), (0, clip.canvas))
                         if -6 < p[0] + dx < clip.canvas + 6 and -6 < p[1] + dy < clip.canvas + 6]
    return (clip.canvas, *objs)


def render_key(key: tuple, noise: float = 0.04) -> np.ndarray:
    """(H, W, 3) uint8: the frame a `frame_key` describes, rendered by `utils.shapes.render_scene` with pixel
    noise seeded by the content (deterministic, and the same for equal frames of different clips)."""
    canvas, objs = key[0], key[1:]
    scene = shapes.Scene(tuple(shapes.ShapeObject(s, c, z, x, y) for s, c, z, x, y in objs), canvas,
                         BACKGROUND, zlib.crc32(repr(key).encode()) & 0x7FFFFFFF)
    return shapes.render_scene(scene, noise)


def clip_frames(clip: Clip, indices=None) -> np.ndarray:
    """(K, H, W, 3) uint8 frames of `clip` at `indices` (default: every frame)."""
    validate.instance("clip", clip, Clip)
    indices = range(clip.num_frames) if indices is None else [int(i) for i in indices]
    bad = [i for i in indices if not 0 <= i < clip.num_frames]
    if bad:
        raise ValueError(f"indices must be in [0, {clip.num_frames}), got {bad[:3]}")
    return np.stack([render_key(frame_key(clip, t)) for t in indices])


# ----------------------------------------------------------------------------- the data set
def _motion_clip(rng, direction: str, color: str, T: int, canvas: int) -> Clip:
    """A small circle crossing at least a third of the canvas along one axis; left and right (up and down)
    draw their endpoints from mirrored ranges, so a clip and its reverse are equally likely."""
    r = shapes.SIZES["small"] * canvas
    lo, hi = int(np.ceil(r + 0.5)), int(np.floor(canvas - r - 0.5))   # [6, 26] on a 32 canvas
    near = int(rng.integers(lo, lo + 6))
    far = int(rng.integers(hi - 5, hi + 1))
    a, b = (far, near) if direction in ("left", "up") else (near, far)
    c = int(rng.integers(lo, hi + 1))
    x0, y0, x1, y1 = (a, c, b, c) if direction in ("left", "right") else (c, a, c, b)
    return Clip((Track("circle", color, "small", x0, y0, x1, y1, 0, T),), T, canvas)


def _order_clip(rng, first: str, T: int, canvas: int) -> Clip:
    """A circle and a square, each shown once for 10-30% of the clip, one after the other (never together)."""
    dur = [int(rng.integers(int(0.1 * T), int(0.3 * T) + 1)) for _ in range(2)]
    gap = int(rng.integers(int(0.05 * T), int(0.15 * T) + 1))
    lead = int(rng.integers(0, T - sum(dur) - gap + 1))
    second = FIRST[1 - FIRST.index(first)]
    c1, c2 = rng.choice(len(shapes.COLOR_NAMES), 2, replace=False)
    tracks = []
    t = lead
    for shape, color, d in ((first, c1, dur[0]), (second, c2, dur[1])):
        size = shapes.SIZE_NAMES[int(rng.integers(2))]
        rr = shapes.SIZES[size] * canvas
        x, y = (int(rng.integers(int(np.ceil(rr + 0.5)), int(np.floor(canvas - rr - 0.5)) + 1)) for _ in range(2))
        tracks.append(Track(shape, shapes.COLOR_NAMES[int(color)], size, x, y, x, y, t, t + d))
        t += d + gap
    return Clip(tuple(tracks), T, canvas)


def make_video_dataset(n: int, task: str = "direction", split: str = "train", seed: int = 0,
                       canvas: int = 32, with_frames: bool = False):
    """A `datasets.Dataset` of `n` ShapesWorld clips of 40 to 300 frames, deterministic for (seed, split).

    task 'direction': a small circle moves left, right, up or down (the columns `direction` and, the control
    whose answer ignores frame order, `color`: the circle's colour); task 'first': a circle and a square appear
    one after the other (`first`: which came first). Labels are balanced (exactly, when n is a multiple of 24
    for 'direction' and of 2 for 'first'); 'heldout' draws from another random stream than 'train' and no clip
    of one is in the other. Columns: task, num_frames, direction / color / first (-1 where not asked),
    question, answer, clip (the JSON that renders the frames), and `frames` (T, H, W, 3) uint8 when `with_frames`.
    """
    from datasets import Array4D, Dataset, Features, Value

    validate.integer("n", n, min=1)
    validate.choice("task", task, ("direction", "first"))
    validate.choice("split", split, SPLITS)
    validate.integer("seed", seed, min=0)
    shapes._check_canvas(canvas)
    if canvas < 24:
        raise ValueError(f"canvas must be >= 24 pixels for motion to cross a third of it, got {canvas}")
    rng = np.random.default_rng([seed, SPLITS.index(split), 8])
    if task == "direction":
        combos = [(d, c) for d in DIRECTIONS for c in shapes.COLOR_NAMES]
        labels = [combos[i] for i in rng.permutation(np.arange(n) % len(combos))]
    else:
        labels = [(FIRST[i], None) for i in rng.permutation(np.arange(n) % 2)]
    rows = {k: [] for k in ("task", "num_frames", "direction", "color", "first", "question", "answer", "clip")}
    if with_frames:
        rows["frames"] = []
    for lab, col in labels:
        T = int(rng.integers(MIN_FRAMES, MAX_FRAMES + 1))
        if task == "direction":
            clip = _motion_clip(rng, lab, col, T, canvas)
            q, a = f"Which way does the {col} circle move?", f"to the {ANSWER_WORDS[lab]}"
            d, c, f = DIRECTIONS.index(lab), shapes.COLOR_NAMES.index(col), -1
        else:
            clip = _order_clip(rng, lab, T, canvas)
            q, a = "Which appeared first, the circle or the square?", f"the {lab}"
            d, c, f = -1, -1, FIRST.index(lab)
        for k, v in zip(rows, (task, T, d, c, f, q, a, clip.to_json())):
            rows[k].append(v)
        if with_frames:
            rows["frames"].append(clip_frames(clip))
    features = dict(task=Value("string"), num_frames=Value("int32"), direction=Value("int8"), color=Value("int8"),
                    first=Value("int8"), question=Value("string"), answer=Value("string"), clip=Value("string"))
    if with_frames:
        features["frames"] = Array4D(shape=(None, canvas, canvas, 3), dtype="uint8")
    return Dataset.from_dict(rows, features=Features(features))


def clips_of(ds) -> list[Clip]:
    """The `Clip` descriptions of a dataset made by `make_video_dataset`."""
    return [Clip.from_json(s) for s in ds["clip"]]


# ----------------------------------------------------------------------------- sampling frames
def uniform_frame_indices(num_frames: int, k: int = 64) -> torch.Tensor:
    """Llama 3.2's "up to 64 uniformly sampled frames": (min(num_frames, k),) int64 frame indices.

    With num_frames >= k, index i is floor((i + 0.5) * num_frames / k), the centre of the i-th of k equal
    segments; with fewer frames than k, every frame in order.
    """
    validate.integer("num_frames", num_frames, min=1)
    validate.integer("k", k, min=1)
    if num_frames < k:
        return torch.arange(num_frames)
    return (2 * torch.arange(k) + 1) * num_frames // (2 * k)          # exact floor((i + 0.5) * T / k)


def slot_indices(num_frames: int, k: int, slots: int = 64) -> torch.Tensor:
    """(slots,) frame indices: the `k` uniformly sampled frames, each held for slots / k slots (a clip shorter
    than k, or k below `slots`, repeats frames), so that every clip fills the same `slots` model inputs."""
    validate.integer("slots", slots, min=1)
    idx = uniform_frame_indices(num_frames, k)
    return idx[torch.arange(slots) * len(idx) // slots]


@torch.no_grad()
def frame_features(clips: list[Clip], encode, k: int = 64, slots: int = 64, cache: dict | None = None,
                   batch_size: int = 512) -> torch.Tensor:
    """(B, slots, N, D) features of each clip's sampled frames (`slot_indices`), with `encode` ((n, 3, H, W)
    floats in [0, 1] -> (n, N, D)) run once per distinct frame; `cache` (frame key -> (N, D)) carries the
    encoded frames from one call to the next."""
    if not clips:
        raise ValueError("clips must be a non-empty list of Clip")
    if not callable(encode):
        raise TypeError(f"encode must be a function images -> (n, N, D), got {type(encode).__name__}")
    cache = {} if cache is None else cache
    keys = [[frame_key(c, int(t)) for t in slot_indices(c.num_frames, k, slots)] for c in clips]
    todo = list(dict.fromkeys(key for row in keys for key in row if key not in cache))
    for i in range(0, len(todo), batch_size):
        part = todo[i:i + batch_size]
        feats = encode(shapes.images_to_tensor([render_key(key) for key in part]))   # (n, N, D)
        cache.update(zip(part, feats))
    return torch.stack([torch.stack([cache[key] for key in row]) for row in keys])   # (B, slots, N, D)


# ----------------------------------------------------------------------------- aggregation
class PerceiverAttention(nn.Module):
    """Latents attend to concat(frame tokens, latents) (Flamingo), pre-LayerNorm, no biases."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.context_layer_norm, self.latents_layer_norm = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q_proj, self.k_proj = nn.Linear(dim, dim, bias=False), nn.Linear(dim, dim, bias=False)
        self.v_proj, self.output_proj = nn.Linear(dim, dim, bias=False), nn.Linear(dim, dim, bias=False)

    def forward(self, context: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """context (B, S, D) frame tokens, latents (B, L, D) -> (B, L, D) the update to add to the latents."""
        B, L, D = latents.shape
        H = self.heads
        context, latents = self.context_layer_norm(context), self.latents_layer_norm(latents)
        kv_in = torch.cat([context, latents], dim=1)                               # (B, S + L, D)
        q = self.q_proj(latents).view(B, L, H, D // H).transpose(1, 2)             # (B, H, L, D/H)
        k = self.k_proj(kv_in).view(B, -1, H, D // H).transpose(1, 2)              # (B, H, S + L, D/H)
        v = self.v_proj(kv_in).view(B, -1, H, D // H).transpose(1, 2)              # (B, H, S + L, D/H)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, L, D)
        return self.output_proj(out)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.ln, self.fc = nn.LayerNorm(dim), nn.Linear(dim, mult * dim, bias=False)
        self.act, self.c_proj = nn.GELU(), nn.Linear(mult * dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.act(self.fc(self.ln(x))))


class PerceiverResampler(nn.Module):
    """Flamingo's Perceiver resampler: (B, T, N, D) frame tokens -> (B, num_latents, D).

        x_t = frame tokens of frame t + time_embed[t]       (when time_embedding; one learned vector per frame)
        latents <- latents + Attention(q = latents, kv = concat(x_1..x_T flattened, latents))
        latents <- latents + FFW(latents)                    (depth times), then LayerNorm

    Without the time embedding the output is the same for any order of the frames (attention is a weighted
    sum over a set); with it, frame t is marked with its position and order can matter.
    """

    def __init__(self, dim: int, num_latents: int, depth: int, heads: int, max_frames: int,
                 time_embedding: bool = True):
        super().__init__()
        for name, value in (("dim", dim), ("num_latents", num_latents), ("depth", depth), ("heads", heads),
                            ("max_frames", max_frames)):
            validate.integer(name, value, min=1)
        if dim % heads:
            raise ValueError(f"dim={dim} must be divisible by heads={heads}")
        self.dim, self.max_frames = dim, max_frames
        self.latents = nn.Parameter(torch.randn(num_latents, dim))
        self.time_embed = nn.Parameter(torch.randn(max_frames, dim)) if time_embedding else None
        self.blocks = nn.ModuleList([nn.ModuleList([PerceiverAttention(dim, heads), FeedForward(dim)])
                                     for _ in range(depth)])
        self.layer_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, frame_offset: int = 0) -> torch.Tensor:
        """x (B, T, N, D) -> (B, num_latents, D); frame t gets time_embed[frame_offset + t]."""
        validate.tensor("x", x, dim=4, floating=True)
        B, T, N, D = x.shape
        if D != self.dim:
            raise ValueError(f"x must have width D={self.dim} in its last dimension, got shape {tuple(x.shape)}")
        validate.integer("frame_offset", frame_offset, min=0)
        if frame_offset + T > self.max_frames:
            raise ValueError(f"x has T={T} frames from frame_offset={frame_offset}, more than "
                             f"max_frames={self.max_frames}")
        if self.time_embed is not None:
            x = x + self.time_embed[frame_offset:frame_offset + T, None]          # (B, T, N, D)
        context = x.reshape(B, T * N, D)                                           # (B, T*N, D)
        latents = self.latents.expand(B, -1, -1)                                   # (B, L, D)
        for attn, ff in self.blocks:
            latents = attn(context, latents) + latents
            latents = ff(latents) + latents
        return self.layer_norm(latents)                                            # (B, L, D)


def merge_frames(x: torch.Tensor, resampler: PerceiverResampler, frames_per_chunk: int = 32) -> torch.Tensor:
    """Llama 3.2's temporal aggregator: every `frames_per_chunk` consecutive frames -> one "frame" of
    num_latents tokens. x (B, T, N, D), T a multiple of frames_per_chunk -> (B, T / frames_per_chunk, L, D);
    chunk j's frames keep their positions j * frames_per_chunk + t in the time embedding."""
    validate.tensor("x", x, dim=4, floating=True)
    validate.instance("resampler", resampler, PerceiverResampler)
    validate.integer("frames_per_chunk", frames_per_chunk, min=1)
    B, T, N, D = x.shape
    if T % frames_per_chunk:
        raise ValueError(f"x has T={T} frames, not a multiple of frames_per_chunk={frames_per_chunk}")
    chunks = [resampler(x[:, j:j + frames_per_chunk], frame_offset=j) for j in range(0, T, frames_per_chunk)]
    return torch.stack(chunks, dim=1)                                              # (B, T/c, L, D)


class VideoClassifier(nn.Module):
    """Aggregated video tokens -> a readout -> one linear head per task (notebook 08).

    `aggregator`: 'mean' (mean of every frame token), 'resampler' or 'resampler+time' (merge_frames with a
    PerceiverResampler without / with time embedding; Flamingo's resampler has the time embedding, so 'resampler'
    is an ablation). `readout`: 'mean' averages the output tokens, which treats the chunks as a set, so 'mean' and
    'resampler' give the same output for any order of the frames within each chunk, for the chunks swapped, and so
    for a clip and its reverse; 'chunks' averages each chunk's L tokens and concatenates the chunks in order, so
    the order *between* chunks survives even without a time embedding (not the order within a chunk).
    """

    AGGREGATORS = ("mean", "resampler", "resampler+time")
    READOUTS = ("mean", "chunks")

    def __init__(self, aggregator: str, dim: int, num_classes: dict[str, int], num_latents: int = 4,
                 depth: int = 2, heads: int = 4, slots: int = 64, frames_per_chunk: int = 32, readout: str = "mean"):
        super().__init__()
        validate.choice("aggregator", aggregator, self.AGGREGATORS)
        validate.choice("readout", readout, self.READOUTS)
        if readout == "chunks" and aggregator == "mean":
            raise ValueError("readout='chunks' needs a resampler aggregator: 'mean' pools the whole clip to one token")
        self.aggregator, self.frames_per_chunk, self.readout = aggregator, frames_per_chunk, readout
        self.num_latents, n_chunks = num_latents, (slots // frames_per_chunk if readout == "chunks" else 1)
        self.resampler = None if aggregator == "mean" else PerceiverResampler(
            dim, num_latents, depth, heads, slots, time_embedding=aggregator == "resampler+time")
        self.norm = nn.LayerNorm(dim)
        self.heads = nn.ModuleDict({t: nn.Linear(dim * n_chunks, c) for t, c in num_classes.items()})

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, N, D) -> (B, M, D) video tokens: M = 1 for 'mean', T / frames_per_chunk * L otherwise."""
        if self.resampler is None:
            return x.mean(dim=(1, 2))[:, None]                                     # (B, 1, D)
        return merge_frames(x, self.resampler, self.frames_per_chunk).flatten(1, 2)  # (B, T/c * L, D)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        tokens = self.tokens(x)                                                    # (B, M, D)
        if self.readout == "chunks":                                               # chunks in order, each averaged
            h = self.norm(tokens.unflatten(1, (-1, self.num_latents)).mean(2)).flatten(1)  # (B, T/c * D)
        else:
            h = self.norm(tokens.mean(1))                                          # (B, D)
        return {t: head(h) for t, head in self.heads.items()}                      # {task: (B, C)}


# ----------------------------------------------------------------------------- Llama 3.2's video cross-attention
CONTEXT_KINDS = ("image", "video")  # what an inserted block reads: every sampled frame's tokens, or the resampler's


def video_cross_attention_layout(n_layers: int, image_layers=None, video_every: int | None = 4) -> dict[int, tuple[str, ...]]:
    """Which gated cross-attention blocks run before which decoder layer, in order (Llama 3 §7.4: "additional video
    cross attention layers are added before every fourth image cross attention layer").

    Image blocks go before `image_layers` (default: every layer); counting them 1, 2, ..., a video block goes
    before each image block whose count is a multiple of `video_every` (the paper: 4; None: image blocks only).
    Returns {decoder layer: ('image',) or ('video', 'image')}.
    """
    if not isinstance(n_layers, int) or n_layers < 1:
        raise ValueError(f"n_layers must be a positive int, got {n_layers!r}")
    image_layers = list(range(n_layers)) if image_layers is None else list(image_layers)
    if not image_layers or len(set(image_layers)) != len(image_layers) or \
            any(not isinstance(i, int) or not 0 <= i < n_layers for i in image_layers):
        raise ValueError(f"image_layers must be distinct decoder layer indices in [0, {n_layers}), at least one; "
                         f"got {image_layers!r}")
    if video_every is not None and (not isinstance(video_every, int) or not 1 <= video_every <= len(image_layers)):
        raise ValueError(f"video_every must be None or an int in [1, {len(image_layers)}] (there are "
                         f"{len(image_layers)} image blocks), got {video_every!r}")
    return {i: (("video",) if video_every and j % video_every == 0 else ()) + ("image",)
            for j, i in enumerate(sorted(image_layers), start=1)}


class ContextBlock(nn.Module):
    """A gated cross-attention block that reads one entry of the context: `context[kind]`, (B, N, D)."""

    def __init__(self, kind: str, block: nn.Module):
        super().__init__()
        validate.choice("kind", kind, CONTEXT_KINDS)
        self.kind, self.block = kind, block

    def forward(self, x: torch.Tensor, context: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.block(x, context[self.kind])                                   # (B, L, D)


class BlocksBeforeLayer(nn.Module):
    """The blocks inserted before one decoder layer, run in order (a video block before its image block)."""

    def __init__(self, blocks: list[ContextBlock]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, context: dict[str, torch.Tensor]) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, context)
        return x


class VideoCrossAttentionLM(nn.Module):
    """Llama 3.2's video design around a language model (notebook 08): gated cross-attention blocks
    (`utils.llava.GatedCrossAttentionBlock`, Flamingo's, gates at 0) inserted before decoder layers as `layout`
    says. Image blocks read every sampled frame's tokens, projected by `image_proj`; video blocks read the
    temporal aggregator's tokens, projected by `video_proj`. The prompt keeps its `<image>` placeholder as one
    token: nothing is spliced, so the LM's sequence is the text alone. With `freeze_lm` (Llama 3.2's recipe) only
    the blocks and the projectors train.
    """

    def __init__(self, language_model: nn.Module, frame_dim: int, video_dim: int, layout: dict[int, tuple[str, ...]],
                 heads: int | None = None, hidden_dim: int | None = None, freeze_lm: bool = True):
        super().__init__()
        from .llava import GatedCrossAttentionBlock

        if not layout or any(not kinds or set(kinds) - set(CONTEXT_KINDS) for kinds in layout.values()):
            raise ValueError(f"layout must map decoder layers to non-empty tuples of {CONTEXT_KINDS}, got {layout!r}")
        cfg = language_model.cfg
        self.language_model, self.layout = language_model, {int(i): tuple(k) for i, k in layout.items()}
        self.has_video = any("video" in kinds for kinds in self.layout.values())
        self.image_proj = nn.Linear(frame_dim, cfg.dim)                            # D_f -> D
        self.video_proj = nn.Linear(video_dim, cfg.dim) if self.has_video else None  # D_v -> D
        if freeze_lm:
            language_model.requires_grad_(False)
        language_model.insert_blocks({i: BlocksBeforeLayer([
            ContextBlock(k, GatedCrossAttentionBlock(cfg.dim, heads or cfg.n_heads, hidden_dim or cfg.hidden_dim,
                                                     cfg.norm_eps)) for k in kinds]) for i, kinds in self.layout.items()})

    def blocks(self) -> dict[str, nn.Module]:
        """{'video@1': block, 'image@1': block, ...}: each gated block by what it reads and the layer it precedes."""
        return {f"{b.kind}@{i}": b.block for i, stack in self.language_model.inserted.items() for b in stack.blocks}

    def gates(self) -> dict[str, tuple[float, float]]:
        """tanh of each block's attention gate and feed-forward gate (0 at the start)."""
        return {k: (b.attn_gate.tanh().item(), b.ff_gate.tanh().item()) for k, b in self.blocks().items()}

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def context(self, frame_tokens: torch.Tensor, video_tokens: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """frame_tokens (B, T, D_f), video_tokens (B, M, D_v) or None -> {'image': (B, T, D), 'video': (B, M, D)}."""
        validate.tensor("frame_tokens", frame_tokens, dim=3, floating=True)
        ctx = {"image": self.image_proj(frame_tokens)}
        if self.has_video:
            if video_tokens is None:
                raise ValueError("video_tokens (B, M, D_v) are needed: the layout has video cross-attention blocks")
            validate.tensor("video_tokens", video_tokens, dim=3, floating=True)
            ctx["video"] = self.video_proj(video_tokens)
        return ctx

    def forward(self, frame_tokens: torch.Tensor, video_tokens: torch.Tensor | None, input_ids: torch.Tensor,
                labels: torch.Tensor | None = None):
        """The LM's output (logits (B, L, V), loss) on the prompt `input_ids` (B, L), cross-attending to the clip."""
        return self.language_model(input_ids, labels=labels, context=self.context(frame_tokens, video_tokens))

    @torch.no_grad()
    def generate(self, frame_tokens: torch.Tensor, video_tokens: torch.Tensor | None, input_ids: torch.Tensor,
                 **generate_kwargs) -> torch.Tensor:
        """Generated tokens (B, S); `generate_kwargs` go to `LM.generate` (greedy by default)."""
        return self.language_model.generate(input_ids, context=self.context(frame_tokens, video_tokens),
                                            **generate_kwargs)


def multitask_loss(model: VideoClassifier, batch) -> torch.Tensor:
    """The summed cross-entropy of each task's head: batch = (x, labels of each task in the heads' order),
    -1 where a clip does not ask that task."""
    out = model(batch[0])
    return sum(F.cross_entropy(out[t], y, ignore_index=-1) for t, y in zip(model.heads, batch[1:]) if (y >= 0).any())


def train_video_classifier(aggregator: str, x: torch.Tensor, labels: list[torch.Tensor], num_classes: dict[str, int],
                           steps: int = 250, batch_size: int = 64, seed: int = 0, readout: str = "mean"):
    """Notebook 08's recipe: a VideoClassifier (4 latents, 1 block, 4 heads) seeded with `seed`, trained with
    AdamW on `multitask_loss`, `steps` steps of `batch_size` clips (lr 3e-3, 20 warm-up steps, no weight decay).
    x (n, T, N, D); labels: one (n,) LongTensor per task of `num_classes`, in its order. Returns (model, History)."""
    from .training import TrainConfig, train

    torch.manual_seed(seed)
    model = VideoClassifier(aggregator, x.shape[-1], num_classes, num_latents=4, depth=1, heads=4, readout=readout)
    hist = train(model, (x, *labels), multitask_loss,
                 TrainConfig(steps=steps, batch_size=batch_size, lr=3e-3, warmup=20, weight_decay=0.0, seed=seed))
    return model, hist


QA_TRAIN = dict(batch_size=16, lr=3e-3, warmup=10, weight_decay=0.0)  # notebook 08's generation recipe (TrainConfig)
COLOR_QUESTION = "What colour is the circle?"                        # the control: frame order does not matter


def qa_pairs(ds, control: bool = False) -> tuple[list[str], list[str], list[str]]:
    """The questions, answers and kinds of a 'direction' dataset: "Which way does the red circle move?" ->
    "to the left" (kind 'direction'), and with `control` also COLOR_QUESTION -> "red" (kind 'colour') per clip."""
    qs, ans, kinds = list(ds["question"]), list(ds["answer"]), ["direction"] * len(ds)
    if control:
        qs += [COLOR_QUESTION] * len(ds)
        ans += [shapes.COLOR_NAMES[c] for c in ds["color"]]
        kinds += ["colour"] * len(ds)
    return qs, ans, kinds


def answer_by_prompt(generate, tokenizer, questions: list[str], eos_token_id: int, max_new_tokens: int = 8) -> list[str]:
    """Greedy answers, batched by question so that each batch has one prompt length (no padding):
    `generate(idx, prompt_ids, **kwargs)` returns the tokens generated for the rows `idx` (len(idx), S)."""
    from .llava_data import prompt_ids

    out = [None] * len(questions)
    for q in sorted(set(questions)):
        idx = [i for i, qq in enumerate(questions) if qq == q]
        gen = generate(idx, prompt_ids(tokenizer, len(idx), prompt=q), max_new_tokens=max_new_tokens,
                       eos_token_id=eos_token_id)
        for i, text in zip(idx, tokenizer.batch_decode(gen, skip_special_tokens=True)):
            out[i] = text.strip()
    return out


def qa_rows(tokenizer, questions: list[str], answers: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Training rows `<image> + question -> answer + <|im_end|>` in ChatML, right-padded (notebook 08), like
    `utils.llava_data.caption_rows` but with a question per row. Returns input_ids (n, L) and labels (n, L),
    IGNORE_INDEX everywhere but on the answer and its `<|im_end|>`."""
    from .llava_data import prompt_answer_rows

    validate.strings("questions", questions)
    validate.strings("answers", answers)
    if len(questions) != len(answers):
        raise ValueError(f"questions and answers must be as many, got {len(questions)} and {len(answers)}")
    return prompt_answer_rows(tokenizer, questions, answers)
