"""Every exercise's reference solution passes its checker, its deliberately wrong answers fail, an untouched
stub reads "not attempted yet", and no notebook shows an answer before the student tries."""
import re

import pytest

from solutions import REGISTRY
from utils import REPO_ROOT, checks

SOURCES = sorted((REPO_ROOT / "notebooks" / "src").glob("[0-9][0-9]_*.py"))
KEYS = sorted(REGISTRY)


def context_of(ex):
    return ex.test_context() if ex.test_context else {}


@pytest.fixture(scope="module")
def contexts():
    cache = {}

    def get(ex):
        if ex.test_context not in cache:
            cache[ex.test_context] = context_of(ex)
        return cache[ex.test_context]
    return get


def solution_answer(ex, context):
    return ex.solution(**context) if ex.kind == "value" else ex.solution


@pytest.mark.parametrize("key", KEYS)
def test_reference_solution_passes(key, contexts):
    ex = REGISTRY[key]
    status, message = checks.grade(ex, solution_answer(ex, contexts(ex)), contexts(ex))
    assert status == checks.PASS, f"{key}: {message}"


@pytest.mark.parametrize("key", KEYS)
def test_wrong_answers_fail_and_stubs_are_not_attempted(key, contexts):
    ex = REGISTRY[key]
    ctx = contexts(ex)
    assert len(ex.wrong) >= 1, f"{key} lists no wrong answer to prove its checker can fail"
    for wrong in ex.wrong:
        status, message = checks.grade(ex, wrong, ctx)
        assert status == checks.FAIL, f"{key}: wrong answer {wrong!r} was graded {status}"
    stub = ... if ex.kind == "value" else (lambda *a: (_ for _ in ()).throw(NotImplementedError()))
    assert checks.grade(ex, stub, ctx)[0] == checks.NOT_ATTEMPTED


@pytest.mark.parametrize("key", [k for k in KEYS if REGISTRY[k].kind == "function"])
def test_the_reference_or_a_utils_function_handed_in_is_not_correct(key, contexts):
    """A function exercise passes only for code the student wrote: the reference itself, a copy of its code
    object and any `utils` function are refused, with a line saying to write it."""
    import types

    ex = REGISTRY[key]
    ref = ex.expected
    handed = [ref]
    if isinstance(ref, types.FunctionType):
        handed.append(types.FunctionType(ref.__code__, ref.__globals__, "mine", ref.__defaults__, ref.__closure__))
    for answer in handed:
        status, message = checks.grade(ex, answer, contexts(ex))
        assert status == checks.FAIL and "write the function yourself" in message, f"{key}: {status} {message}"
    status, message = checks.grade(ex, checks.compare_values, contexts(ex))     # any utils function
    assert status == checks.FAIL and "write the function yourself" in message, f"{key}: {message}"


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.stem)
def test_notebook_exercises_are_registered_and_hide_their_answers(src):
    text = src.read_text()
    used = re.findall(r'checks\.exercise\(\s*"([^"]+)"', text)
    number = src.stem[:2]
    assert len(set(used)) >= 2, f"{src.stem} has {len(set(used))} exercises, at least 2 are expected"
    for key in used:
        assert key in REGISTRY, f"{src.stem} uses unregistered exercise {key!r}"
        assert key.startswith(number + "."), f"{key!r} used in notebook {number}"
    # the answers stay out of the notebook: no solution cells, no reference, no import of solutions
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert not re.search(r"\bsolutions\b", code), f"{src.stem} reads solutions/ in its code"
    assert "reference" not in code.split("checks.exercise(")[0].split("## Exercises")[-1]
    assert "check_answer" not in code and "check_function" not in code
