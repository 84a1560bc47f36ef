"""`run --resume` on folders a crash, an edit or a stranger left: repaired or refused, never run.

A refused folder is left byte for byte as it was (hashed before and after).
"""

import hashlib
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from flwr_multilevel.cli.main import main

BASE = ["simulation.backend=inprocess", "rounds=6", "q=2", "tau=2", "eval.train_examples=200"]
TIMING = ("elapsed_s", "seconds")


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("resume") / "run"
    assert main(["run", *BASE, f"output_dir={folder}"]) == 0
    return folder


@pytest.fixture
def killed(finished, tmp_path) -> Path:
    """The finished run as a kill after its last checkpoint leaves it: no summary yet."""
    folder = tmp_path / "killed"
    shutil.copytree(finished, folder)
    (folder / "summary.json").unlink()
    return folder


def refused(folder: Path, capsys, *words: str) -> None:
    before = digest(folder)
    assert main(["run", "--resume", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flwr-multilevel: error: --resume: ") and err.count("\n") == 1, err
    for word in words:
        assert word in err, err
    assert digest(folder) == before


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_a_checkpoint_with_a_pickle_payload_is_refused_and_never_runs(killed, tmp_path, capsys):
    marker = tmp_path / "PWNED"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    state = torch.load(killed / "checkpoint.pt", weights_only=True)
    state["last_row"] = Payload()
    (killed / "checkpoint.pt").write_bytes(pickle.dumps(state))
    refused(killed, capsys, "checkpoint.pt", "refused")
    assert not marker.exists()


def test_a_foreign_checkpoint_is_refused_before_anything_changes(killed, tmp_path, capsys):
    other = tmp_path / "other"
    assert main(["run", *BASE, "hubs.count=2", f"output_dir={other}"]) == 0
    shutil.copy(other / "checkpoint.pt", killed / "checkpoint.pt")
    refused(killed, capsys, "hubs.count")


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("seed: 0", "seed: 7", "seed"),
        ("name: logreg", "name: cnn", "model.name"),
        ("name: FedAvg", "name: FedAdam", "strategy.name"),
    ],
)
def test_config_edits_that_change_results_are_refused(killed, capsys, old, new, key):
    config = killed / "config.yaml"
    text = config.read_text()
    assert old in text
    config.write_text(text.replace(old, new, 1))
    refused(killed, capsys, f"config.yaml: {key} is")


def test_more_rounds_may_be_asked_for_and_are_run(finished, killed):
    config = killed / "config.yaml"
    config.write_text(config.read_text().replace("rounds: 6", "rounds: 8", 1))
    assert main(["run", "--resume", str(killed)]) == 0
    rounds = [line.split(",")[0] for line in lines(killed / "history.csv")[1:]]
    assert rounds == ["0", "2", "4", "6", "8"]
    assert strip(lines(killed / "history.csv"))[:5] == strip(lines(finished / "history.csv"))


@pytest.mark.parametrize(
    "damage",
    ["history-missing", "history-empty", "history-binary", "rounds-cut", "checkpoint-empty"],
)
def test_damaged_folders_are_refused_in_one_line(killed, capsys, damage):
    if damage == "history-missing":
        (killed / "history.csv").unlink()
    elif damage == "history-empty":
        (killed / "history.csv").write_text("")
    elif damage == "history-binary":
        (killed / "history.csv").write_bytes(b"\xff\xfe\x00binary")
    elif damage == "rounds-cut":
        rows = lines(killed / "rounds.csv")
        (killed / "rounds.csv").write_text("\n".join(rows[:3]) + "\n")
    else:
        (killed / "checkpoint.pt").write_bytes(b"")
    refused(killed, capsys)


def test_a_history_row_a_kill_cut_off_is_written_back(finished, killed):
    history = lines(killed / "history.csv")
    (killed / "history.csv").write_text("\n".join(history[:-1]) + "\n")  # the row never came
    assert main(["run", "--resume", str(killed)]) == 0
    assert strip(lines(killed / "history.csv")) == strip(lines(finished / "history.csv"))


def test_a_half_written_history_row_is_repaired(finished, killed):
    text = (killed / "history.csv").read_text()
    (killed / "history.csv").write_text(text[: len(text) - 40])  # cut in the middle of a row
    assert main(["run", "--resume", str(killed)]) == 0
    assert strip(lines(killed / "history.csv")) == strip(lines(finished / "history.csv"))
    assert strip(lines(killed / "rounds.csv")) == strip(lines(finished / "rounds.csv"))


def test_resuming_a_finished_run_changes_nothing(finished, capsys):
    before = digest(finished)
    assert main(["run", "--resume", str(finished)]) == 0
    assert "is finished (round 6): nothing to resume" in capsys.readouterr().out
    assert digest(finished) == before


def strip(rows: list[str]) -> list[str]:
    """Rows without their timing columns (elapsed_s, seconds)."""
    header = rows[0].split(",")
    keep = [i for i, name in enumerate(header) if name not in TIMING]
    return [",".join(cells[i] for i in keep) for cells in (r.split(",") for r in rows)]
