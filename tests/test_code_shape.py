"""The shape of the package (issue 15): small modules, short functions, a pure network model.

Every ``.py`` file under ``flwr_multilevel/`` (the package itself; the top-level
``strategies/``, ``clients/`` and ``baselines/`` are links into it) holds at most
400 lines, and every function or method at most 60 code lines: lines of its body
that are neither blank, nor comments, nor its docstring. ``flwr_multilevel/model/``
imports neither Flower nor torch.
"""

import ast
import io
import subprocess
import sys
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "flwr_multilevel"
MAX_MODULE_LINES = 400
MAX_FUNCTION_CODE_LINES = 60
MODEL_MODULES = ("hierarchy", "rates", "topology", "mixing", "clock", "theory")


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _code_lines(source: str) -> set[int]:
    """Line numbers that hold a token other than a comment, a newline or indentation."""
    skip = {
        tokenize.COMMENT,
        tokenize.NL,
        tokenize.NEWLINE,
        tokenize.INDENT,
        tokenize.DEDENT,
        tokenize.ENDMARKER,
    }
    lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in skip:
            lines.update(range(token.start[0], token.end[0] + 1))
    return lines


def _docstring_lines(node: ast.AST) -> set[int]:
    body = getattr(node, "body", [])
    if not body:
        return set()
    first = body[0]
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        return set(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    return set()


def function_code_lines(source: str) -> list[tuple[str, int, int]]:
    """``(qualified name, first line, code lines of the body)`` for every function.

    A nested function's lines count toward the function that holds it as well.

    >>> function_code_lines('def f():\\n    \"\"\"Doc.\"\"\"\\n\\n    # note\\n    return 1\\n')
    [('f', 1, 1)]
    """
    code = _code_lines(source)
    found: list[tuple[str, int, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    start = child.body[0].lineno
                    span = set(range(start, (child.end_lineno or start) + 1))
                    count = len((span & code) - _docstring_lines(child))
                    found.append((name, child.lineno, count))
                visit(child, f"{name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return found


def test_the_walk_covers_the_package():
    paths = _modules()
    assert len(paths) > 50
    assert PACKAGE / "model" / "hierarchy.py" in paths
    assert all(part != "tests" for path in paths for part in path.relative_to(ROOT).parts)


def test_no_module_over_400_lines():
    offenders = []
    for path in _modules():
        lines = len(path.read_text().splitlines())
        if lines > MAX_MODULE_LINES:
            offenders.append(f"{path.relative_to(ROOT)}: {lines} lines")
    assert not offenders, f"{len(offenders)} modules over {MAX_MODULE_LINES} lines:\n" + "\n".join(
        offenders
    )


def test_no_function_over_60_code_lines():
    offenders = []
    for path in _modules():
        for name, line, count in function_code_lines(path.read_text()):
            if count > MAX_FUNCTION_CODE_LINES:
                offenders.append(f"{path.relative_to(ROOT)}:{line} {name}: {count} code lines")
    assert not offenders, (
        f"{len(offenders)} functions over {MAX_FUNCTION_CODE_LINES} code lines:\n"
        + "\n".join(offenders)
    )


def test_the_network_model_imports_neither_flower_nor_torch():
    imports = "; ".join(f"import flwr_multilevel.model.{name}" for name in MODEL_MODULES)
    probe = (
        f"import sys; {imports}; "
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules} & {'flwr', 'torch'})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    heavy = done.stdout.split()
    assert not heavy, f"importing flwr_multilevel.model.* loads {heavy}"
