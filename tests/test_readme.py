"""The README's code examples run as written, and its adoption diff is the examples' real diff."""

import difflib
import re
from pathlib import Path

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


def test_the_run_config_check_runs_as_written(monkeypatch, capsys):
    import shlex

    from flwr_multilevel.cli.main import main

    lines = [
        line.split("#")[0].strip()
        for code in blocks("bash")
        for line in code.splitlines()
        if line.startswith("flwr-multilevel config --run-config")
    ]
    assert lines
    monkeypatch.chdir(ROOT)  # the README runs it from the repository root (--app .)
    for line in lines:
        assert main(shlex.split(line)[1:]) == 0, capsys.readouterr().err
        assert "rounds: 20" in capsys.readouterr().out
