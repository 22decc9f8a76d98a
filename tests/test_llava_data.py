"""utils.llava_data (notebook 06): the label mask of caption rows, the cached-feature paths against
TinyLlava.forward / .generate (logits within 1e-6, the same tokens), and the word-by-word caption scorer."""
import pytest
import torch

from utils import lm, llava, llava_data, shapes
from utils.lm_data import caption, load_tokenizer

torch.set_num_threads(2)


class TinyTower(torch.nn.Module):
    """A random two-layer stand-in for the CLIP tower: hidden_states(images) -> [(B, 1 + N, D_v)] * 3."""

    def __init__(self):
        super().__init__()
        self.image_size, self.patch = 8, torch.nn.Linear(48, 16)
        self.block = torch.nn.Linear(16, 16)

    def hidden_states(self, images):
        B = images.shape[0]
        x = images.unfold(2, 4, 4).unfold(3, 4, 4).permute(0, 2, 3, 1, 4, 5).reshape(B, 4, 48)  # (B, N, 48)
        x = torch.cat([torch.zeros(B, 1, 48), x], 1)
        h0 = self.patch(x)
        return [h0, torch.tanh(self.block(h0)), torch.tanh(self.block(h0)) * 2]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


def tiny_model(strategy="default"):
    torch.manual_seed(0)
    cfg = lm.LMConfig(vocab_size=512, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=64, max_seq_len=64)
    return llava.TinyLlava(llava.TinyLlavaConfig(vision_feature_select_strategy=strategy), lm.LM(cfg).eval(),
                           vision_tower=TinyTower()).eval()


def test_caption_rows_mask_only_the_answer(tok):
    caps = ["a small red circle in the top left", "a large blue cross on the right"]
    ids, labels = llava_data.caption_rows(tok, caps)
    head = tok(llava_data.prompt_text())["input_ids"]
    assert ids.shape == labels.shape and (ids == 4).sum(1).tolist() == [1, 1]
    for i, c in enumerate(caps):
        answer = labels[i][labels[i] != lm.IGNORE_INDEX]
        assert tok.decode(answer) == c + "<|im_end|>"
        assert (labels[i, :len(head)] == lm.IGNORE_INDEX).all()
        assert ids[i, :len(head)].tolist() == head
    assert (ids[labels == lm.IGNORE_INDEX][len(head) * 2:] == tok.pad_token_id).all()  # the rest is padding
    with pytest.raises(ValueError):
        llava_data.caption_rows(tok, [])


@pytest.mark.parametrize("strategy", ["default", "cls", "full"])
def test_cached_features_equal_tinyllava(tok, strategy):
    model = tiny_model(strategy)
    images = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    ids, labels = llava_data.caption_rows(tok, ["a small red circle", "a large green square at the top", "a x"])
    feats = llava_data.tower_features(model, images, batch_size=2)
    ref = model(images, ids, labels=labels)
    got = llava_data.forward_from_features(model, feats, ids, labels)
    torch.testing.assert_close(got.logits, ref.logits, atol=1e-6, rtol=0)
    torch.testing.assert_close(got.loss, ref.loss, atol=1e-6, rtol=0)
    prompt = llava_data.prompt_ids(tok, 3)
    want = model.generate(images, prompt, max_new_tokens=6)
    assert torch.equal(llava_data.generate_from_features(model, feats, prompt, batch_size=2, max_new_tokens=6), want)


def test_word_accuracy_reads_captions_slot_by_slot():
    objs = [shapes.ShapeObject("circle", "red", "small", 6.0, 6.0), shapes.ShapeObject("cross", "orange", "large", 16.0, 16.0)]
    truth = [caption(o) for o in objs]
    assert truth == ["a small red circle in the top left", "a large orange cross in the center"]
    assert llava_data.word_accuracy(truth, objs) == dict(size=1.0, color=1.0, shape=1.0, position=1.0)
    got = llava_data.word_accuracy(["a small blue circle in the top right", "an orange cross"], objs)
    assert got == dict(size=0.5, color=0.0, shape=0.5, position=0.0)  # an unreadable caption is wrong in every slot
    assert llava_data.parse_caption("a large orange cross in the center") == dict(
        size="large", color="orange", shape="cross", position="in the center")
    with pytest.raises(ValueError):
        llava_data.word_accuracy(["a"], objs)


def test_cached_features_equal_tinyllava_with_cross_attention(tok):
    """The 'cross_attention' connector (notebook 07): nothing is spliced, the gated blocks read the features."""
    torch.manual_seed(0)
    cfg = lm.LMConfig(vocab_size=512, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=64, max_seq_len=64)
    model = llava.TinyLlava(llava.TinyLlavaConfig(connector="cross_attention", cross_attention_layers=[1]),
                            lm.LM(cfg).eval(), vision_tower=TinyTower()).eval()
    with torch.no_grad():  # open the gates, so that the image changes the logits
        for block in model.language_model.inserted.values():
            block.attn_gate.fill_(0.7), block.ff_gate.fill_(-0.4)
    images = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    ids, labels = llava_data.caption_rows(tok, ["a small red circle", "a large green square at the top", "a x"])
    feats = llava_data.tower_features(model, images, batch_size=2)
    ref = model(images, ids, labels=labels)
    got = llava_data.forward_from_features(model, feats, ids, labels)
    assert got.logits.shape[1] == ids.shape[1]  # the placeholder stays one token
    torch.testing.assert_close(got.logits, ref.logits, atol=1e-6, rtol=0)
    torch.testing.assert_close(got.loss, ref.loss, atol=1e-6, rtol=0)
    other = llava_data.forward_from_features(model, feats.flip(0), ids, labels)
    assert (other.logits - got.logits).abs().max() > 1e-3  # the image matters
    prompt = llava_data.prompt_ids(tok, 3)
    want = model.generate(images, prompt, max_new_tokens=6)
    assert torch.equal(llava_data.generate_from_features(model, feats, prompt, batch_size=2, max_new_tokens=6), want)


def test_trim_to_labels_drops_only_columns_without_labels(tok):
    ids, labels = llava_data.prompt_answer_rows(tok, ["What colour?", "Describe the image in many words please."],
                                                ["red", "a small red circle"])
    wide_ids = torch.cat([ids, torch.full((2, 5), tok.pad_token_id)], 1)           # extra all-padding columns
    wide_labels = torch.cat([labels, torch.full((2, 5), lm.IGNORE_INDEX)], 1)
    t_ids, t_labels = llava_data.trim_to_labels(wide_ids, wide_labels)
    last = max(int((row != lm.IGNORE_INDEX).nonzero().max()) for row in labels) + 1
    assert torch.equal(t_ids, ids[:, :last]) and torch.equal(t_labels, labels[:, :last])
    assert t_ids.shape[1] == ids.shape[1]                                            # the longest row keeps its end
    with pytest.raises(ValueError, match="same shape"):
        llava_data.trim_to_labels(ids, labels[:, :-1])
    with pytest.raises(ValueError, match="at least one label"):
        llava_data.trim_to_labels(ids, torch.full_like(labels, lm.IGNORE_INDEX))
