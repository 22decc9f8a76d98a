"""Reference answers of the notebooks' exercises, outside the notebooks (never printed by the checker).

Each notebook's module (`nb01.py`, `nb02.py`, ...) registers its exercises with `register`. An exercise is
either a *value* (a number, text, tuple or tensor the student derives; `expected(**context)` computes the
right one, `solution(**context)` is how a student would get it) or a *function* (the student writes it;
`expected(*args)` is the reference implementation, `solution` an independent model answer, `cases(**context)`
the argument tuples it is tested on). `wrong` lists answers that must fail (CI checks it:
tests/test_exercises.py). Open these files after you tried.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence


@dataclass
class Exercise:
    key: str                                     # "NN.name": notebook number and exercise name
    kind: str                                    # "value" or "function"
    expected: Callable[..., Any]                 # value: expected(**context); function: the reference fn
    solution: Any                                # value: solution(**context) -> answer; function: a model fn
    cases: Callable[..., list] | None = None     # function: cases(**context) -> list of argument tuples
    atol: float = 0.0                            # absolute tolerance for numbers and float tensors
    rtol: float = 0.0                            # relative tolerance
    wrong: Sequence[Any] = ()                    # answers (values or functions) that must be graded wrong
    test_context: Callable[[], dict] | None = None  # a small context for CI, when the exercise needs one
    notes: str = field(default="")               # what the exercise teaches (for instructors)


REGISTRY: dict[str, Exercise] = {}
NOTEBOOK_MODULES = ("nb01", "nb02", "nb03", "nb04", "nb05", "nb06", "nb07", "nb08", "nb09", "nb10")


def register(ex: Exercise) -> Exercise:
    if ex.key in REGISTRY:
        raise ValueError(f"exercise {ex.key!r} is registered twice")
    if ex.kind == "function" and ex.cases is None:
        raise ValueError(f"exercise {ex.key!r}: a function exercise needs cases")
    REGISTRY[ex.key] = ex
    return ex


for _name in NOTEBOOK_MODULES:
    try:
        importlib.import_module(f"{__name__}.{_name}")
    except ModuleNotFoundError as err:
        if err.name != f"{__name__}.{_name}":
            raise
