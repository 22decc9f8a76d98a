"""Checkpoints: safetensors weights + a JSON config, and sha256 checks against data/MANIFEST."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from . import DATA_DIR, REPO_ROOT

MANIFEST = DATA_DIR / "MANIFEST"


def sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_manifest(manifest: str | Path = MANIFEST) -> dict[str, str]:
    """{path relative to the repo root: sha256} from a `sha256sum`-style manifest."""
    out = {}
    for line in Path(manifest).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            digest, rel = line.split(maxsplit=1)
            out[rel.strip()] = digest
    return out


def write_manifest(files: list[str | Path], manifest: str | Path = MANIFEST) -> None:
    """(Re)write the manifest for `files` (paths under the repo root), sorted."""
    rows = sorted(f"{sha256(f)}  {Path(f).resolve().relative_to(REPO_ROOT).as_posix()}" for f in files)
    Path(manifest).write_text("# sha256 of every shipped file; scripts/update_manifest.py rewrites it\n"
                              + "\n".join(rows) + "\n")


def verify_file(path: str | Path, manifest: str | Path = MANIFEST, expected: str | None = None) -> Path:
    """Raise `ValueError` unless `path`'s sha256 equals `expected` or its manifest entry; return the path."""
    path = Path(path).resolve()
    try:
        rel = path.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        rel = path.name
    if expected is None:
        entries = read_manifest(manifest)
        if rel not in entries:
            raise ValueError(f"{rel} is not listed in {Path(manifest).name}; run scripts/update_manifest.py")
        expected = entries[rel]
    actual = sha256(path)
    if actual != expected:
        raise ValueError(f"sha256 mismatch for {rel}: expected {expected[:16]}..., got {actual[:16]}... "
                         f"(the file is corrupt or was changed; regenerate it with its script in scripts/)")
    return path


def save_checkpoint(path: str | Path, state_dict: dict[str, torch.Tensor], config: dict) -> Path:
    """Write `path`.safetensors and `path`.json (the config); return the safetensors path."""
    path = Path(path).with_suffix("")
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    save_file(tensors, str(path.with_suffix(".safetensors")))
    path.with_suffix(".json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return path.with_suffix(".safetensors")


def load_checkpoint(path: str | Path, verify: bool | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Load (state_dict, config). Files under data/ are checked against data/MANIFEST (default)."""
    path = Path(path).with_suffix("")
    weights, config = path.with_suffix(".safetensors"), path.with_suffix(".json")
    for f in (weights, config):
        if not f.exists():
            raise FileNotFoundError(f"checkpoint file {f.name} not found; its script in scripts/ makes it")
    if verify is None:
        verify = DATA_DIR.resolve() in weights.resolve().parents
    if verify:
        verify_file(weights)
        verify_file(config)
    return load_file(str(weights)), json.loads(config.read_text())
