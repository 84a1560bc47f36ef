"""The results folder of a run, written as rounds finish."""

import csv
import json
import math
import os
import secrets
import tempfile
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord
from omegaconf import DictConfig, OmegaConf

from flwr_multilevel.errors import ConfigError

HISTORY = "history.csv"
# every file a run writes; with overwrite=false none of them may exist yet
RUN_FILES = (
    "config.yaml",
    "network.json",
    "theory.json",
    "partition.json",
    "initial_model.pt",
    HISTORY,
    "rounds.csv",
    "hub_models.pt",
    "checkpoint.pt",
    "summary.json",
)
MAX_HISTORY_BYTES = 100_000_000


def _atomic_write(path: Path, write: Any) -> None:
    """Write through a fresh temporary file (never a link) renamed over ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)  # replaces a link at `path` itself, never its target
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def check_output_dir(folder: str | Path, overwrite: bool = False) -> Path:
    """Check that a run may write ``folder``, without creating or changing anything.

    The folder must be new, or an existing folder (not a link) that holds none
    of :data:`RUN_FILES` (any of them with ``overwrite``, which then replaces
    only those files), inside an existing, writable parent.

    Returns
    -------
    Path
        The absolute folder.

    Raises
    ------
    ConfigError
        ``output_dir``: a file, a link, a run's files without ``overwrite``, a
        folder that cannot be written, or a name the file system refuses.

    Examples
    --------
    >>> import tempfile
    >>> check_output_dir(Path(tempfile.mkdtemp()) / "new").name
    'new'
    """
    text = str(folder)
    if "\x00" in text or not text.strip():
        raise ConfigError("output_dir", f"expected a folder name, got {text[:80]!r}")
    path = Path(text).expanduser().absolute()
    too_long = len(os.fsencode(path)) > 4000 or any(len(os.fsencode(p)) > 255 for p in path.parts)
    if too_long:
        raise ConfigError("output_dir", "expected a path of at most 4000 bytes, parts of 255")
    if path.is_symlink():
        raise ConfigError("output_dir", f"expected a folder, {text!r} is a symbolic link")
    if path.exists():
        if not path.is_dir():
            raise ConfigError("output_dir", f"expected a folder, {text!r} is a file")
        found = [name for name in RUN_FILES if os.path.lexists(path / name)]
        if found and not overwrite:
            raise ConfigError(
                "output_dir",
                f"expected a new folder, {text!r} already holds a run ({found[0]}); "
                "pass overwrite=true to replace its files",
            )
        links = [name for name in RUN_FILES if (path / name).is_symlink()]
        if links:
            raise ConfigError("output_dir", f"{links[0]} in {text!r} is a symbolic link")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError("output_dir", f"expected a writable folder, {text!r} is not")
        return path
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        if parent.is_symlink():  # a dangling link on the way
            raise ConfigError("output_dir", f"{str(parent)!r} is a broken symbolic link")
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError("output_dir", f"expected folders on the way, {str(parent)!r} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError("output_dir", f"cannot create {text!r}: {str(parent)!r} is read-only")
    return path


def reserve_output_dir(folder: Path) -> list[Path]:
    """Create a checked results folder now; return the folders this call created.

    Creating it before the data are loaded proves it can be written (and
    claims a unique name); :func:`release_output_dir` removes it again if
    the run stops before writing anything.

    Raises
    ------
    ConfigError
        ``output_dir``: the file system refused to create it.
    """
    made = [p for p in (folder, *folder.parents) if not os.path.lexists(p)]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        release_output_dir(made)
        raise ConfigError("output_dir", f"cannot create {str(folder)!r} ({err.strerror})") from None
    return made


def release_output_dir(made: Sequence[Path]) -> None:
    """Remove the folders :func:`reserve_output_dir` created, if they are still empty."""
    for path in made:  # deepest first
        try:
            path.rmdir()
        except OSError:
            return


def plan_output_dir(folder: str | Path | None, overwrite: bool = False, base: str = "runs") -> Path:
    """Return the checked results folder of a run: ``folder``, or a new unique one.

    Without ``folder`` the run gets ``<base>/<date>-<time>-<random>``, so runs
    started in the same second never share a folder. Nothing is created.

    Raises
    ------
    ConfigError
        As :func:`check_output_dir`.
    """
    if folder not in (None, ""):
        return check_output_dir(str(folder), overwrite)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for _ in range(100):
        path = Path(base, f"{stamp}-{secrets.token_hex(3)}").absolute()
        if not os.path.lexists(path):
            return check_output_dir(path, overwrite=False)
    raise ConfigError("output_dir", f"could not find a free folder name under {base!r}")


class ResultsFolder:
    """The files of one run's results folder.

    Files: ``config.yaml`` (resolved), ``network.json`` (hubs, weights, rates,
    graph, H and its spectrum), ``partition.json`` (sample indices per
    worker), ``initial_model.pt``, ``history.csv`` (one row per evaluation),
    ``rounds.csv`` (one row per round), ``hub_models.pt`` (the latest hub
    models, rewritten at every evaluation) and ``summary.json`` at the end.
    CSV rows are flushed as they are written, so a crash loses at most the
    round in flight.

    Parameters
    ----------
    folder : str | Path
        The results folder (created).
    overwrite : bool (default: False)
        Allow a folder that already holds a run.
    resume : bool (default: False)
        Continue the run in the folder: keep its files (the run cuts them
        back to its checkpoint).

    Raises
    ------
    ConfigError
        ``output_dir`` already holds a run and ``overwrite`` is false.
    """

    def __init__(self, folder: str | Path, overwrite: bool = False, resume: bool = False) -> None:
        self.path = check_output_dir(folder, overwrite or resume)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(
                "output_dir", f"cannot create {str(folder)!r} ({err.strerror})"
            ) from None
        for name in () if resume else (HISTORY, "rounds.csv", "summary.json", "checkpoint.pt"):
            (self.path / name).unlink(missing_ok=True)  # only the run's own files

    def write_config(self, cfg: DictConfig) -> None:
        """Write the resolved config."""
        OmegaConf.save(cfg, self.path / "config.yaml", resolve=True)

    def write_json(self, name: str, data: Mapping[str, Any]) -> None:
        """Write a JSON file (numpy values converted)."""

        def convert(value: Any) -> Any:
            if isinstance(value, np.ndarray):
                return value.tolist()
            if isinstance(value, np.generic):
                return value.item()
            raise TypeError(f"cannot write {type(value).__name__} to JSON")

        _atomic_write(
            self.path / name,
            lambda p: p.write_text(json.dumps(data, indent=1, default=convert) + "\n"),
        )

    def write_partition(self, partitions: Sequence[np.ndarray]) -> None:
        """Write the sample indices of each worker."""
        self.write_json("partition.json", {str(i): part for i, part in enumerate(partitions)})

    def save_model(self, name: str, arrays: ArrayRecord) -> None:
        """``torch.save`` the state dict of one model."""
        state = arrays.to_torch_state_dict()
        _atomic_write(self.path / name, lambda p: torch.save(state, p))

    def save_hub_models(self, server_round: int, hub_models: Sequence[ArrayRecord]) -> None:
        """``torch.save`` every hub's state dict, with the round they belong to."""
        state = {
            "round": server_round,
            "hubs": [arrays.to_torch_state_dict() for arrays in hub_models],
        }
        _atomic_write(self.path / "hub_models.pt", lambda p: torch.save(state, p))

    def write_rows(
        self, name: str, header: Sequence[str], rows: Sequence[Mapping[str, Any]]
    ) -> None:
        """Replace a CSV file with ``header`` and ``rows``, atomically."""

        def write(path: Path) -> None:
            with path.open("w", newline="") as file:
                writer = csv.DictWriter(file, fieldnames=list(header))
                writer.writeheader()
                writer.writerows(rows)

        _atomic_write(self.path / name, write)

    def append_row(self, name: str, row: Mapping[str, Any]) -> None:
        """Append a row to a CSV file (header written with the first row)."""
        path = self.path / name
        new = not os.path.lexists(path)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        with os.fdopen(os.open(path, flags, 0o644), "a", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)
            file.flush()


def read_history(folder: str | Path, key: str = "plot") -> list[dict[str, float]]:
    """Read ``history.csv`` of a results folder as a list of rows of floats.

    Raises
    ------
    ConfigError
        ``key``: the file is missing, unreadable, not text, half-written (a row
        with missing fields), holds a value that is not a number, or lacks
        the ``time_step``, ``accuracy`` and ``loss`` columns.
    """
    path = Path(folder) / HISTORY
    try:
        if path.is_symlink() or not path.is_file():
            raise ConfigError(key, f"expected a results folder, {str(folder)!r} has no {HISTORY}")
        if path.stat().st_size > MAX_HISTORY_BYTES:
            raise ConfigError(key, f"{path}: larger than {MAX_HISTORY_BYTES} bytes")
        text = path.read_bytes().decode("utf-8")
    except OSError as err:
        raise ConfigError(key, f"{path} cannot be read ({err.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(key, f"{path} is not a text file") from None
    try:
        reader = csv.DictReader(text.splitlines())
        header = list(reader.fieldnames or [])
        rows = list(reader)
    except csv.Error as err:
        raise ConfigError(key, f"{path} is not a CSV file ({err})") from None
    missing = [c for c in ("time_step", "accuracy", "loss") if c not in header]
    if missing or not rows:
        raise ConfigError(key, f"{path}: expected a header with time_step, accuracy, loss and rows")
    history = []
    for number, row in enumerate(rows, 2):
        if None in row or any(v is None for v in row.values()):
            raise ConfigError(key, f"{path}: line {number} is incomplete (half-written?)")
        try:
            values = {k: float(v) for k, v in row.items()}
        except ValueError:
            raise ConfigError(
                key, f"{path}: line {number} holds a value that is not a number"
            ) from None
        if not all(math.isfinite(values[c]) for c in ("time_step",)):
            raise ConfigError(key, f"{path}: line {number} has no finite time_step")
        history.append(values)
    return history
