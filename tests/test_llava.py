"""utils.llava against transformers' LlavaForConditionalGeneration (tiny CLIP vision + Llama text configs) with
our projector and LM weights copied in; the splice against masked_scatter; gated cross-attention at gate 0.
Tolerances: splice exact, logits and loss within 1e-5, cross-attention at gate 0 within 1e-6."""
import pytest
import torch
from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration

from utils import llava, lm

torch.set_num_threads(2)
IMG = 4  # the placeholder id, as in the course tokenizer
LM_CFG = dict(vocab_size=64, dim=32, n_layers=3, n_heads=4, n_kv_heads=2, hidden_dim=64, max_seq_len=96)


class HFTower(torch.nn.Module):
    """transformers' CLIPVisionModel behind our tower interface: `hidden_states(images)` -> list of (B, 1+N, D_v)."""

    def __init__(self, clip_vision):
        super().__init__()
        self.model, self.image_size = clip_vision, clip_vision.config.image_size

    def hidden_states(self, images):
        return list(self.model(pixel_values=images, output_hidden_states=True).hidden_states)


def tiny_lm(seed=0):
    torch.manual_seed(seed)
    return lm.LM(lm.LMConfig(**LM_CFG)).eval()


def ids_with_placeholders(B, L, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, LM_CFG["vocab_size"], (B, L), generator=g)
    positions = torch.randint(0, L, (B,), generator=g)
    positions[0] = 0  # first position in one row, last in another
    if B > 1:
        positions[1] = L - 1
    ids[torch.arange(B), positions] = IMG
    return ids


def hf_llava(ours: llava.TinyLlava, tower_cfg: CLIPVisionConfig, clip_vision) -> LlavaForConditionalGeneration:
    text_cfg = lm.to_llama(ours.language_model).config
    cfg = LlavaConfig(vision_config=tower_cfg, text_config=text_cfg, image_token_id=IMG, projector_hidden_act="gelu",
                      vision_feature_layer=ours.cfg.vision_feature_layer, multimodal_projector_bias=True,
                      vision_feature_select_strategy=ours.cfg.vision_feature_select_strategy)
    ref = LlavaForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        ref.model.vision_tower.load_state_dict(clip_vision.state_dict())
        ref.model.multi_modal_projector.load_state_dict(ours.multi_modal_projector.state_dict(), strict=False)
        lm_state = {k: v for k, v in ours.language_model.state_dict().items() if k != "lm_head.weight"}
        ref.model.language_model.load_state_dict(lm_state)
        ref.lm_head.weight.copy_(ours.language_model.lm_head.weight)
    return ref


def expand_placeholders(ids, n):
    """transformers' Llava wants the placeholder repeated N times (one per image feature)."""
    rows = [torch.cat([torch.full((n,), IMG) if t == IMG else t[None] for t in row]) for row in ids]
    return torch.stack(rows)


@pytest.fixture(params=[(-2, "default"), ([-3, -1], "full")], ids=["layer-2-default", "layers-3-1-full"])
def models(request):
    layer, strategy = request.param
    torch.manual_seed(1)
    tower_cfg = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=2,
                                 image_size=16, patch_size=4, projection_dim=16)
    from transformers import CLIPVisionModel
    clip_vision = CLIPVisionModel(tower_cfg).eval()
    cfg = llava.TinyLlavaConfig(connector="mlp2x_gelu", vision_feature_layer=layer, image_token_id=IMG,
                                vision_feature_select_strategy=strategy)
    ours = llava.TinyLlava(cfg, tiny_lm(), vision_tower=HFTower(clip_vision)).eval()
    return ours, hf_llava(ours, tower_cfg, clip_vision)


def test_splice_equals_masked_scatter():
    torch.manual_seed(0)
    B, L, N, D = 3, 7, 5, 8
    ids = ids_with_placeholders(B, L)
    emb = torch.nn.Embedding(64, D)
    feats = torch.randn(B, N, D)
    labels = ids.clone()
    out, out_labels = llava.splice_image_features(ids, emb(ids), feats, IMG, labels)
    expanded = expand_placeholders(ids, N)
    mask = (expanded == IMG)[..., None].expand(-1, -1, D)
    ref = emb(expanded).masked_scatter(mask, feats)
    assert out.shape == (B, L - 1 + N, D)
    torch.testing.assert_close(out, ref, atol=0, rtol=0)
    assert torch.equal(out_labels, expanded.masked_fill(expanded == IMG, llava.IGNORE_INDEX))
    assert llava.splice_image_features(ids, emb(ids), feats, IMG)[1] is None


def test_forward_equals_transformers_llava(models):
    ours, ref = models
    B, L = 2, 9
    ids = ids_with_placeholders(B, L, seed=3)
    pixels = torch.randn(B, 3, 16, 16)
    labels = ids.clone()
    labels[:, :2] = lm.IGNORE_INDEX
    with torch.no_grad():
        out = ours(pixels, ids, labels=labels)
        N = out.image_features.shape[1]
        theirs = ref(input_ids=expand_placeholders(ids, N), pixel_values=pixels, labels=out.labels)
    assert out.logits.shape == (B, L - 1 + N, LM_CFG["vocab_size"])
    torch.testing.assert_close(out.logits, theirs.logits, atol=1e-5, rtol=0)
    assert abs(out.loss.item() - theirs.loss.item()) <= 1e-5
    hf_feats = ref.model.get_image_features(pixel_values=pixels).pooler_output
    torch.testing.assert_close(out.image_features, torch.stack(list(hf_feats)), atol=1e-6, rtol=0)


def test_greedy_generation_equals_transformers_llava(models):
    ours, ref = models
    ids = ids_with_placeholders(2, 6, seed=4)
    pixels = torch.randn(2, 3, 16, 16)
    mine = ours.generate(pixels, ids, max_new_tokens=8)
    N = ours.get_image_features(pixels).shape[1]
    expanded = expand_placeholders(ids, N)
    theirs = ref.generate(input_ids=expanded, pixel_values=pixels, max_new_tokens=8, do_sample=False,
                          pad_token_id=0)[:, expanded.shape[1]:]
    assert torch.equal(mine, theirs)


def test_linear_connector_and_frozen_shipped_tower():
    cfg = llava.TinyLlavaConfig(connector="linear", vision_feature_select_strategy="cls")
    model = llava.TinyLlava(cfg, tiny_lm())  # the shipped tiny CLIP image tower (data/checkpoints/clip_minilm)
    assert isinstance(model.multi_modal_projector, torch.nn.Linear)
    assert all(not p.requires_grad for p in model.vision_tower.parameters())
    model.train()
    assert not model.vision_tower.training and model.language_model.training
    ids = ids_with_placeholders(2, 5, seed=5)
    pixels = torch.rand(2, 3, 32, 32)
    out = model(pixels, ids, labels=ids)
    assert out.logits.shape == (2, 5, 64) and out.image_features.shape == (2, 1, 32)  # CLS only: N = 1
    out.loss.backward()
    assert model.multi_modal_projector.weight.grad is not None
    hidden = model.vision_tower.hidden_states(pixels)
    assert len(hidden) == 5 and hidden[0].shape == (2, 65, 64)  # 64 patches + CLS, width 64
    default = llava.TinyLlava(llava.TinyLlavaConfig(connector="linear"), tiny_lm(), vision_tower=model.vision_tower)
    assert default.get_image_features(pixels).shape == (2, 64, 32)  # 'default' drops CLS


def test_cross_attention_with_gates_at_zero_equals_plain_lm():
    plain = tiny_lm()
    tower = HFTower(__import__("transformers").CLIPVisionModel(CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=16,
        patch_size=4))).eval()
    cfg = llava.TinyLlavaConfig(connector="cross_attention", cross_attention_layers=[0, 2])
    model = llava.TinyLlava(cfg, tiny_lm(), vision_tower=tower).eval()
    assert sorted(model.language_model.inserted) == ["0", "2"]
    ids = ids_with_placeholders(2, 8, seed=6)
    pixels = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        out = model(pixels, ids, labels=ids)
        torch.testing.assert_close(out.logits, plain(ids).logits, atol=1e-6, rtol=0)
        assert abs(out.loss.item() - plain(ids, labels=ids).loss.item()) <= 1e-6
        for block in model.language_model.inserted.values():
            block.attn_gate.fill_(0.5)
            block.ff_gate.fill_(0.5)
        opened = model(pixels, ids).logits
    assert (opened - plain(ids).logits).abs().max() > 1e-4
    cached = model.generate(pixels, ids, max_new_tokens=6)
    assert torch.equal(cached, model.generate(pixels, ids, max_new_tokens=6, use_cache=False))


def test_left_padded_generation_equals_rows_alone():
    cfg = llava.TinyLlavaConfig(connector="mlp2x_gelu")
    tower = HFTower(__import__("transformers").CLIPVisionModel(CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=16,
        patch_size=4))).eval()
    model = llava.TinyLlava(cfg, tiny_lm(), vision_tower=tower).eval()
    a, b = ids_with_placeholders(1, 6, seed=7), ids_with_placeholders(1, 4, seed=8)
    batch = torch.cat([a, torch.cat([torch.zeros(1, 2, dtype=torch.long), b], 1)])
    mask = torch.ones_like(batch)
    mask[1, :2] = 0
    pixels = torch.randn(2, 3, 16, 16)
    out = model.generate(pixels, batch, attention_mask=mask, max_new_tokens=6)
    assert torch.equal(out[0], model.generate(pixels[:1], a, max_new_tokens=6)[0])
    assert torch.equal(out[1], model.generate(pixels[1:], b, max_new_tokens=6)[0])


@pytest.mark.parametrize("case,name", [("none", "input_ids"), ("two", "input_ids"), ("batch", "image_features"),
                                       ("width", "image_features"), ("embeds", "token_embeds"), ("labels", "labels")])
def test_splice_bad_inputs_raise(case, name):
    ids = ids_with_placeholders(2, 6)
    embeds, feats, labels = torch.randn(2, 6, 8), torch.randn(2, 3, 8), None
    if case == "none":
        ids[1, ids[1] == IMG] = 7
    elif case == "two":
        ids[0, 3] = IMG
    elif case == "batch":
        feats = torch.randn(3, 3, 8)
    elif case == "width":
        feats = torch.randn(2, 3, 9)
    elif case == "embeds":
        embeds = torch.randn(2, 5, 8)
    elif case == "labels":
        labels = torch.zeros(2, 7, dtype=torch.long)
    with pytest.raises(ValueError, match=name):
        llava.splice_image_features(ids, embeds, feats, IMG, labels)


@pytest.mark.parametrize("bad,name", [(dict(connector="qformer"), "connector"),
                                      (dict(vision_feature_select_strategy="mean"), "vision_feature_select_strategy"),
                                      (dict(vision_feature_layer=[]), "vision_feature_layer")])
def test_bad_config_raises(bad, name):
    with pytest.raises(ValueError, match=name):
        llava.TinyLlavaConfig(**bad)
