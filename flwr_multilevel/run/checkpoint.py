"""Checkpoints of a run: everything needed to continue it bit for bit after a crash.

A checkpoint is written atomically (a temporary file, then a rename) after
every evaluation, before that evaluation's history row: the history is never
ahead of the checkpoint. ``rounds.csv`` may be; resuming cuts it back.
"""

import csv
import os
from pathlib import Path
from typing import Any

import torch

from flwr_multilevel.errors import ConfigError
from flwr_multilevel.run.results import RUN_FILES

CHECKPOINT = "checkpoint.pt"


def save_checkpoint(folder: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``folder/checkpoint.pt`` atomically.

    Raises
    ------
    ConfigError
        The disk is full or the folder is not writable (nothing half-written stays).
    """
    path = folder / CHECKPOINT
    tmp = path.with_name(f".{CHECKPOINT}.{os.getpid()}.tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise ConfigError(
            "output_dir", f"cannot write the checkpoint in {str(folder)!r} ({err.strerror})"
        ) from None


def load_checkpoint(folder: Path) -> dict[str, Any]:
    """Return the checkpoint of the run in ``folder``.

    Raises
    ------
    ConfigError
        ``--resume``: no checkpoint there, or one that cannot be read.
    """
    path = folder / CHECKPOINT
    for name in (*RUN_FILES, CHECKPOINT):  # writes a kill -9 cut short (never the real files)
        for stale in folder.glob(f".{name}.*.tmp"):
            if stale.is_file() and not stale.is_symlink():
                stale.unlink()
    if not path.is_file() or path.is_symlink():
        raise ConfigError("--resume", f"{str(folder)!r} holds no checkpoint of a run")
    try:
        return torch.load(path, weights_only=False)  # type: ignore[no-any-return]
    except Exception as err:  # pylint: disable=broad-except
        raise ConfigError(
            "--resume", f"the checkpoint in {str(folder)!r} cannot be read ({type(err).__name__})"
        ) from None


def cut_csv(path: Path, last_round: int) -> None:
    """Keep only the rows of a CSV file whose ``round`` is at most ``last_round``."""
    if not path.is_file():
        return
    with path.open(newline="") as file:
        rows = list(csv.DictReader(file))
    kept = [row for row in rows if int(row["round"]) <= last_round]
    if not kept:  # the next row writes a fresh header
        path.unlink()
        return
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(kept[0]))
        writer.writeheader()
        writer.writerows(kept)
    os.replace(tmp, path)
