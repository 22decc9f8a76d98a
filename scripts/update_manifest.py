"""Rewrite data/MANIFEST: the sha256 of every file under data/ (except the manifest itself)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from utils import DATA_DIR, checkpoints  # noqa: E402

files = sorted(p for p in DATA_DIR.rglob("*") if p.is_file() and p.name != "MANIFEST")
checkpoints.write_manifest(files)
print(f"data/MANIFEST lists {len(files)} files")
