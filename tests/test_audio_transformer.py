"""utils.audio_transformer against transformers' ASTForAudioClassification (tiny configs, copied weights),
the patch grid against that model's embedding, the ViT -> AST initialisation, and DPO against the paper's
formula computed by hand."""
import math

import pytest
import torch
import torch.nn.functional as F

from utils import audio_transformer as at
from utils import lm, vit
from utils.lm import IGNORE_INDEX


# ----------------------------------------------------------------------------- the patch grid
@pytest.mark.parametrize("args, grid", [
    ((128, 98), (12, 9)),            # one second at a 10 ms hop
    ((128, 1024), (12, 101)),        # AudioSet's 10 s: the paper's 12 x 101 = 1212 patches
    ((128, 128), (12, 12)),          # Speech Commands V2 in the paper's recipe
    ((16, 16), (1, 1)),
    ((40, 30, 8, 4, 6), (9, 4)),
])
def test_patch_grid_values(args, grid):
    assert at.ast_patch_grid(*args) == grid


@pytest.mark.parametrize("kw", [
    dict(n_mels=15, n_frames=98), dict(n_mels=128, n_frames=10), dict(n_mels=0, n_frames=98),
    dict(n_mels=128, n_frames=-5), dict(n_mels=128, n_frames=98, patch_size=0),
    dict(n_mels=128, n_frames=98, frequency_stride=0), dict(n_mels=128, n_frames=98, time_stride=-1),
])
def test_patch_grid_refuses_bad_sizes(kw):
    with pytest.raises(ValueError) as e:
        at.ast_patch_grid(**kw)
    bad = [k for k in kw if k in str(e.value)]
    assert bad, str(e.value)


def test_patch_grid_refuses_non_integers():
    with pytest.raises(TypeError, match="n_mels"):
        at.ast_patch_grid(128.0, 98)


# ----------------------------------------------------------------------------- parity with transformers
CONFIGS = [
    dict(n_mels=32, max_length=40, patch_size=8, frequency_stride=4, time_stride=6, dim=32, depth=2, heads=4,
         mlp_dim=48, num_classes=5, layer_norm_eps=1e-12),
    dict(n_mels=128, max_length=98, dim=24, depth=1, heads=3, mlp_dim=40, num_classes=11),
    dict(n_mels=20, max_length=20, patch_size=4, frequency_stride=4, time_stride=4, dim=16, depth=3, heads=2,
         mlp_dim=16, num_classes=3),  # stride = patch: no overlap, like a plain ViT
]


@pytest.mark.parametrize("kw", CONFIGS)
def test_logits_match_transformers(kw):
    torch.manual_seed(0)
    model = at.AST(at.ASTConfig(**kw)).eval()
    with torch.no_grad():  # non-trivial tokens and norms so that every copied tensor matters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    hf = at.to_transformers(model)
    x = torch.randn(3, kw["n_mels"], kw["max_length"])
    with torch.no_grad():
        ours, theirs = model(x), hf(input_values=x.transpose(1, 2)).logits
        hidden = hf.audio_spectrogram_transformer(input_values=x.transpose(1, 2)).last_hidden_state
    assert ours.shape == (3, kw["num_classes"])
    assert (ours - theirs).abs().max().item() < 1e-5
    assert (model.forward_features(x) - hidden).abs().max().item() < 1e-5


@pytest.mark.parametrize("kw", CONFIGS)
def test_patch_grid_agrees_with_the_transformers_embedding(kw):
    model = at.AST(at.ASTConfig(**kw))
    hf = at.to_transformers(model)
    f, t = at.ast_patch_grid(kw["n_mels"], kw["max_length"], kw.get("patch_size", 16),
                             kw.get("frequency_stride", 10), kw.get("time_stride", 10))
    emb = hf.audio_spectrogram_transformer.embeddings
    assert emb.get_shape(hf.config) == (f, t)
    with torch.no_grad():
        out = emb(torch.randn(2, kw["max_length"], kw["n_mels"]))
    assert out.shape == (2, 2 + f * t, kw["dim"]) == model.embed(torch.randn(2, kw["n_mels"], kw["max_length"])).shape


def test_attention_maps_and_bad_inputs():
    model = at.AST(at.ASTConfig(n_mels=32, max_length=40, patch_size=8, dim=16, depth=2, heads=2, mlp_dim=16))
    logits, maps = model(torch.randn(2, 32, 40), return_attention=True)
    f, t = model.cfg.grid
    assert len(maps) == 2 and maps[0].shape == (2, 2, 2 + f * t, 2 + f * t)
    assert torch.allclose(maps[0].sum(-1), torch.ones(2, 2, 2 + f * t), atol=1e-5)
    with pytest.raises(ValueError, match="spectrograms"):
        model(torch.randn(2, 40, 32))        # (B, T, M): transformers' layout, not ours
    with pytest.raises(ValueError, match="spectrograms"):
        model(torch.randn(32, 40))
    with pytest.raises(ValueError, match="spectrograms"):
        model(torch.zeros(2, 32, 40, dtype=torch.long))
    with pytest.raises(ValueError, match="heads"):
        at.ASTConfig(dim=30, heads=4)
    with pytest.raises(ValueError, match="max_length"):
        at.ASTConfig(max_length=8)
    with pytest.raises(ValueError, match="num_classes"):
        at.ASTConfig(num_classes=-1)
    with pytest.raises(TypeError, match="model"):
        at.to_transformers(vit.ViT(vit.ViTConfig()))
    with pytest.raises(ValueError, match="num_classes"):
        at.to_transformers(at.AST(at.ASTConfig(num_classes=0)))


# ----------------------------------------------------------------------------- ImageNet ViT -> AST
def test_interpolate_position_embeddings():
    pos = torch.randn(4 * 3, 5)
    assert torch.equal(at.interpolate_position_embeddings(pos, (4, 3), (4, 3)), pos)  # same grid: unchanged
    # a field linear in the row index stays linear in the row index after bilinear resampling (inside the grid)
    rows = torch.arange(4.0)[:, None, None].expand(4, 4, 2).reshape(16, 2)
    out = at.interpolate_position_embeddings(rows, (4, 4), (8, 4)).reshape(8, 4, 2)
    ref = F.interpolate(rows.T.reshape(1, 2, 4, 4), size=(8, 4), mode="bilinear", align_corners=False)
    assert torch.allclose(out.permute(2, 0, 1), ref[0])
    assert torch.allclose(out[1:7, :, 0].diff(dim=0), torch.full((5, 4), 0.5))
    with pytest.raises(ValueError, match="grid"):
        at.interpolate_position_embeddings(pos, (4, 4), (2, 2))
    with pytest.raises(ValueError, match="new_grid"):
        at.interpolate_position_embeddings(pos, (4, 3), (2,))


def test_init_from_vit_averages_channels_and_copies_blocks():
    torch.manual_seed(0)
    image = vit.ViT(vit.ViTConfig(image_size=32, patch_size=4, dim=32, depth=2, heads=4, mlp_dim=64))
    same_patch = at.AST(at.ASTConfig(n_mels=32, max_length=30, patch_size=4, frequency_stride=4, time_stride=2,
                                     dim=32, depth=2, heads=4, mlp_dim=64))
    at.init_from_vit(same_patch, image)
    conv = vit.linear_to_conv_weight(image.embed.proj.weight, 4, 3)          # (D, 3, 4, 4)
    assert torch.allclose(same_patch.patch_embed.weight[:, 0], (conv[:, 0] + conv[:, 1] + conv[:, 2]) / 3)
    # a grey image through the ViT's projection equals the spectrogram patch through the averaged kernel x 3
    patch = torch.randn(4, 4)
    grey = patch[None].expand(3, 4, 4)
    via_vit = image.embed.proj(vit.patchify(grey[None], 4))[0, 0]
    via_ast = same_patch.patch_embed(patch[None, None] * 3)[0, :, 0, 0]
    assert torch.allclose(via_vit, via_ast, atol=1e-5)
    for a, b in zip(same_patch.blocks, image.blocks):
        for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
            assert ka == kb and torch.equal(va, vb)
    assert torch.equal(same_patch.cls_token, image.embed.cls_token)
    assert torch.equal(same_patch.distillation_token, image.embed.cls_token)
    pos = same_patch.pos_embed[0]
    assert torch.equal(pos[0], image.embed.pos_embed[0, 0]) and torch.equal(pos[1], image.embed.pos_embed[0, 0])
    expected = at.interpolate_position_embeddings(image.embed.pos_embed[0, 1:], (8, 8), same_patch.cfg.grid)
    assert torch.allclose(pos[2:], expected)
    # 16 x 16 patches from a 4 x 4 ViT: the kernel is resized and a flat patch gives the same response
    big = at.AST(at.ASTConfig(n_mels=32, max_length=40, dim=32, depth=2, heads=4, mlp_dim=64))
    at.init_from_vit(big, image)
    flat = torch.ones(1, 1, 16, 16)
    assert torch.allclose(big.patch_embed(flat)[0, :, 0, 0],
                          same_patch.patch_embed(torch.ones(1, 1, 4, 4))[0, :, 0, 0], atol=1e-5)


def test_init_from_vit_refuses_mismatched_models():
    image = vit.ViT(vit.ViTConfig(dim=32, depth=2, heads=4, mlp_dim=64))
    with pytest.raises(ValueError, match="vit must have"):
        at.init_from_vit(at.AST(at.ASTConfig(dim=64, depth=2, heads=4, mlp_dim=64)), image)
    with pytest.raises(ValueError, match="vit must have"):
        at.init_from_vit(at.AST(at.ASTConfig(dim=32, depth=3, heads=4, mlp_dim=64)), image)
    shallow = at.init_from_vit(at.AST(at.ASTConfig(dim=32, depth=1, heads=4, mlp_dim=64)), image)  # first block
    assert torch.equal(shallow.blocks[0].mlp[0].weight, image.blocks[0].mlp[0].weight)
    with pytest.raises(TypeError, match="vit"):
        at.init_from_vit(at.AST(at.ASTConfig()), "vit")


# ----------------------------------------------------------------------------- audio into the LM
def test_audio_lm_shapes_and_splice():
    torch.manual_seed(0)
    tower = at.AST(at.ASTConfig(n_mels=32, max_length=40, patch_size=8, frequency_stride=8, time_stride=8,
                                dim=16, depth=1, heads=2, mlp_dim=16, num_classes=0))
    language_model = lm.LM(lm.LMConfig.preset("tiny"))
    model = at.AudioLM(tower, language_model, audio_token_id=4).eval()
    windows = torch.randn(2, 3, 32, 40)                                       # (B, W, M, T)
    f, t = tower.cfg.grid                                                     # (4, 5): 5 columns -> 2 pooled
    feats = model.get_audio_features(windows)
    assert feats.shape == (2, 3 * (1 + t // 2), 32)
    # by hand: window 1 of row 0: CLS and distillation averaged, then frequency-averaged patch tokens with pairs
    # of columns averaged, projected
    out = tower.forward_features(windows[0, 1:2])[0]
    tok = out[2:].reshape(f, t, -1).mean(0)                                   # (t, D)
    pooled = torch.stack([(out[0] + out[1]) / 2, tok[0:2].mean(0), tok[2:4].mean(0)])
    assert torch.allclose(feats[0, 3:6], model.multi_modal_projector(pooled), atol=1e-5)
    assert torch.allclose(model.get_audio_features(model.encode(windows)), feats)
    ids = torch.tensor([[1, 4, 7, 8], [1, 9, 4, 8]])
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 8], [IGNORE_INDEX] * 3 + [8]])
    out = model(windows, ids, labels)
    assert out.logits.shape == (2, 4 - 1 + 9, 128) and out.loss.dim() == 0
    gen = model.generate(windows, ids, max_new_tokens=3)
    assert gen.shape[0] == 2 and gen.shape[1] <= 3
    with pytest.raises(ValueError, match="windows"):
        model.get_audio_features(torch.randn(2, 32, 40))
    with pytest.raises(ValueError, match="stride"):
        at.pool_time(torch.randn(1, 1, 4), 2)
    with pytest.raises(TypeError, match="audio_tower"):
        at.AudioLM(language_model, language_model, 4)


def test_instruction_rows():
    tok = lm.load_pretrained("lm_shapes")[1]
    ids, labels = at.instruction_rows(tok, ["What was said?", "Is it a direction?"], ["go left", "yes"])
    end = tok.convert_tokens_to_ids("<|im_end|>")
    for row, lab, answer in zip(ids, labels, ["go left", "yes"]):
        kept = lab[lab != IGNORE_INDEX].tolist()
        assert kept == tok(answer)["input_ids"] + [end]
        assert (row == tok.convert_tokens_to_ids("<image>")).sum() == 1
    with pytest.raises(ValueError, match="same length"):
        at.instruction_rows(tok, ["a"], ["b", "c"])
    with pytest.raises(TypeError, match="prompts"):
        at.instruction_rows(tok, "What was said?", ["go"])


# ----------------------------------------------------------------------------- DPO
def test_sequence_logprob_by_hand():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 3, 1, 6], [IGNORE_INDEX, 2, 2, IGNORE_INDEX, IGNORE_INDEX]])
    want = []
    for b in range(2):
        total = 0.0
        for i in range(1, 5):
            if labels[b, i] != IGNORE_INDEX:  # position i - 1 predicts token i
                z = logits[b, i - 1].tolist()
                total += z[labels[b, i]] - math.log(sum(math.exp(v) for v in z))
        want.append(total)
    assert torch.allclose(at.sequence_logprob(logits, labels), torch.tensor(want), atol=1e-5)
    with pytest.raises(ValueError, match="labels"):
        at.sequence_logprob(logits, labels[:, :4])


def test_dpo_loss_equals_the_papers_formula_by_hand():
    # Rafailov et al. (2023), eq. 7: -log sigma(beta log(pi(yw)/ref(yw)) - beta log(pi(yl)/ref(yl)))
    pc, pr, rc, rr, beta = [-1.0, -4.0], [-3.0, -2.0], [-2.0, -3.0], [-2.0, -2.5], 0.1
    want = []
    for i in range(2):
        z = beta * ((pc[i] - rc[i]) - (pr[i] - rr[i]))   # 0.2 and -0.15
        want.append(math.log(1 + math.exp(-z)))          # -log sigma(z)
    got = at.dpo_loss(*(torch.tensor(v) for v in (pc, pr, rc, rr)), beta=beta)
    assert abs(got.item() - sum(want) / 2) < 1e-6
    assert abs(want[0] - 0.5981388693) < 1e-9            # log(1 + e^-0.2)
    # policy = reference: every margin is 0 and the loss is log 2, whatever beta
    same = torch.tensor([-1.0, -2.0, -3.0])
    assert abs(at.dpo_loss(same, same - 1, same, same - 1, beta=0.5).item() - math.log(2)) < 1e-6
    # the gradient pushes the chosen answer up and the rejected one down
    chosen, rejected = torch.tensor([-2.0], requires_grad=True), torch.tensor([-2.0], requires_grad=True)
    at.dpo_loss(chosen, rejected, torch.tensor([-2.0]), torch.tensor([-2.0])).backward()
    assert chosen.grad.item() < 0 < rejected.grad.item()


@pytest.mark.parametrize("args, kw, name", [
    ((torch.zeros(2), torch.zeros(3), torch.zeros(2), torch.zeros(2)), {}, "policy_rejected_logps"),
    ((torch.zeros(2), torch.zeros(2), torch.zeros(2, 1), torch.zeros(2)), {}, "reference_chosen_logps"),
    ((torch.zeros(2), torch.zeros(2), torch.zeros(2), torch.tensor([0.0, float("nan")])), {}, "reference_rejected"),
    ((torch.zeros(2), torch.zeros(2), torch.zeros(2), torch.zeros(2)), {"beta": 0.0}, "beta"),
    ((torch.zeros(2, dtype=torch.long), torch.zeros(2), torch.zeros(2), torch.zeros(2)), {}, "policy_chosen_logps"),
])
def test_dpo_loss_refuses_bad_inputs(args, kw, name):
    with pytest.raises(ValueError, match=name):
        at.dpo_loss(*args, **kw)


def test_online_loader_on_a_tiny_local_ast(tmp_path):
    """The online section's code (load_hf_ast, hf_ast_predict) on a tiny AST saved locally."""
    from transformers import ASTConfig as HFASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    labels = ["yes", "no", "up"]
    cfg = HFASTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                      num_mel_bins=128, max_length=98, num_labels=3, id2label=dict(enumerate(labels)),
                      label2id={w: i for i, w in enumerate(labels)})
    ASTForAudioClassification(cfg).save_pretrained(tmp_path)
    ASTFeatureExtractor(max_length=98).save_pretrained(tmp_path)
    model, fe = at.load_hf_ast(str(tmp_path), revision=None)
    waves = torch.randn(2, 16000) * 0.1
    got = at.hf_ast_predict(model, fe, waves)
    inputs = fe([w.numpy() for w in waves], sampling_rate=16000, return_tensors="pt")
    assert inputs["input_values"].shape == (2, 98, 128)
    with torch.no_grad():
        want = [labels[int(i)] for i in model(**inputs).logits.argmax(-1)]
    assert got == want and set(got) <= set(labels)
    with pytest.raises(ValueError, match="waveforms"):
        at.hf_ast_predict(model, fe, torch.randn(16000))


def test_online_ast_is_pinned_to_a_commit():
    """The Hub model is pinned to a full commit hash, not a branch that can move."""
    import re

    assert at.AST_HUB_ID == "MIT/ast-finetuned-speech-commands-v2"
    assert re.fullmatch(r"[0-9a-f]{40}", at.AST_REVISION), at.AST_REVISION
