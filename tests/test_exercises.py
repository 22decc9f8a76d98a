"""Every exercise's reference solution passes its checker, its deliberately wrong answers fail, an untouched
stub reads "not attempted yet", and no notebook shows an answer before the student tries."""
import ast
import inspect
import json
import re
import textwrap

import pytest
import torch

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


# ----------------------------------------------------------------------------- the answer is not on screen first
NOTEBOOKS = {p.name[:2]: p for p in (REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")}
MIN_LINE = 25      # a reference line shorter than this ("return out", "n = len(x)") matches by accident
MIN_NODES = 5      # the same for a reference expression matched by its structure (calls, attributes, operators)


def cells_before_exercise(key: str, nb: dict) -> list[tuple[str, str, str]]:
    """(cell type, source, source and text outputs) of every cell before the one that checks `key`."""
    before = []
    for cell in nb["cells"]:
        source = "".join(cell["source"])
        if f'checks.exercise("{key}"' in source:
            return before
        shown = [source]
        for out in cell.get("outputs", []):
            shown.append("".join(out.get("text", "")))
            for mime in ("text/plain", "text/markdown", "text/html"):
                shown.append("".join(out.get("data", {}).get(mime, "")))
        before.append((cell["cell_type"], source, "\n".join(shown)))
    raise AssertionError(f"no cell calls checks.exercise({key!r})")


def printed_forms(value) -> set[str]:
    """The ways a notebook would print `value` (str, .1f, .2f, .3f, .4f, a percentage, 16,384), less those with
    fewer than three digits, which any notebook prints by accident ("25%", "0.2")."""
    if isinstance(value, (tuple, list)):
        return set().union(*map(printed_forms, value))
    if isinstance(value, torch.Tensor):
        return printed_forms(value.item()) if value.numel() == 1 else set()
    if isinstance(value, str):
        return {value} if len(value) >= 4 else set()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return set()
    forms = {str(value)} | {f"{value:.{d}f}" for d in (1, 2, 3, 4)}
    if float(value).is_integer():
        forms |= {str(int(value)), f"{int(value):,}"}
    if 0 < abs(value) < 1:
        forms |= {f"{value:.0%}", f"{value:.1%}", f"{value:.2%}"}
    return {f for f in forms if sum(ch.isdigit() for ch in f) >= 3}


def value_shown(value, text: str) -> list[str]:
    # a form counts only as a whole number: "0.25" is not in "10.25", "0.251" or "3,0.25", and "18.0" not in "18.0%"
    return [f for f in sorted(printed_forms(value))
            if re.search(rf"(?<![\d.])(?<!\d,){re.escape(f)}(?![\d%])", text)]


def reference_functions(ex) -> list:
    return [f for f in (ex.expected, ex.solution) if callable(f) and hasattr(f, "__code__")]


def reference_code(fn) -> tuple[list[str], list[ast.expr], set[str]]:
    """A reference function's body lines (stripped, comments, docstring and a leading `return` removed), its
    top-level expressions (each statement's value, a lambda's body) and its own names (arguments, locals)."""
    code = fn.__code__
    own = set(code.co_varnames)
    if fn.__name__ == "<lambda>":
        module = ast.parse(inspect.getsource(inspect.getmodule(fn)))
        lambdas = [node for node in ast.walk(module) if isinstance(node, ast.Lambda)
                   and node.lineno == code.co_firstlineno and [a.arg for a in node.args.args] ==
                   list(code.co_varnames[:code.co_argcount])]
        bodies = [node.body for node in lambdas]
        return [" ".join(ast.unparse(b).split()) for b in bodies], bodies, own
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    func = tree.body[0]
    body = func.body[1:] if ast.get_docstring(func) else func.body
    lines, exprs = [], []
    for stmt in body:
        for node in ast.walk(stmt):
            if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Return, ast.Expr)) and node.value is not None:
                exprs.append(node.value)
        segment = ast.get_source_segment(textwrap.dedent(inspect.getsource(fn)), stmt) or ""
        for line in segment.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            line = re.sub(r"^return\s+", "", line)
            if line and not line.startswith("#"):
                lines.append(" ".join(line.split()))
    return lines, exprs, own


def _size(node: ast.AST) -> int:
    """How much of an expression is fixed code: its calls, attributes, subscripts and operators."""
    return sum(isinstance(n, (ast.Call, ast.Attribute, ast.Subscript, ast.BinOp, ast.UnaryOp, ast.Compare))
               for n in ast.walk(node))


def _matches(pattern, node, own: set[str]) -> bool:
    """`node` is `pattern` up to the names of the reference's own variables (any expression may stand for one)
    and the values of constants."""
    if isinstance(pattern, ast.Name) and pattern.id in own:
        return isinstance(node, ast.expr)
    is_constant = lambda n: isinstance(n, ast.Constant) or (isinstance(n, ast.UnaryOp) and isinstance(n.operand, ast.Constant))
    if is_constant(pattern):
        return is_constant(node)
    if type(pattern) is not type(node):
        return False
    if isinstance(pattern, ast.AST):
        return all(_matches(getattr(pattern, f), getattr(node, f, None), own)
                   for f in pattern._fields if f not in ("ctx", "type_comment"))
    if isinstance(pattern, list):
        return len(pattern) == len(node) and all(_matches(p, n, own) for p, n in zip(pattern, node))
    return pattern == node


def code_shown(fn, cells: list[tuple[str, str, str]]) -> list[str]:
    lines, exprs, own = reference_code(fn)
    found = []
    flat = [" ".join(text.split()) for _, _, text in cells]
    found += [f"line `{line}`" for line in lines if len(line) >= MIN_LINE and any(line in text for text in flat)]
    patterns = [e for e in exprs if _size(e) >= MIN_NODES]
    for kind, source, _ in cells:
        if kind != "code" or not patterns:
            continue
        try:
            tree = ast.parse("\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            for p in patterns:
                if isinstance(node, ast.expr) and _matches(p, node, own):
                    found.append(f"`{ast.unparse(node)}` (the reference's `{ast.unparse(p)}`)")
    return found


def formula_shown(fn, cells: list[tuple[str, str, str]]) -> list[str]:
    """A reference expression's distinctive constants (0.54, 1127; not 0, 1, 2 or 0.5) written in the same order
    close together in an earlier cell, as a formula in Markdown would be ("0.54 - 0.46 \\cos(...)")."""
    _, exprs, _ = reference_code(fn)
    found = []
    for expr in exprs:
        constants = sorted((n.lineno, n.col_offset, n.value) for n in ast.walk(expr) if isinstance(n, ast.Constant)
                           and type(n.value) in (int, float) and (abs(n.value) >= 10 or n.value % 1 not in (0, 0.5)))
        if len(constants) < 2:
            continue
        formula = r"[^\n]{0,30}?".join(rf"(?<![\d.]){re.escape(repr(v))}(?!\d)" for _, _, v in constants)
        found += [f"the constants of `{ast.unparse(expr)}` in cell {i}" for i, (_, _, text) in enumerate(cells)
                  if re.search(formula, text)]
    return found


def answer_shown_before(key: str, nb: dict) -> list[str]:
    """What of exercise `key`'s reference answer notebook `nb` shows before the exercise's cell: for a value,
    the forms it would be printed in; for a function, a line of the reference's code, the same expression with
    other variable names, or its formula's constants. A value computed from the notebook's own model or data
    (an exercise with a `test_context`) cannot be known here and is not looked for."""
    ex = REGISTRY[key]
    cells = cells_before_exercise(key, nb)
    if ex.kind == "value":
        if ex.test_context is not None:
            return []
        want = ex.expected()
        return [f"{form!r} in cell {i}" for i, (_, _, text) in enumerate(cells) for form in value_shown(want, text)]
    return [hit for fn in reference_functions(ex) for hit in code_shown(fn, cells) + formula_shown(fn, cells)]


@pytest.mark.parametrize("key", KEYS)
def test_no_notebook_shows_the_answer_before_its_exercise(key):
    """The product rule: the notebook never shows the answer before the student tries."""
    nb = json.loads(NOTEBOOKS[key[:2]].read_text())
    shown = answer_shown_before(key, nb)
    assert not shown, f"{key}: notebook {NOTEBOOKS[key[:2]].name} shows the answer before its exercise: {shown[:3]}"
