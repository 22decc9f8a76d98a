"""utils.video (notebook 08): ShapesWorld clips (deterministic, balanced, held out, reversible), uniform frame
sampling as the lecture states it, and the Perceiver resampler against a plain-loop reference of its equations and
against transformers' IdeficsPerceiverResampler with copied weights (within 1e-5); order (in)variance; bad inputs;
Llama 3.2's video cross-attention layout (hook order, zero gates = the plain LM exactly, which block reads what,
refused placements) and notebook 08's training helpers and script."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

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
        # the chunks read out in order: no time embedding, yet the order between chunks survives (not within one)
        clf = video.VideoClassifier("resampler", 16, {"a": 3}, readout="chunks").eval()
        within = torch.cat([torch.randperm(32), torch.randperm(32) + 32])
        torch.testing.assert_close(clf(y[:, within])["a"], clf(y)["a"], atol=1e-5, rtol=0)
        swapped = torch.cat([torch.arange(32, 64), torch.arange(32)])
        assert (clf(y[:, swapped])["a"] - clf(y)["a"]).abs().max() > 1e-3


def test_chunks_readout_is_each_chunks_mean_in_order():
    torch.manual_seed(3)
    clf = video.VideoClassifier("resampler", 16, {"a": 3, "b": 2}, num_latents=4, readout="chunks").eval()
    y = torch.randn(2, 64, 1, 16)
    with torch.no_grad():
        tokens = clf.tokens(y)                                          # (2, 8, 16): chunk 0's 4 latents, then chunk 1's
        h = torch.cat([clf.norm(tokens[:, :4].mean(1)), clf.norm(tokens[:, 4:].mean(1))], dim=1)
        torch.testing.assert_close(clf(y)["b"], clf.heads["b"](h), atol=1e-6, rtol=0)
    assert clf.heads["a"].in_features == 32


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
    (lambda: video.VideoClassifier("resampler", 16, {"a": 2}, readout="last"), "readout"),
    (lambda: video.VideoClassifier("mean", 16, {"a": 2}, readout="chunks"), "readout"),
])
def test_bad_inputs_raise_naming_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()


# ----------------------------------------------------------------------------- Llama 3.2's video cross-attention
from utils import lm as lm_mod  # noqa: E402


def tiny_lm(n_layers=4, seed=0):
    torch.manual_seed(seed)
    return lm_mod.LM(lm_mod.LMConfig(vocab_size=40, dim=32, n_layers=n_layers, n_heads=4, n_kv_heads=4,
                                     hidden_dim=64, max_seq_len=64))


def test_layout_places_a_video_block_before_every_kth_image_block():
    # the paper: image blocks before every layer here, a video block before every 2nd image block (the 2nd, 4th)
    assert video.video_cross_attention_layout(4, video_every=2) == {
        0: ("image",), 1: ("video", "image"), 2: ("image",), 3: ("video", "image")}
    assert video.video_cross_attention_layout(8, image_layers=[3, 7], video_every=2) == {3: ("image",), 7: ("video", "image")}
    assert video.video_cross_attention_layout(4, video_every=None) == {i: ("image",) for i in range(4)}
    assert video.video_cross_attention_layout(4, video_every=4) == {0: ("image",), 1: ("image",), 2: ("image",),
                                                                    3: ("video", "image")}


@pytest.mark.parametrize("kwargs, name", [
    (dict(n_layers=4, image_layers=[4]), "image_layers"), (dict(n_layers=4, image_layers=[-1]), "image_layers"),
    (dict(n_layers=4, image_layers=[]), "image_layers"), (dict(n_layers=4, image_layers=[1, 1]), "image_layers"),
    (dict(n_layers=4, video_every=0), "video_every"), (dict(n_layers=4, video_every=5), "video_every"),
    (dict(n_layers=0), "n_layers")])
def test_bad_placements_are_refused(kwargs, name):
    with pytest.raises(ValueError, match=name):
        video.video_cross_attention_layout(**kwargs)


def video_xattn(layout, seed=0, freeze_lm=True):
    torch.manual_seed(seed)
    return video.VideoCrossAttentionLM(tiny_lm(seed=seed), frame_dim=12, video_dim=10, layout=layout, heads=4,
                                       hidden_dim=48, freeze_lm=freeze_lm)


def test_zero_gates_give_the_plain_lm_logits_exactly():
    layout = video.video_cross_attention_layout(4, video_every=2)
    m = video_xattn(layout)
    plain = tiny_lm(seed=0)
    ids = torch.randint(5, 40, (3, 9))
    frames, vid = torch.randn(3, 16, 12), torch.randn(3, 4, 10)
    assert all(b.attn_gate.item() == 0 and b.ff_gate.item() == 0 for b in m.blocks().values())
    assert torch.equal(m(frames, vid, ids).logits, plain(ids).logits)
    with torch.no_grad():                                      # open the gates: the context now changes the logits
        for b in m.blocks().values():
            b.attn_gate.fill_(0.5)
    assert not torch.allclose(m(frames, vid, ids).logits, plain(ids).logits, atol=1e-4)


def test_blocks_run_before_the_right_decoder_layers_in_order():
    m = video_xattn(video.video_cross_attention_layout(4, video_every=2))
    order = []
    for i, layer in enumerate(m.language_model.layers):
        layer.register_forward_pre_hook(lambda mod, args, i=i: order.append(f"layer{i}"))
    for name, block in m.blocks().items():
        block.register_forward_pre_hook(lambda mod, args, name=name: order.append(name))
    m(torch.randn(2, 16, 12), torch.randn(2, 4, 10), torch.randint(5, 40, (2, 7)))
    assert order == ["image@0", "layer0", "video@1", "image@1", "layer1", "image@2", "layer2",
                     "video@3", "image@3", "layer3"]


def test_video_blocks_read_only_aggregated_tokens_and_image_blocks_only_frame_tokens():
    m = video_xattn(video.video_cross_attention_layout(4, video_every=2))
    frames, vid = torch.randn(2, 16, 12), torch.randn(2, 4, 10)
    seen = {}
    for name, block in m.blocks().items():
        block.k_proj.register_forward_hook(lambda mod, args, out, name=name: seen.__setitem__(name, args[0]))
    m(frames, vid, torch.randint(5, 40, (2, 7)))
    for name, ctx in seen.items():
        expected = m.video_proj(vid) if name.startswith("video") else m.image_proj(frames)
        assert torch.equal(ctx, expected), name
    assert {n.split("@")[0] for n in seen} == {"image", "video"} and len(seen) == 6


def test_image_only_layout_needs_no_video_tokens_and_a_video_layout_refuses_none():
    image_only = video_xattn(video.video_cross_attention_layout(4, video_every=None))
    assert image_only.video_proj is None
    image_only(torch.randn(2, 16, 12), None, torch.randint(5, 40, (2, 7)))
    with_video = video_xattn(video.video_cross_attention_layout(4, video_every=2))
    with pytest.raises(ValueError, match="video_tokens"):
        with_video(torch.randn(2, 16, 12), None, torch.randint(5, 40, (2, 7)))


def test_frozen_lm_gets_no_gradient_and_the_blocks_and_projectors_do():
    m = video_xattn(video.video_cross_attention_layout(4, video_every=2))
    ids = torch.randint(5, 40, (2, 7))
    with torch.no_grad():
        for b in m.blocks().values():
            b.attn_gate.fill_(0.3), b.ff_gate.fill_(0.3)
    m(torch.randn(2, 16, 12), torch.randn(2, 4, 10), ids, labels=ids).loss.backward()
    trainable = {k for k, p in m.named_parameters() if p.requires_grad}
    assert trainable and all(k.startswith(("image_proj", "video_proj", "language_model.inserted")) for k in trainable)
    assert all(p.grad is not None for k, p in m.named_parameters() if p.requires_grad)
    assert m.num_trainable() == sum(p.numel() for k, p in m.named_parameters() if k in trainable)


def test_generate_with_cross_attention_equals_step_by_step_argmax():
    m = video_xattn(video.video_cross_attention_layout(4, video_every=2))
    with torch.no_grad():
        for b in m.blocks().values():
            b.attn_gate.fill_(0.5)
    frames, vid, ids = torch.randn(2, 16, 12), torch.randn(2, 4, 10), torch.randint(5, 40, (2, 6))
    out = m.generate(frames, vid, ids, max_new_tokens=4)
    seq = ids
    for _ in range(4):
        seq = torch.cat([seq, m(frames, vid, seq).logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, seq[:, 6:])
    assert set(m.gates()) == set(m.blocks()) and all(len(g) == 2 for g in m.gates().values())


def test_multitask_loss_sums_each_asked_task_and_skips_unasked_ones():
    torch.manual_seed(0)
    m = video.VideoClassifier("mean", 8, {"direction": 4, "first": 2}, num_latents=2, depth=1, heads=2)
    x = torch.randn(6, 4, 1, 8)
    y_dir, y_first = torch.tensor([0, 1, 2, 3, -1, -1]), torch.tensor([-1, -1, -1, -1, 0, 1])
    out = m(x)
    ref = F.cross_entropy(out["direction"][:4], y_dir[:4]) + F.cross_entropy(out["first"][4:], y_first[4:])
    torch.testing.assert_close(video.multitask_loss(m, (x, y_dir, y_first)), ref, rtol=0, atol=1e-6)
    only_dir = video.multitask_loss(m, (x[:4], y_dir[:4], y_first[:4]))       # no clip asks "first": its head is skipped
    torch.testing.assert_close(only_dir, F.cross_entropy(out["direction"][:4], y_dir[:4]), rtol=0, atol=1e-6)


def test_train_video_classifier_is_seeded_and_learns():
    torch.manual_seed(1)
    y = torch.randint(0, 2, (64,))
    x = torch.randn(64, 4, 1, 8)
    x[:, :, 0, 0] += 2.0 * (2 * y[:, None] - 1)                 # a label the mean of the frames carries
    (a, ha), (b, hb) = (video.train_video_classifier("mean", x, [y], {"sign": 2}, steps=100, batch_size=16) for _ in range(2))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters())) and ha.loss == hb.loss
    assert np.mean(ha.loss[-5:]) < 0.5 * np.mean(ha.loss[:5])


def test_qa_pairs_add_the_colour_control_per_clip():
    ds = video.make_video_dataset(6, "direction", "train")
    qs, ans, kinds = video.qa_pairs(ds)
    assert qs == list(ds["question"]) and ans == list(ds["answer"]) and kinds == ["direction"] * 6
    qs, ans, kinds = video.qa_pairs(ds, control=True)
    assert qs[6:] == [video.COLOR_QUESTION] * 6 and kinds[6:] == ["colour"] * 6
    assert ans[6:] == [video.TASKS["color"][c] for c in ds["color"]]


class _Tok:
    """A stand-in tokenizer: ids are characters' codes; decode joins them back."""
    def batch_decode(self, gen, skip_special_tokens=True):
        return [" " + "".join(chr(int(t)) for t in row if int(t)) for row in gen]


def test_answer_by_prompt_batches_by_question_and_keeps_the_order(monkeypatch):
    from utils import llava_data
    monkeypatch.setattr(llava_data, "prompt_ids", lambda tok, n, prompt: torch.full((n, len(prompt)), ord(prompt[0])))
    calls = []

    def generate(idx, ids, max_new_tokens, eos_token_id):
        calls.append((list(idx), ids.shape))
        return torch.stack([torch.tensor([ord(str(i)[-1]), int(ids[0, 0])]) for i in idx])   # answer: last digit + q's letter

    questions = ["bb", "a", "bb", "a", "a"]
    out = video.answer_by_prompt(generate, _Tok(), questions, eos_token_id=0)
    assert out == ["0b", "1a", "2b", "3a", "4a"]
    assert calls == [([1, 3, 4], (3, 1)), ([0, 2], (2, 2))]     # one batch per question, one prompt length each


def test_cross_attention_stack_figure_draws_every_block_in_order():
    import matplotlib
    matplotlib.use("Agg")
    from utils import plotting
    layout = video.video_cross_attention_layout(4, video_every=2)
    ax = plotting.plot_cross_attention_stack(layout, 4, {"image": "frames", "video": "resampler"})
    labels = [t.get_text() for t in ax.texts]
    boxes = [t for t in labels if "cross-attention" in t or "decoder layer" in t]
    assert [b.split(":")[0] if "@" in b else b for b in boxes] == [
        "image@0", "decoder layer 0 (frozen)", "video@1", "image@1", "decoder layer 1 (frozen)", "image@2",
        "decoder layer 2 (frozen)", "video@3", "image@3", "decoder layer 3 (frozen)"]
    assert "frames" in labels and "resampler" in labels


def test_video_xattn_script_smoke_mode():
    import subprocess
    import sys
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "scripts/train_video_xattn.py", "--smoke"], cwd=root, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "smoke run: nothing written" in out.stdout
