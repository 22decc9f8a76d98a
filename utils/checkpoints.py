"""Checkpoints: safetensors weights + a JSON config, and sha256 checks against data/MANIFEST."""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import DATA_DIR, REPO_ROOT

MANIFEST = DATA_DIR / "MANIFEST"
SCRIPTS = REPO_ROOT / "scripts"
# the script that makes a shipped file, by the start of its path (others are found by searching scripts/)
MAKERS = {"data/speech/": "scripts/make_speech_data.py", "data/checkpoints/clip_": "scripts/train_clip.py",
          "data/checkpoints/vit_shapes": "scripts/train_vit_shapes.py",
          "data/checkpoints/smol_assistant": "scripts/train_smol_assistant.py"}
_MANIFESTS: dict[tuple, dict[str, str]] = {}  # the last manifest read, by (path, size, mtime)
_HASHES: dict[tuple, str] = {}  # (path, size, mtime, inode) -> sha256: each shipped file is hashed once per process


def _as_path(name: str, path) -> Path:
    if not isinstance(path, (str, Path)) or (isinstance(path, str) and not path):
        raise TypeError(f"{name} must be a file path (str or Path), got {type(path).__name__} {path!r}")
    return Path(path)


def _rel(path: Path) -> str:
    try:
        return path.resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return path.name


def maker_script(path: str | Path) -> str:
    """The script in scripts/ that makes a shipped file (by MAKERS, else the script that names the file)."""
    rel = _rel(Path(path))
    for prefix, script in MAKERS.items():
        if rel.startswith(prefix):
            return script
    stem = Path(rel).stem
    for script in sorted(SCRIPTS.glob("*.py")):
        if stem and stem in script.read_text(errors="ignore"):
            return script.relative_to(REPO_ROOT).as_posix()
    return "its script in scripts/"


def sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """The sha256 of a file, hex; cached per (path, size, mtime, inode), so a file is read once per process."""
    path = _as_path("path", path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"no file at {_rel(path)}") from None
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def read_manifest(manifest: str | Path | None = None) -> dict[str, str]:
    """{path relative to the repo root: sha256} from a `sha256sum`-style manifest (default: data/MANIFEST)."""
    manifest = _as_path("manifest", MANIFEST if manifest is None else manifest)
    if not manifest.exists():
        raise FileNotFoundError(f"no manifest at {_rel(manifest)}; scripts/update_manifest.py writes it")
    st = manifest.stat()
    key = (str(manifest.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _MANIFESTS:
        _MANIFESTS.clear()
        _MANIFESTS[key] = _parse_manifest(manifest)
    return dict(_MANIFESTS[key])


def _parse_manifest(manifest: Path) -> dict[str, str]:
    out = {}
    for i, line in enumerate(manifest.read_text().splitlines(), 1):
        if line.strip() and not line.startswith("#"):
            parts = line.split(maxsplit=1)
            if len(parts) != 2 or not re.fullmatch(r"[0-9a-f]{64}", parts[0]):
                raise ValueError(f"manifest {manifest.name} line {i} must be '<64 hex digits>  <path>', got {line[:80]!r}")
            out[parts[1].strip()] = parts[0]
    return out


def write_manifest(files: list[str | Path], manifest: str | Path | None = None) -> None:
    """(Re)write the manifest for `files` (paths under the repo root), sorted."""
    if isinstance(files, (str, Path)):
        raise TypeError("files must be a list of paths, got one path; wrap it in a list")
    rows = sorted(f"{sha256(f)}  {Path(f).resolve().relative_to(REPO_ROOT).as_posix()}" for f in files)
    Path(MANIFEST if manifest is None else manifest).write_text("# sha256 of every shipped file; scripts/update_manifest.py rewrites it\n"
                              + "\n".join(rows) + "\n")


def verify_file(path: str | Path, manifest: str | Path | None = None, expected: str | None = None) -> Path:
    """Raise `ValueError` unless `path`'s sha256 equals `expected` or its manifest entry; return the path.

    A missing file raises `FileNotFoundError` naming the script that makes it.
    """
    path = _as_path("path", path).resolve()
    rel = _rel(path)
    if expected is not None and (not isinstance(expected, str) or not re.fullmatch(r"[0-9a-f]{64}", expected)):
        raise ValueError(f"expected must be a sha256 (64 lowercase hex digits), got {expected!r}")
    if not path.is_file():
        raise FileNotFoundError(f"the shipped file {rel} is missing; {maker_script(path)} makes it")
    if expected is None:
        entries = read_manifest(manifest)
        if rel not in entries:
            raise ValueError(f"{rel} is not listed in {Path(manifest or MANIFEST).name}; run scripts/update_manifest.py")
        expected = entries[rel]
    actual = sha256(path)
    if actual != expected:
        raise ValueError(f"sha256 mismatch for {rel}: expected {expected[:16]}..., got {actual[:16]}... "
                         f"(the file is corrupt or was changed; regenerate it with {maker_script(path)})")
    return path


def save_checkpoint(path: str | Path, state_dict: dict[str, torch.Tensor], config: dict) -> Path:
    """Write `path`.safetensors and `path`.json (the config); return the safetensors path."""
    path = _as_path("path", path).with_suffix("")
    if not isinstance(state_dict, dict) or not state_dict:
        raise TypeError(f"state_dict must be a non-empty dict of name -> tensor (model.state_dict()), "
                        f"got {type(state_dict).__name__}")
    for k, v in state_dict.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise TypeError(f"state_dict must map str -> torch.Tensor, got {type(k).__name__} -> {type(v).__name__} at {k!r}")
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict (written as JSON), got {type(config).__name__}")
    try:
        text = json.dumps(config, indent=2, sort_keys=True, allow_nan=False) + "\n"
    except (TypeError, ValueError) as e:
        raise TypeError(f"config must hold only JSON values (str, int, finite float, bool, None, list, dict): {e}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    save_file(tensors, str(path.with_suffix(".safetensors")))
    path.with_suffix(".json").write_text(text)
    return path.with_suffix(".safetensors")


def read_json(path: str | Path, verify: bool | None = None) -> dict:
    """A shipped JSON record (a script's results without weights), checked against data/MANIFEST when under data/."""
    path = _as_path("path", path)
    if verify is None:
        verify = DATA_DIR.resolve() in path.resolve().parents
    if verify:
        verify_file(path)
    elif not path.is_file():
        raise FileNotFoundError(f"{path.name} not found; {maker_script(path)} makes it")
    return _json_object(path)


def _json_object(path: Path, what: str = "a JSON object") -> dict:
    try:
        out = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path.name} is not valid JSON ({e})") from None
    if not isinstance(out, dict):
        raise ValueError(f"{path.name} must hold {what}, got {type(out).__name__}")
    return out


def load_checkpoint(path: str | Path, verify: bool | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Load (state_dict, config). Files under data/ are checked against data/MANIFEST (default)."""
    path = _as_path("path", path).with_suffix("")
    if verify is not None and not isinstance(verify, bool):
        raise TypeError(f"verify must be True, False or None (check files under data/), got {verify!r}")
    weights, config = path.with_suffix(".safetensors"), path.with_suffix(".json")
    for f in (weights, config):
        if not f.exists():
            raise FileNotFoundError(f"checkpoint file {f.name} not found; {maker_script(f)} makes it")
    if verify is None:
        verify = DATA_DIR.resolve() in weights.resolve().parents
    if verify:
        verify_file(weights)
        verify_file(config)
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{weights.name} is not a safetensors file ({e}); checkpoints are written by "
                         f"save_checkpoint") from None
    return state, _json_object(config, "a JSON object (the config)")
