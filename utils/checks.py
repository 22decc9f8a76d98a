"""Checks: shapes, closeness to a reference with a printed error report, and exercise checkers."""
from __future__ import annotations

from typing import Callable, Sequence

import torch


def check_shape(x: torch.Tensor, shape: Sequence[int | None], name: str = "tensor") -> torch.Tensor:
    """Raise `ValueError` unless `x.shape` matches `shape` (None matches any size); return `x`."""
    if len(x.shape) != len(shape) or any(s is not None and s != d for s, d in zip(shape, x.shape)):
        raise ValueError(f"{name} has shape {tuple(x.shape)}, expected {tuple(shape)}")
    return x


def max_errors(actual: torch.Tensor, expected: torch.Tensor) -> tuple[float, float]:
    """Max absolute and max relative error of `actual` against `expected`."""
    actual, expected = torch.as_tensor(actual).double(), torch.as_tensor(expected).double()
    abs_err = (actual - expected).abs()
    rel_err = abs_err / expected.abs().clamp_min(1e-12)
    return abs_err.max().item(), rel_err.max().item()


def assert_close(actual, expected, atol: float = 1e-5, rtol: float = 0.0, name: str = "value",
                 verbose: bool = True) -> float:
    """Assert |actual - expected| <= atol + rtol |expected| elementwise; print the errors; return max abs error."""
    actual, expected = torch.as_tensor(actual), torch.as_tensor(expected)
    if actual.shape != expected.shape:
        raise AssertionError(f"{name}: shape {tuple(actual.shape)} != expected {tuple(expected.shape)}")
    abs_err, rel_err = max_errors(actual, expected)
    ok = torch.allclose(actual.double(), expected.double(), atol=atol, rtol=rtol)
    if verbose:
        print(f"{name}: max abs error {abs_err:.2e}, max rel error {rel_err:.2e} "
              f"(tolerance atol={atol:g}, rtol={rtol:g}) -> {'OK' if ok else 'FAIL'}")
    if not ok:
        raise AssertionError(f"{name}: max abs error {abs_err:.3e} exceeds atol={atol:g}, rtol={rtol:g}")
    return abs_err


def check_answer(name: str, answer, expected, tol: float = 0.0) -> bool:
    """Check an exercise answer (number, tuple or string) and print a friendly verdict."""
    if isinstance(expected, (int, float)) and not isinstance(expected, bool):
        ok = answer is not None and abs(float(answer) - float(expected)) <= tol
    else:
        ok = answer == expected
    print(f"{name}: {'correct' if ok else f'not yet (got {answer!r})'}")
    return ok


def check_function(name: str, fn: Callable, reference: Callable, cases: Sequence[tuple],
                   atol: float = 1e-6) -> bool:
    """Check a student's function against a reference on argument tuples `cases`."""
    for args in cases:
        try:
            got = fn(*args)
        except NotImplementedError:
            print(f"{name}: not implemented yet")
            return False
        want = reference(*args)
        if torch.as_tensor(got).shape != torch.as_tensor(want).shape or not torch.allclose(
                torch.as_tensor(got).double(), torch.as_tensor(want).double(), atol=atol):
            print(f"{name}: not yet (differs from the reference on a case)")
            return False
    print(f"{name}: correct on {len(cases)} cases")
    return True
