"""The README's commands and code run as written, and its adoption diff is the examples' real diff.

Its quick start is what CI runs (``.ci/run``), and the default run prints the summary shown;
the commands of the docs pages it links are run by ``tests/test_docs.py``.
"""

import difflib
import re
import shlex
from pathlib import Path

import pytest

from .test_docs import missing_lines

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_every_python_example_runs():
    found = blocks("python")
    assert found
    for code in found:
        exec(compile(code, "README.md", "exec"), {})  # noqa: S102 (the README's own code)


def test_the_adoption_diff_is_the_real_one():
    shown = [line for line in blocks("diff")[0].splitlines() if line[:1] in "+-" and line.strip()]
    real = []
    for path in sorted((ROOT / "examples" / "quickstart_pytorch").rglob("*")):
        if path.suffix not in (".py", ".toml") or "__pycache__" in path.parts:
            continue
        twin = (
            ROOT
            / "examples"
            / "quickstart_multilevel"
            / path.relative_to(ROOT / "examples" / "quickstart_pytorch")
        )
        diff = difflib.unified_diff(
            path.read_text().splitlines(), twin.read_text().splitlines(), lineterm="", n=0
        )
        real += [d for d in diff if d[:1] in "+-" and not d.startswith(("+++", "---"))]
    assert sorted(shown) == sorted(real)


def quick_start() -> list[str]:
    section = README.split("## Quick start", 1)[1]
    return re.findall(r"```bash\n(.*?)```", section, flags=re.S)[0].splitlines()


def test_the_quick_start_is_what_ci_runs():
    install, tests = quick_start()
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests == ".venv/bin/python -m pytest"  # the README's test command, as CI calls it
    assert tests in ci.splitlines()
    *steps, run = install.split(" && ")
    assert run == ".venv/bin/flwr-multilevel run"
    for step in steps:  # CI installs the same way, quietly
        assert step in ci.replace(" -q", ""), step


@pytest.mark.simulation
def test_the_quick_start_run_prints_the_summary_shown(tmp_path, monkeypatch, capsys):
    from flwr_multilevel.cli.main import main

    run = shlex.split(quick_start()[0].split(" && ")[-1])
    shown = next(b for b in blocks("text") if b.startswith("MLL-SGD on ")).splitlines()
    monkeypatch.chdir(tmp_path)  # the run writes runs/<date>-<time>-<id> here
    assert main(run[1:]) == 0
    out = capsys.readouterr().out.splitlines()
    assert not missing_lines(shown, out), "\n".join(out)
