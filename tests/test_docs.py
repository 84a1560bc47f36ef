"""Every ``flwr-multilevel`` command shown in the docs pages runs as written, with the output shown.

The pages are ``docs/*.md`` except those in ``NOT_RUN``. In a page:

* a ```` ```bash ```` block: every line that starts with ``flwr-multilevel`` is run (a ``#``
  comment after it is dropped) and must exit 0; other lines (``flwr run``, ``cd``, a bench
  script) are not run here;
* a ```` ```console ```` block: every ``$ flwr-multilevel ...`` line is run, and the lines after
  it, up to the next ``$`` line, are its output: each must match, in that order, a line the
  command printed (stdout, then stderr). In a shown line ``…`` stands for any text, and
  timings (``0.4 s``) and run-folder names (``20261126-235959-3fa2c1``) for any value. A shown
  ``flwr-multilevel: error: ...`` line means exit status 2, any other output 0.

A page's commands run in order (a later one may read what an earlier one wrote), in the CLI's
own process, in one scratch folder per page that links every top-level entry of the repository
(so ``--app .`` and relative paths mean what they mean at the repository root) and receives
what the commands write (``runs/``, ``out/``).
"""

import re
import shlex
from pathlib import Path

import pytest

from flwr_multilevel.cli.main import main

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
NOT_RUN = {
    "deployment.md": "run as written by tests/test_deployment_doc.py (deployment-marked, minutes)",
    "reproduction.md": "the paper's runs, minutes to hours each (docs/reproduce.sh)",
}
SCRATCH_SKIP = {".git", ".venv", "runs", "out"}  # not linked: the commands write there
COMMAND = "flwr-multilevel"
VARIABLE = re.compile(r"(…|\b\d+(?:\.\d+)? s\b|\b\d{8}-\d{6}-[0-9a-f]{6}\b)")


def pages() -> list[Path]:
    return sorted(p for p in DOCS.glob("*.md") if p.name not in NOT_RUN)


def line_pattern(shown: str) -> re.Pattern[str]:
    """Return the regular expression of a shown output line (see the module's docstring)."""
    parts = []
    for piece in VARIABLE.split(shown.rstrip()):
        if piece == "…":
            parts.append(".*")
        elif VARIABLE.fullmatch(piece):
            parts.append(r"\d+(?:\.\d+)? s" if piece.endswith(" s") else r"\d{8}-\d{6}-[0-9a-f]+")
        else:
            parts.append(re.escape(piece))
    return re.compile("".join(parts))


def missing_lines(shown: list[str], printed: list[str]) -> list[str]:
    """Return the shown lines that do not match the printed ones in order (empty: all do)."""
    position = 0
    for number, line in enumerate(shown):
        if line.strip() == "…":
            continue
        pattern = line_pattern(line)
        while position < len(printed) and not pattern.fullmatch(printed[position].rstrip()):
            position += 1
        if position == len(printed):
            return shown[number:]
        position += 1
    return []


def commands(page: Path) -> list[tuple[list[str], list[str]]]:
    """Return a page's commands in order, each with the output lines it shows (maybe none)."""
    found: list[tuple[list[str], list[str]]] = []
    for match in re.finditer(r"^```(bash|console)\n(.*?)^```", page.read_text(), re.S | re.M):
        language, body = match.groups()
        shown: list[str] | None = None
        for line in body.splitlines():
            if language == "bash" and line.startswith(f"{COMMAND} "):
                found.append((shlex.split(line, comments=True), []))
            elif language == "console" and line.startswith("$ "):
                shown = [] if line.startswith(f"$ {COMMAND} ") else None
                if shown is not None:
                    found.append((shlex.split(line[2:], comments=True), shown))
            elif language == "console" and shown is not None:
                shown.append(line)
    return found


@pytest.fixture
def repository_root(tmp_path, monkeypatch):
    """A scratch folder that looks like the repository root and keeps what commands write."""
    for entry in ROOT.iterdir():
        if entry.name not in SCRATCH_SKIP:
            (tmp_path / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_pages_show_commands():
    assert {p.name for p in pages()} >= {
        "architecture.md",
        "baselines.md",
        "benchmarks.md",
        "configuration.md",
        "flower-app.md",
        "paper-vs-reference.md",
        "results.md",
    }
    assert all((DOCS / name).is_file() for name in NOT_RUN)
    shown = {p.name: commands(p) for p in pages()}
    assert len(shown["configuration.md"]) >= 8
    assert any(out for _, out in shown["configuration.md"])  # some show their output


def test_shown_lines_match_as_documented():
    summary = "wall time 8.3 s (evaluation 0.1 s)"
    assert line_pattern(summary).fullmatch("wall time 12.0 s (evaluation 0.0 s)")
    assert not line_pattern(summary).fullmatch("wall time 12.0 s (evaluation 0.0 s), late")
    folder = "results: /…/runs/20261126-235959-3fa2c1"
    assert line_pattern(folder).fullmatch("results: /tmp/x/runs/20261203-075647-a3f734")
    assert not line_pattern(folder).fullmatch("results: runs/20261203-075647-a3f734")
    assert missing_lines(["a", "…", "c"], ["a", "b", "c"]) == []
    assert missing_lines(["c", "a"], ["a", "b", "c"]) == ["a"]  # order counts


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.name)
def test_every_command_of_the_page_runs_as_shown(page, repository_root, capsys):
    for args, shown in commands(page):
        command = shlex.join(args)
        status = main(args[1:])
        out, err = capsys.readouterr()
        expected = 2 if any(s.startswith(f"{COMMAND}: error:") for s in shown) else 0
        assert status == expected, f"{page.name}: `{command}` exited {status}:\n{err[-2000:]}"
        missing = missing_lines(shown, out.splitlines() + err.splitlines())
        assert not missing, f"{page.name}: `{command}` did not print {missing[0]!r}:\n{out}{err}"
