"""Progress bars that leave their final state in a saved notebook.

`tqdm.auto` draws an ipywidget in Jupyter; a saved notebook keeps only the widget's first text ("0%| 0/800")
wherever no live kernel renders it (GitHub, nbviewer, Colab before running), and nbclient's widget emulation
is where headless runs stalled. Here the same tqdm bar writes its text into one display output that is
updated in place, so the saved notebook shows the last state ("800/800 [01:05, 12.3it/s, loss=0.123]").
Outside a Jupyter kernel the bar goes to stderr as usual.
"""
from __future__ import annotations

from typing import Iterable

from tqdm import tqdm as _tqdm


def in_jupyter_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


class DisplayFile:
    """A file-like target for tqdm that shows the current bar text in one updatable Jupyter output."""

    encoding = "utf-8"  # lets tqdm draw its unicode bar

    def __init__(self) -> None:
        from IPython.display import display
        self.text = ""
        self.handle = display({"text/plain": ""}, raw=True, display_id=True)

    def write(self, s: str) -> None:
        line = s.replace("\r", "\n").strip().splitlines()
        if line:
            self.text = line[-1]

    def flush(self) -> None:
        if self.handle is not None and self.text:
            self.handle.update({"text/plain": self.text}, raw=True)


def progress(iterable: Iterable | None = None, total: int | None = None, desc: str = "", disable: bool = False,
             mininterval: float = 0.5, **kwargs) -> _tqdm:
    """A tqdm bar over `iterable` (or `total` steps) that keeps its final state in saved notebooks."""
    file = DisplayFile() if in_jupyter_kernel() and not disable else None
    return _tqdm(iterable, total=total, desc=desc, disable=disable, mininterval=mininterval, file=file,
                 dynamic_ncols=False, ncols=100, **kwargs)
