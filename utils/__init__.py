"""Helpers for the "Multimodality II" course notebooks, one module per concept, in notebook order.

Shape legend used in every module: B batch, N tokens/patches, D width, H heads, T frames or time,
F frequency bins, M mel bins, C channels, P patch size.
"""
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"
CACHE_DIR = REPO_ROOT / ".cache"  # outside git: what notebooks train goes here, never over data/
