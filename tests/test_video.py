"""utils.video (notebook 08): ShapesWorld clips (deterministic, balanced, held out, reversible), uniform frame
sampling as the issue states it, and the Perceiver resampler against a plain-loop reference of its equations and
against transformers' IdeficsPerceiverResampler with copied weights (within 1e-5); order (in)variance; bad inputs."""
import math

import numpy as np
import pytest
import torch

from utils import video

torch.set_num_threads(1)


# ----------------------------------------------------------------------------- clips
@pytest.fixture(scope="module")
def motion():
    return video.make_video_dataset(48, "direction", "train", seed=3)


@pytest.fixture(scope="module")
def order():
    return video.make_video_dataset(20, "first", "train", seed=3)


def test_datasets_are_deterministic_balanced_and_variable_length(motion, order):
    again = video.make_video_dataset(48, "direction", "train", seed=3)
    assert list(again["clip"]) == list(motion["clip"]) and list(again["answer"]) == list(motion["answer"])
    assert np.bincount(motion["direction"]).tolist() == [12] * 4
    assert np.bincount(motion["color"]).tolist() == [8] * 6
    assert np.bincount(order["first"]).tolist() == [10] * 2
    lengths = list(motion["num_frames"]) + list(order["num_frames"])
    assert min(lengths) >= video.MIN_FRAMES and max(lengths) <= video.MAX_FRAMES and len(set(lengths)) > 30
    assert set(order["direction"]) == {-1} and set(motion["first"]) == {-1}


def test_heldout_split_shares_no_clip_with_train(motion):
    held = video.make_video_dataset(48, "direction", "heldout", seed=3)
    assert not set(held["clip"]) & set(motion["clip"])


def test_frames_column_renders_the_clip_and_answers_say_the_label():
    ds = video.make_video_dataset(2, "direction", seed=5, with_frames=True)
    row = ds.with_format("numpy")[0]
    clip = video.Clip.from_json(row["clip"])
    assert row["frames"].shape == (clip.num_frames, 32, 32, 3)
    np.testing.assert_array_equal(row["frames"], video.clip_frames(clip))    # (T, H, W, 3) in [0, 255]
    assert row["answer"] == f"to the {video.ANSWER_WORDS[video.DIRECTIONS[row['direction']]]}"


def centroid(frame):
    """(x, y) of the pixels far from the background grey."""
    ys, xs = np.nonzero(np.abs(frame.astype(float) - 255 * video.BACKGROUND).max(-1) > 60)
    return xs.mean(), ys.mean()


def test_motion_goes_the_labelled_way_and_reverses_when_played_backwards(motion):
    for row in motion.select(range(8)):
        clip = video.Clip.from_json(row["clip"])
        frames = video.clip_frames(clip, [0, clip.num_frames - 1])
        (x0, y0), (x1, y1) = centroid(frames[0]), centroid(frames[1])
        dx, dy = x1 - x0, y1 - y0
        seen = ("right" if dx > 0 else "left") if abs(dx) > abs(dy) else ("down" if dy > 0 else "up")
        assert seen == video.DIRECTIONS[row["direction"]] and max(abs(dx), abs(dy)) >= 9
        back = video.reverse_clip(clip)
        np.testing.assert_array_equal(video.clip_frames(back), video.clip_frames(clip)[::-1])


def test_order_clips_show_the_labelled_object_first_and_never_both(order):
    for row in order.select(range(6)):
        clip = video.Clip.from_json(row["clip"])
        first = min(clip.tracks, key=lambda k: k.start)
        assert first.shape == video.FIRST[row["first"]]
        a, b = sorted(clip.tracks, key=lambda k: k.start)
        assert a.end < b.start
        rev = video.reverse_clip(clip)
        assert min(rev.tracks, key=lambda k: k.start).shape != first.shape


def test_qa_rows_put_loss_on_the_answer_only():
    from utils.lm import IGNORE_INDEX
    from utils.lm_data import load_tokenizer

    tok = load_tokenizer()
    ids, labels = video.qa_rows(tok, ["Which way does the red circle move?", "Which way?"], ["to the left", "to the top"])
    for i, answer in enumerate(["to the left", "to the top"]):
        assert tok.decode(labels[i][labels[i] != IGNORE_INDEX]) == answer + "<|im_end|>"
        assert (ids[i] == 4).sum() == 1
    with pytest.raises(ValueError, match="questions"):
        video.qa_rows(tok, ["a"], ["b", "c"])


def test_equal_frames_render_equal_and_are_encoded_once(order):
    clips = video.clips_of(order)
    calls = []

    def encode(images):
        calls.append(len(images))
        return images.mean(dim=(2, 3))[:, None]                          # (n, 1, 3)

    cache = {}
    feats = video.frame_features(clips, encode, k=64, cache=cache)
    assert feats.shape == (len(clips), 64, 1, 3)
    assert sum(calls) == len(cache) <= 1 + 2 * len(clips)                 # background, circle, square
    video.frame_features(clips, encode, k=16, cache=cache)
    assert sum(calls) == len(cache)                                       # nothing encoded twice
    direct = torch.from_numpy(video.clip_frames(clips[0], video.slot_indices(clips[0].num_frames, 64))).float()
    torch.testing.assert_close(feats[0, :, 0], direct.mean(dim=(1, 2)) / 255, atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------- sampling
@pytest.mark.parametrize("num_frames,k", [(64, 64), (300, 64), (100, 64), (1000, 64), (297, 7), (40, 8), (5, 5)])
def test_uniform_frame_indices_are_segment_centres(num_frames, k):
    idx = video.uniform_frame_indices(num_frames, k)
    assert idx.dtype == torch.long
    assert idx.tolist() == [math.floor((i + 0.5) * num_frames / k) for i in range(k)]


@pytest.mark.parametrize("num_frames,k", [(40, 64), (1, 64), (63, 64), (3, 10)])
def test_fewer_frames_than_k_gives_all_in_order(num_frames, k):
    assert video.uniform_frame_indices(num_frames, k).tolist() == list(range(num_frames))


def test_slot_indices_hold_each_sampled_frame():
    assert video.slot_indices(256, 4, 64).tolist() == sum([[t] * 16 for t in (32, 96, 160, 224)], [])
    held = video.slot_indices(40, 64, 64)
    assert len(held) == 64 and sorted(set(held.tolist())) == list(range(40)) and held.diff().min() >= 0


@pytest.mark.parametrize("kwargs,name", [(dict(num_frames=0), "num_frames"), (dict(num_frames=10, k=0), "k"),
                                         (dict(num_frames=-3, k=4), "num_frames")])
def test_uniform_frame_indices_refuse_bad_counts(kwargs, name):
    with pytest.raises(ValueError, match=name):
        video.uniform_frame_indices(**kwargs)


# ----------------------------------------------------------------------------- the resampler
def reference_resampler(m: video.PerceiverResampler, x: torch.Tensor, frame_offset: int = 0) -> torch.Tensor:
    """The same equations, one batch row, head and latent at a time, with an explicit softmax."""
    def ln(v, mod):
        return (v - v.mean(-1, keepdim=True)) / torch.sqrt(v.var(-1, unbiased=False, keepdim=True) + mod.eps) \
            * mod.weight + mod.bias

    B, T, N, D = x.shape
    out = torch.zeros(B, m.latents.shape[0], D, dtype=torch.float64)
    for b in range(B):
        frames = x[b].double()
        if m.time_embed is not None:
            frames = torch.stack([frames[t] + m.time_embed[frame_offset + t].double() for t in range(T)])
        context = frames.reshape(T * N, D)
        lat = m.latents.double()
        for attn, ff in m.blocks:
            attn, ff = attn.double(), ff.double()
            c, l = ln(context, attn.context_layer_norm), ln(lat, attn.latents_layer_norm)
            kv = torch.cat([c, l])                                              # (T*N + L, D)
            H, hd = attn.heads, D // attn.heads
            heads = []
            for h in range(H):
                sl = slice(h * hd, (h + 1) * hd)
                q, k, v = (l @ attn.q_proj.weight.T)[:, sl], (kv @ attn.k_proj.weight.T)[:, sl], (kv @ attn.v_proj.weight.T)[:, sl]
                rows = []
                for i in range(len(q)):
                    s = torch.stack([q[i] @ k[j] / math.sqrt(hd) for j in range(len(k))])
                    w = torch.exp(s - s.max()) / torch.exp(s - s.max()).sum()
                    rows.append((w[:, None] * v).sum(0))
                heads.append(torch.stack(rows))
            lat = lat + torch.cat(heads, -1) @ attn.output_proj.weight.T
            hdn = ln(lat, ff.ln) @ ff.fc.weight.T
            lat = lat + torch.nn.functional.gelu(hdn) @ ff.c_proj.weight.T
            attn.float(), ff.float()
        out[b] = ln(lat, m.layer_norm)
    return out


@pytest.mark.parametrize("dim,L,depth,heads,T,N,time", [(16, 3, 2, 4, 5, 2, True), (8, 1, 1, 1, 3, 1, False),
                                                        (12, 4, 3, 3, 6, 3, True)])
def test_resampler_matches_plain_loop_reference(dim, L, depth, heads, T, N, time):
    torch.manual_seed(dim)
    m = video.PerceiverResampler(dim, L, depth, heads, max_frames=8, time_embedding=time)
    for p in m.parameters():  # LayerNorms away from 1 and 0, so that they are tested too
        torch.nn.init.normal_(p, std=0.5) if p.dim() == 1 else None
    x = torch.randn(2, T, N, dim)
    torch.testing.assert_close(m(x).double(), reference_resampler(m, x), atol=1e-5, rtol=0)
    torch.testing.assert_close(m(x[:, :T - 1], frame_offset=1).double(), reference_resampler(m, x[:, :T - 1], 1),
                               atol=1e-5, rtol=0)


@pytest.mark.parametrize("dim,L,depth,heads", [(16, 4, 2, 4), (32, 8, 1, 2)])
def test_resampler_matches_transformers_idefics_perceiver(dim, L, depth, heads):
    from transformers import IdeficsConfig
    from transformers.models.idefics.perceiver import IdeficsPerceiverResampler

    torch.manual_seed(0)
    ours = video.PerceiverResampler(dim, L, depth, heads, max_frames=8, time_embedding=False).eval()
    cfg = IdeficsConfig(vision_config={"embed_dim": dim}, perceiver_config={"qk_layer_norms_perceiver": False})
    ref = IdeficsPerceiverResampler(cfg, dim, depth, heads, dim // heads, L).eval()
    for _, mlp in ref.blocks:   # Idefics' MLP uses ReLU; Flamingo's (and ours) GELU: the one difference
        mlp.act = torch.nn.GELU()
    ref.load_state_dict(ours.state_dict(), strict=True)                 # the same parameter names
    x = torch.randn(3, 5, 4, dim)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x.reshape(3, 20, dim)), atol=1e-5, rtol=0)


def test_merge_frames_is_the_resampler_per_chunk_of_32():
    torch.manual_seed(1)
    m = video.PerceiverResampler(16, 2, 1, 2, max_frames=64).eval()
    x = torch.randn(2, 64, 3, 16)
    with torch.no_grad():
        merged = video.merge_frames(x, m, 32)
        assert merged.shape == (2, 2, 2, 16)
        torch.testing.assert_close(merged[:, 0], m(x[:, :32]), atol=1e-6, rtol=0)
        torch.testing.assert_close(merged[:, 1], m(x[:, 32:], frame_offset=32), atol=1e-6, rtol=0)


def test_order_invariance_without_time_embedding_and_dependence_with_it():
    torch.manual_seed(2)
    x = torch.randn(2, 32, 3, 16)
    perm = torch.randperm(32)
    rev = torch.arange(31, -1, -1)
    plain = video.PerceiverResampler(16, 4, 2, 4, 32, time_embedding=False).eval()
    timed = video.PerceiverResampler(16, 4, 2, 4, 32, time_embedding=True).eval()
    with torch.no_grad():
        for order in (perm, rev):
            torch.testing.assert_close(plain(x[:, order]), plain(x), atol=1e-5, rtol=0)
            assert (timed(x[:, order]) - timed(x)).abs().max() > 1e-2
        # the mean-pooling and no-time classifiers see each 32-frame chunk as a set and the chunks as a set:
        # shuffled within chunks, chunks swapped, or the clip reversed, the same logits
        y = torch.randn(2, 64, 1, 16)
        shuffled = torch.cat([torch.randperm(32) + 32, torch.randperm(32)])
        for agg in ("mean", "resampler"):
            clf = video.VideoClassifier(agg, 16, {"a": 3}).eval()
            for order in (shuffled, torch.arange(63, -1, -1)):
                torch.testing.assert_close(clf(y[:, order])["a"], clf(y)["a"], atol=1e-5, rtol=0)
        clf = video.VideoClassifier("resampler+time", 16, {"a": 3}).eval()
        assert (clf(y.flip(1))["a"] - clf(y)["a"]).abs().max() > 1e-3


@pytest.mark.parametrize("call,name", [
    (lambda: video.PerceiverResampler(0, 4, 1, 1, 8), "dim"),
    (lambda: video.PerceiverResampler(16, 0, 1, 1, 8), "num_latents"),
    (lambda: video.PerceiverResampler(16, 4, 0, 1, 8), "depth"),
    (lambda: video.PerceiverResampler(16, 4, 1, 3, 8), "heads"),
    (lambda: video.PerceiverResampler(16, 4, 1, 1, 0), "max_frames"),
    (lambda: video.PerceiverResampler(16, 4, 1, 1, 8)(torch.randn(2, 3, 16)), "x"),
    (lambda: video.PerceiverResampler(16, 4, 1, 1, 8)(torch.randn(2, 9, 1, 16)), "max_frames"),
    (lambda: video.PerceiverResampler(16, 4, 1, 1, 8)(torch.randn(2, 3, 1, 8)), "x"),
    (lambda: video.PerceiverResampler(16, 4, 1, 1, 8)(torch.randn(2, 4, 1, 16), frame_offset=5), "frame_offset"),
    (lambda: video.merge_frames(torch.randn(1, 40, 1, 16), video.PerceiverResampler(16, 4, 1, 1, 64)), "frames_per_chunk"),
    (lambda: video.make_video_dataset(0), "n"),
    (lambda: video.make_video_dataset(4, task="colour"), "task"),
    (lambda: video.make_video_dataset(4, split="test"), "split"),
    (lambda: video.clip_frames(video.Clip((), 10), [10]), "indices"),
    (lambda: video.Clip.from_json("{}"), "text"),
    (lambda: video.slot_indices(10, 4, 0), "slots"),
    (lambda: video.VideoClassifier("max", 16, {"a": 2}), "aggregator"),
])
def test_bad_inputs_raise_naming_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()
