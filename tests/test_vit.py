"""utils.vit against torch references: Conv2d/unfold, SDPA, nn.MultiheadAttention, torchvision ViT."""
import pytest
import torch
import torch.nn.functional as F
from torchvision.models.vision_transformer import VisionTransformer

from utils import vit


@pytest.mark.parametrize("B,C,H,W,P", [(2, 3, 32, 32, 4), (1, 1, 8, 12, 2), (3, 3, 224, 224, 16), (2, 2, 6, 6, 3)])
def test_patchify_matches_unfold_and_order(B, C, H, W, P):
    x = torch.randn(B, C, H, W)
    patches = vit.patchify(x, P)
    assert patches.shape == (B, (H // P) * (W // P), P * P * C)
    # unfold gives (B, C*P*P, N) with (c p1 p2) order; reorder to (p1 p2 c)
    ref = F.unfold(x, kernel_size=P, stride=P).transpose(1, 2).reshape(B, -1, C, P, P)
    ref = ref.permute(0, 1, 3, 4, 2).reshape(B, -1, P * P * C)
    torch.testing.assert_close(patches, ref, rtol=0, atol=0)
    # patch 1 is the second patch of the first row; its first entries are pixel (0, P) over channels
    if W // P > 1:
        torch.testing.assert_close(patches[:, 1, :C], x[:, :, 0, P])
    torch.testing.assert_close(vit.unpatchify(patches, P, (H, W), C), x, rtol=0, atol=0)


def test_patchify_linear_equals_conv2d():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    embed = vit.PatchEmbedding(image_size=32, patch_size=4, channels=3, dim=16, cls_token=False, pos="none")
    conv = torch.nn.Conv2d(3, 16, kernel_size=4, stride=4)
    with torch.no_grad():
        conv.weight.copy_(vit.linear_to_conv_weight(embed.proj.weight, 4, 3))
        conv.bias.copy_(embed.proj.bias)
    ref = conv(x).flatten(2).transpose(1, 2)
    torch.testing.assert_close(embed(x), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("bad", [dict(images=torch.zeros(3, 32, 32), P=4), dict(images=torch.zeros(1, 3, 30, 32), P=4),
                                 dict(images=torch.zeros(1, 3, 32, 30), P=4), dict(images=torch.zeros(1, 3, 32, 32), P=0)])
def test_patchify_bad_inputs(bad):
    with pytest.raises(ValueError, match="images|patch_size"):
        vit.patchify(bad["images"], bad["P"])


def test_patchify_error_names_sizes():
    with pytest.raises(ValueError, match="30"):
        vit.patchify(torch.zeros(1, 3, 30, 32), 4)


def test_unpatchify_bad_inputs():
    with pytest.raises(ValueError, match="patches"):
        vit.unpatchify(torch.zeros(1, 63, 48), 4, (32, 32), 3)
    with pytest.raises(ValueError, match="patches"):
        vit.unpatchify(torch.zeros(63, 48), 4, (32, 32), 3)


@pytest.mark.parametrize("masked", [False, True])
def test_attention_matches_sdpa(masked):
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 4, 7, 8).unbind(0)
    mask = torch.rand(7, 7) > 0.3 if masked else None
    if mask is not None:
        mask[:, 0] = True  # every query sees at least one key
    out, weights = vit.scaled_dot_product_attention(q, k, v, mask=mask)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 7), atol=1e-6, rtol=0)


@pytest.mark.parametrize("fused", [False, True])
def test_multihead_attention_matches_nn_multiheadattention(fused):
    torch.manual_seed(0)
    D, H = 32, 4
    mine = vit.MultiHeadSelfAttention(D, H, fused=fused)
    ref = torch.nn.MultiheadAttention(D, H, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(mine.qkv.weight)
        ref.in_proj_bias.copy_(mine.qkv.bias)
        ref.out_proj.weight.copy_(mine.proj.weight)
        ref.out_proj.bias.copy_(mine.proj.bias)
    x = torch.randn(3, 10, D)
    out_ref, w_ref = ref(x, x, x, need_weights=True, average_attn_weights=False)
    torch.testing.assert_close(mine(x), out_ref, atol=1e-5, rtol=0)
    _, w = mine(x, return_attention=True)
    torch.testing.assert_close(w, w_ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("cfg", [vit.ViTConfig(image_size=32, patch_size=4, dim=32, depth=2, heads=4, mlp_dim=64, num_classes=5),
                                 vit.ViTConfig(image_size=16, patch_size=8, dim=24, depth=1, heads=2, mlp_dim=48, num_classes=3)])
def test_vit_matches_torchvision_with_copied_weights(cfg):
    torch.manual_seed(0)
    ours = vit.ViT(cfg).eval()
    tv = vit.to_torchvision(ours).eval()
    assert isinstance(tv, VisionTransformer)
    x = torch.randn(4, 3, cfg.image_size, cfg.image_size)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x), atol=1e-5, rtol=0)


def test_vit_attention_maps_shape_and_rows_sum_to_one():
    cfg = vit.ViTConfig(image_size=32, patch_size=4, dim=32, depth=2, heads=4, mlp_dim=64, num_classes=5)
    model = vit.ViT(cfg).eval()
    logits, attn = model(torch.randn(2, 3, 32, 32), return_attention=True)
    assert logits.shape == (2, 5) and len(attn) == 2 and attn[0].shape == (2, 4, 65, 65)
    torch.testing.assert_close(attn[0].sum(-1), torch.ones(2, 4, 65))


def test_sincos_embedding_matches_formula():
    emb = vit.sincos_2d_position_embedding(4, 4, 16)  # (N, D)
    assert emb.shape == (16, 16)
    # position (row 1, col 2) -> index 6; first quarter is sin(col * omega)
    omega = 1.0 / (10000 ** (torch.arange(4) / 4))
    torch.testing.assert_close(emb[6, :4], torch.sin(2 * omega))
    torch.testing.assert_close(emb[6, 8:12], torch.sin(1 * omega))
    with pytest.raises(ValueError, match="dim"):
        vit.sincos_2d_position_embedding(4, 4, 10)


def test_config_rejects_bad_sizes():
    with pytest.raises(ValueError, match="image_size"):
        vit.ViTConfig(image_size=30, patch_size=4)
    with pytest.raises(ValueError, match="heads"):
        vit.ViTConfig(dim=30, heads=4)


def test_load_shipped_is_the_checkpoint_with_its_config():
    from utils import DATA_DIR, checkpoints
    state, config = checkpoints.load_checkpoint(DATA_DIR / "checkpoints" / "vit_shapes")
    model = vit.load_shipped()
    assert model.cfg == vit.ViTConfig(**config["model"])
    got = model.state_dict()
    assert set(got) == set(state)
    for k, v in state.items():
        assert torch.equal(got[k], v.to(got[k].dtype)), k
