"""Argument checks shared by the helpers: each refuses a bad value at a public entry point with a `TypeError`
(wrong kind of thing) or `ValueError` (right kind, wrong value) whose message names the argument, what was
expected and what came. Imports no other module of `utils`.
"""
from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np
import torch


def _got(value) -> str:
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return f"{type(value).__module__.split('.')[0]}.{type(value).__name__} of shape {tuple(value.shape)}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def integer(name: str, value, min: int | None = None, max: int | None = None) -> int:
    """`value` as an int (a Python or NumPy integer, not a bool), within [min, max]."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {_got(value)}")
    if (min is not None and value < min) or (max is not None and value > max):
        bounds = f">= {min}" if max is None else f"<= {max}" if min is None else f"in [{min}, {max}]"
        raise ValueError(f"{name} must be an int {bounds}, got {value}")
    return int(value)


def number(name: str, value, min: float | None = None, max: float | None = None, *, strict_min: bool = False) -> float:
    """`value` as a finite float (an int, float or 0-d tensor; never NaN or inf), >= min (> min if strict_min)."""
    if isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim == 0:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {_got(value)}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    if min is not None and (value <= min if strict_min else value < min):
        raise ValueError(f"{name} must be {'>' if strict_min else '>='} {min}, got {value}")
    if max is not None and value > max:
        raise ValueError(f"{name} must be <= {max}, got {value}")
    return value


def tensor(name: str, value, dim: int | tuple[int, ...] | None = None, floating: bool = False,
           finite: bool = False, convert: bool = False) -> torch.Tensor:
    """A torch.Tensor with `dim` dimensions (one of them, for a tuple). NumPy arrays are converted when
    `convert`, refused with a hint otherwise. `floating` asks for float samples, `finite` refuses NaN and inf."""
    if isinstance(value, np.ndarray) and convert:
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor):
        hint = " (convert it with torch.from_numpy)" if isinstance(value, np.ndarray) else ""
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}{hint}")
    dims = (dim,) if isinstance(dim, int) else dim
    if dims is not None and value.dim() not in dims:
        want = " or ".join(f"{d}-D" for d in dims)
        raise ValueError(f"{name} must be {want}, got shape {tuple(value.shape)}")
    if floating and not value.is_floating_point():
        raise ValueError(f"{name} must hold floats, got dtype {value.dtype}")
    if finite and value.is_floating_point() and not bool(torch.isfinite(value).all()):
        bad = int((~torch.isfinite(value)).sum())
        raise ValueError(f"{name} must be finite, got {bad} NaN or inf value(s) of {value.numel()}")
    return value


def choice(name: str, value, options) -> str:
    """One of `options` (strings)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {tuple(options)}, got {type(value).__name__} {_got(value)}")
    if value not in options:
        raise ValueError(f"{name} must be one of {tuple(options)}, got {value!r}")
    return value


def strings(name: str, value, allow_empty: bool = False) -> list[str]:
    """A list (or tuple) of strings, never one string (which would be read as one item per character)."""
    if isinstance(value, str):
        raise TypeError(f"{name} must be a list of strings, got one string {_got(value)}; wrap it in a list")
    if isinstance(value, (torch.Tensor, np.ndarray)) or not hasattr(value, "__iter__"):
        raise TypeError(f"{name} must be a list of strings, got {type(value).__name__}")
    value = list(value)
    for i, v in enumerate(value):
        if not isinstance(v, str):
            raise TypeError(f"{name}[{i}] must be a string, got {type(v).__name__} {_got(v)}")
    if not value and not allow_empty:
        raise ValueError(f"{name} must not be empty, got []")
    return value


def instance(name: str, value, kind: type | tuple[type, ...]):
    """`value` if it is a `kind`, else a TypeError naming what came."""
    if not isinstance(value, kind):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise TypeError(f"{name} must be a {names}, got {type(value).__name__}")
    return value
