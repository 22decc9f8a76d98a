"""Environment: seeding, threads, device, Colab and offline detection (used by every notebook)."""
from __future__ import annotations

import os
import random
import socket
import sys
import threading

import numpy as np
import torch

DEFAULT_THREADS = 2  # the course's reference machine has 2 cores; a fixed count keeps timings comparable


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and torch; return a `torch.Generator` seeded the same way for explicit sampling."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def set_threads(n: int | None = None) -> int:
    """Fix torch's intra-op thread count (default: min(cores, 2)) so runs are reproducible; return it."""
    n = n or min(os.cpu_count() or 1, DEFAULT_THREADS)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    torch.set_num_threads(n)
    return n


def pick_device(prefer: str | None = None) -> torch.device:
    """Choose the device once: `prefer` if given, else cuda, then mps, then cpu."""
    if prefer is not None:
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


IN_COLAB = "google.colab" in sys.modules


def is_online(host: str = "huggingface.co", port: int = 443, timeout: float = 2.0) -> bool:
    """True when the Hugging Face Hub is reachable; answers within `timeout` seconds.

    Respects `HF_HUB_OFFLINE=1` (and `TRANSFORMERS_OFFLINE=1`) without touching the network.
    """
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in {"1", "true", "yes", "on"}:
            return False
    result: list[bool] = []

    def probe() -> None:  # in a thread, because DNS lookups ignore socket timeouts
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(timeout)
    return bool(result and result[0])


def setup(seed: int = 0, threads: int | None = None) -> torch.device:
    """The notebooks' one-line setup: seed, fix threads, pick the device, and say what was chosen."""
    seed_everything(seed)
    n = set_threads(threads)
    device = pick_device()
    print(f"torch {torch.__version__} | device: {device} | threads: {n} | seed: {seed} | Colab: {IN_COLAB}")
    return device
