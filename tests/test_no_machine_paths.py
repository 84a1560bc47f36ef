"""Committed results, docs and configs carry no absolute path of the machine that made them."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MACHINE_PATH = re.compile(r"(?<![\w.])/(?:work|root|home|Users)/\w")


def test_no_absolute_machine_paths_in_committed_text():
    checked, offenders = 0, []
    for folder in ("docs", "baselines", "bench", "examples"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix not in (".csv", ".json", ".yaml", ".md", ".toml", ".txt"):
                continue
            checked += 1
            if MACHINE_PATH.search(path.read_text(errors="replace")):
                offenders.append(str(path.relative_to(ROOT)))
    assert checked > 50
    assert not offenders, offenders[:10]
