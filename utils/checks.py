"""Checks: shapes, closeness to a reference with a printed error report, and the exercise checker.

Exercises (every notebook's last section) call `exercise(key, answer, **context)`. The reference answers
live in the repository's `solutions/` package, one module per notebook, and are never printed: the checker
says "not attempted yet" for an untouched stub (`...`, `None`, or a function that raises
`NotImplementedError`), "correct" for a right answer, and for a wrong one what differs (type, length, shape,
size of the error against the tolerance) without giving the answer away.
"""
from __future__ import annotations

import importlib
import math
from typing import Any, Callable, Sequence

import torch

PASS, FAIL, NOT_ATTEMPTED = "correct", "not yet", "not attempted yet"


def check_shape(x: torch.Tensor, shape: Sequence[int | None], name: str = "tensor") -> torch.Tensor:
    """Raise `ValueError` unless `x.shape` matches `shape` (None matches any size); return `x`."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if len(x.shape) != len(shape) or any(s is not None and s != d for s, d in zip(shape, x.shape)):
        raise ValueError(f"{name} has shape {tuple(x.shape)}, expected {tuple(shape)}")
    return x


def max_errors(actual: torch.Tensor, expected: torch.Tensor) -> tuple[float, float]:
    """Max absolute and max relative error of `actual` against `expected` (0.0 for empty tensors)."""
    actual, expected = torch.as_tensor(actual).double(), torch.as_tensor(expected).double()
    if actual.numel() == 0:
        return 0.0, 0.0
    abs_err = (actual - expected).abs()
    rel_err = abs_err / expected.abs().clamp_min(1e-12)
    return abs_err.max().item(), rel_err.max().item()


def _as_numbers(arg: str, value) -> torch.Tensor:
    """A tensor of numbers from a tensor, array, number or nested list; else a ValueError naming `arg`."""
    if value is None or isinstance(value, (str, bytes)):
        raise ValueError(f"{arg} must be a tensor, an array or a number, got {type(value).__name__} {value!r:.40}")
    try:
        return torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"{arg} must be a tensor, an array or a number, got {type(value).__name__} ({e})") from None


def assert_close(actual, expected, atol: float = 1e-5, rtol: float = 0.0, name: str = "value",
                 verbose: bool = True) -> float:
    """Assert |actual - expected| <= atol + rtol |expected| elementwise; print the errors; return max abs error."""
    for arg, tol in (("atol", atol), ("rtol", rtol)):
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not math.isfinite(tol) or tol < 0:
            raise ValueError(f"{arg} must be a finite number >= 0, got {tol!r}")
    actual, expected = _as_numbers("actual", actual), _as_numbers("expected", expected)
    if actual.shape != expected.shape:
        raise AssertionError(f"{name}: shape {tuple(actual.shape)} != expected {tuple(expected.shape)}")
    if actual.numel() == 0:
        raise ValueError(f"{name}: nothing to compare (empty tensors of shape {tuple(actual.shape)})")
    abs_err, rel_err = max_errors(actual, expected)
    ok = torch.allclose(actual.double(), expected.double(), atol=atol, rtol=rtol)
    if verbose:
        print(f"{name}: max abs error {abs_err:.2e}, max rel error {rel_err:.2e} "
              f"(tolerance atol={atol:g}, rtol={rtol:g}) -> {'OK' if ok else 'FAIL'}")
    if not ok:
        raise AssertionError(f"{name}: max abs error {abs_err:.3e} exceeds atol={atol:g}, rtol={rtol:g}")
    return abs_err


# ----------------------------------------------------------------------------------------------------------
# exercises

def _untouched(answer: Any) -> bool:
    if answer is None or answer is Ellipsis:
        return True
    if isinstance(answer, (tuple, list)) and not isinstance(answer, str):
        return any(_untouched(a) for a in answer)
    return False


def compare_values(got: Any, want: Any, atol: float = 0.0, rtol: float = 0.0, what: str = "your answer") -> str | None:
    """None when `got` matches `want` within the tolerance, else a message that does not reveal `want`.

    Numbers: |got - want| <= atol + rtol |want|; strings: equal after stripping and lower-casing; tuples and
    lists item by item; dicts key by key; tensors and arrays by shape, then elementwise.
    """
    if isinstance(want, str):
        if not isinstance(got, str):
            return f"{what} should be text (a str), got {type(got).__name__}"
        return None if got.strip().lower() == want.strip().lower() else f"{what} {got!r} is not right"
    if isinstance(want, bool):
        if not isinstance(got, bool):
            return f"{what} should be True or False, got {type(got).__name__}"
        return None if got == want else f"{what} {got!r} is not right"
    if isinstance(want, (int, float)):
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        if isinstance(got, bool) or not isinstance(got, (int, float)) and not hasattr(got, "__float__"):
            return f"{what} should be a number, got {type(got).__name__}"
        got = float(got)
        if math.isnan(got):
            return f"{what} is NaN"
        if abs(got - float(want)) <= atol + rtol * abs(float(want)):
            return None
        tol = f" (accepted tolerance: ±{atol + rtol * abs(float(want)):.3g})" if atol or rtol else " (an exact number is expected)"
        return f"{what} {got:.6g} is not right{tol}"
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return f"{what} should be a dict, got {type(got).__name__}"
        if set(got) != set(want):
            return f"{what} should have the keys {sorted(want)}, got {sorted(got)}"
        for k in want:
            msg = compare_values(got[k], want[k], atol, rtol, f"{what}[{k!r}]")
            if msg:
                return msg
        return None
    if isinstance(want, (tuple, list)):
        if not isinstance(got, (tuple, list)):
            return f"{what} should be a tuple of {len(want)} items, got {type(got).__name__}"
        if len(got) != len(want):
            return f"{what} should have {len(want)} items, got {len(got)}"
        for i, (g, w) in enumerate(zip(got, want)):
            msg = compare_values(g, w, atol, rtol, f"item {i + 1} of {what}")
            if msg:
                return msg
        return None
    want_t = torch.as_tensor(want)
    try:
        got_t = torch.as_tensor(got)
    except (TypeError, ValueError, RuntimeError):
        return f"{what} should be a tensor, got {type(got).__name__}"
    if got_t.shape != want_t.shape:
        return f"{what} has shape {tuple(got_t.shape)}, expected shape {tuple(want_t.shape)}"
    if got_t.is_floating_point() or want_t.is_floating_point():
        got_d, want_d = got_t.double(), want_t.double()
        if torch.isnan(got_d).any():
            return f"{what} contains NaN"
        if torch.allclose(got_d, want_d, atol=atol, rtol=rtol):
            return None
        abs_err, _ = max_errors(got_d, want_d)
        return f"{what} differs: max abs error {abs_err:.3g} > tolerance atol={atol:g}, rtol={rtol:g}"
    if torch.equal(got_t, want_t):
        return None
    return f"{what} differs in {(got_t != want_t).sum().item()} of {want_t.numel()} entries"


def _library_function(answer: Any, reference: Callable) -> str | None:
    """The name of the course function `answer` is (the reference itself, a function with the reference's code,
    or any function of `utils`), or None for the student's own."""
    code = getattr(answer, "__code__", None)
    if answer is reference or (code is not None and code is getattr(reference, "__code__", None)):
        return f"the reference `{getattr(reference, '__qualname__', 'function')}`"
    module = getattr(answer, "__module__", None) or ""
    if module == "utils" or module.startswith("utils."):
        return f"the course's `{module}.{getattr(answer, '__qualname__', '')}`"
    return None


def grade(ex, answer: Any, context: dict | None = None) -> tuple[str, str]:
    """Grade `answer` against the exercise `ex` (a `solutions.Exercise`): (PASS | FAIL | NOT_ATTEMPTED, message)."""
    context = context or {}
    if ex.kind == "value":
        if _untouched(answer):
            return NOT_ATTEMPTED, "replace the ... with your answer and run the cell again"
        msg = compare_values(answer, ex.expected(**context), ex.atol, ex.rtol)
        return (PASS, "well done") if msg is None else (FAIL, msg)
    if ex.kind != "function":
        raise ValueError(f"exercise kind must be 'value' or 'function', got {ex.kind!r}")
    if not callable(answer):
        if _untouched(answer):
            return NOT_ATTEMPTED, "write the function and run the cell again"
        return FAIL, f"the answer should be a function, got {type(answer).__name__}"
    given = _library_function(answer, ex.expected)
    if given:
        return FAIL, f"that is {given} itself: write the function yourself (the check compares against it)"
    cases = ex.cases(**context)
    for i, args in enumerate(cases, 1):
        try:
            got = answer(*args)
        except NotImplementedError:
            return NOT_ATTEMPTED, "replace `raise NotImplementedError` with your code and run the cell again"
        except Exception as err:  # the student's code failed: say how, on which case
            return FAIL, f"case {i} of {len(cases)} raised {type(err).__name__}: {err}"
        if got is None or got is Ellipsis:
            return NOT_ATTEMPTED, "your function returns nothing yet"
        msg = compare_values(got, ex.expected(*args), ex.atol, ex.rtol, what="the result")
        if msg:
            return FAIL, f"case {i} of {len(cases)}: {msg}"
    return PASS, f"right on all {len(cases)} test cases"


def exercise(key: str, answer: Any, **context) -> bool | None:
    """Check an exercise answer against the reference in `solutions/` and print one line.

    Args:
        key: the exercise's name, "NN.name" (NN = the notebook number).
        answer: the student's value (number, string, tuple, tensor) or function.
        **context: what the reference needs from the notebook (a model, a data set), passed by the cell.
    Returns:
        True (correct), False (not yet) or None (not attempted).
    """
    solutions = importlib.import_module("solutions")
    if key not in solutions.REGISTRY:
        raise ValueError(f"unknown exercise key {key!r}; known: {sorted(solutions.REGISTRY)}")
    status, message = grade(solutions.REGISTRY[key], answer, context)
    print(f"Exercise {key}: {status} - {message}")
    return {PASS: True, FAIL: False, NOT_ATTEMPTED: None}[status]
