"""Checkpoints of a run: everything needed to continue it bit for bit after a crash.

Format (version :data:`VERSION`): a dict of tensors and plain data only
(:mod:`flwr_multilevel.run.state`), read with ``torch.load(weights_only=True)``,
so a checkpoint never runs code::

    format   "flwr-multilevel-checkpoint"
    version  1
    config   the resolved config of the run, as YAML text
    round    the last round it holds
    mll      the engine's state (hub models, hub strategies' attributes, weights, counters)
    counters the recorder's clock and counters
    last_row the history row of ``round``
    elapsed  wall seconds of the run so far

It is written atomically (a temporary file, then a rename) after every
evaluation, before that evaluation's history row. Resuming repairs what a
kill left behind from it: the history row of its round, if missing or
half-written, is its ``last_row``; rows after its round are cut.
"""

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from flwr_multilevel.errors import ConfigError
from flwr_multilevel.run.results import RUN_FILES

CHECKPOINT = "checkpoint.pt"
FORMAT = "flwr-multilevel-checkpoint"
VERSION = 1
MAX_BYTES = 4 * 1024**3
KEYS = ("format", "version", "config", "round", "mll", "counters", "last_row", "elapsed")


def save_checkpoint(folder: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (tensors and plain data) to ``folder/checkpoint.pt`` atomically.

    Raises
    ------
    ConfigError
        The disk is full or the folder is not writable (nothing half-written stays).
    """
    path = folder / CHECKPOINT
    tmp = path.with_name(f".{CHECKPOINT}.{os.getpid()}.tmp")
    try:
        torch.save({"format": FORMAT, "version": VERSION, **state}, tmp)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise ConfigError(
            "output_dir", f"cannot write the checkpoint in {str(folder)!r} ({err.strerror})"
        ) from None


def clear_stale_writes(folder: Path) -> None:
    """Remove the temporary files a kill -9 cut short (never the real files)."""
    for name in (*RUN_FILES, CHECKPOINT):
        for stale in folder.glob(f".{name}.*.tmp"):
            if stale.is_file() and not stale.is_symlink():
                stale.unlink()


def load_checkpoint(folder: Path) -> dict[str, Any]:
    """Return the checkpoint of the run in ``folder``, read as tensors and plain data only.

    Raises
    ------
    ConfigError
        ``--resume``: no checkpoint there, or one that is not a checkpoint of
        this format (objects other than tensors and plain data are refused,
        never unpickled).
    """
    path = folder / CHECKPOINT
    if not path.is_file() or path.is_symlink():
        raise ConfigError("--resume", f"{str(folder)!r} holds no checkpoint of a run")
    where = f"{CHECKPOINT} in {str(folder)!r}"
    if path.stat().st_size > MAX_BYTES:
        raise ConfigError("--resume", f"{where} is larger than {MAX_BYTES} bytes")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ConfigError(
            "--resume", f"{where} holds objects other than tensors and plain data; refused"
        ) from None
    except Exception as err:  # pylint: disable=broad-except
        raise ConfigError("--resume", f"{where} cannot be read ({type(err).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ConfigError("--resume", f"{where} is not a flwr-multilevel checkpoint")
    if state.get("version") != VERSION:
        raise ConfigError(
            "--resume", f"{where} has format version {state.get('version')!r}, expected {VERSION}"
        )
    missing = [key for key in KEYS if key not in state]
    if missing:
        raise ConfigError("--resume", f"{where} lacks {missing[0]!r}")
    return state
