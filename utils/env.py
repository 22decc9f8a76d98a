"""Environment: seeding, threads, device, Colab and offline detection (used by every notebook)."""
from __future__ import annotations

import os
import random
import sys
import threading
import urllib.error
import urllib.request
from numbers import Integral

import numpy as np
import torch

DEFAULT_THREADS = 2  # the course's reference machine has 2 cores; a fixed count keeps timings comparable


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and torch; return a `torch.Generator` seeded the same way for explicit sampling."""
    if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {type(seed).__name__} {seed!r}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def set_threads(n: int | None = None) -> int:
    """Fix torch's intra-op thread count (default: min(cores, 2)) so runs are reproducible; return it."""
    if n is None:
        n = min(os.cpu_count() or 1, DEFAULT_THREADS)
    if isinstance(n, bool) or not isinstance(n, Integral):
        raise TypeError(f"n must be an int >= 1 or None (the default), got {type(n).__name__} {n!r}")
    if n < 1:
        raise ValueError(f"n must be an int >= 1 or None (the default), got {n}")
    n = int(n)
    torch.set_num_threads(n)
    return n


def pick_device(prefer: str | None = None) -> torch.device:
    """Choose the device once: `prefer` if given, else cuda, then mps, then cpu."""
    if prefer is not None:
        if not isinstance(prefer, (str, torch.device)):
            raise TypeError(f"prefer must be a device name such as 'cpu' or 'cuda', got {type(prefer).__name__}")
        try:
            device = torch.device(prefer)
        except RuntimeError as e:
            raise ValueError(f"prefer must be a device name such as 'cpu', 'cuda' or 'mps', got {prefer!r} ({e})") from None
        available = {"cpu": True, "cuda": torch.cuda.is_available(),
                     "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()}
        if not available.get(device.type, True):
            raise ValueError(f"prefer={prefer!r} asks for {device.type}, which this machine does not have")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


IN_COLAB = "google.colab" in sys.modules


HUB_PROBE = "/api/models/sentence-transformers/all-MiniLM-L6-v2"  # a small Hub API answer about a model we pin


def is_online(host: str = "huggingface.co", port: int = 443, timeout: float = 2.0) -> bool:
    """True when the Hugging Face Hub answers an API request within `timeout` seconds.

    A TCP connection is not enough (a proxy or captive portal accepts it and then never answers, and the
    loaders would retry for half a minute): this sends a HEAD request for `HUB_PROBE` to the Hub
    (`HF_ENDPOINT` when set and `host` is the default) and wants a 2xx/3xx answer. The request runs in a
    thread, because DNS lookups ignore socket timeouts. Respects `HF_HUB_OFFLINE=1` (and
    `TRANSFORMERS_OFFLINE=1`) without touching the network.
    """
    if not isinstance(host, str) or not host:
        raise TypeError(f"host must be a host name such as 'huggingface.co', got {host!r}")
    if isinstance(port, bool) or not isinstance(port, Integral) or not 0 < port < 65536:
        raise ValueError(f"port must be an int in [1, 65535], got {port!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < 60:
        raise ValueError(f"timeout must be a number of seconds in (0, 60), got {timeout!r}")
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in {"1", "true", "yes", "on"}:
            return False
    if host == "huggingface.co" and port == 443:
        base = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    else:
        base = f"{'https' if port == 443 else 'http'}://{host}:{port}"
    result: list[bool] = []

    def probe() -> None:
        try:
            request = urllib.request.Request(base + HUB_PROBE, method="HEAD",
                                             headers={"User-Agent": "multimodality-notebooks"})
            with urllib.request.urlopen(request, timeout=timeout) as response:
                result.append(200 <= response.status < 400)
        except (OSError, ValueError, urllib.error.URLError):  # HTTPError (4xx/5xx), timeouts, DNS, refused
            result.append(False)

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(timeout)
    return bool(result and result[0])


def setup(seed: int = 0, threads: int | None = None) -> torch.device:
    """The notebooks' one-line setup: seed, fix threads, pick the device, and say what was chosen."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, Integral) or threads < 1):
        raise ValueError(f"threads must be an int >= 1 or None (the default), got {threads!r}")
    seed_everything(seed)
    n = set_threads(threads)
    device = pick_device()
    print(f"torch {torch.__version__} | device: {device} | threads: {n} | seed: {seed} | Colab: {IN_COLAB}")
    return device
