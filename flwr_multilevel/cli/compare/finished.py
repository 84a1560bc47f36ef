"""Finished runs read back: a run folder's or a comparison folder's histories (``plot``)."""

import json
from collections.abc import Sequence
from pathlib import Path

from flwr_multilevel.cli.compare.table import TABLE
from flwr_multilevel.errors import ConfigError
from flwr_multilevel.run.results import read_history


def load_finished(folders: Sequence[str]) -> dict[str, list[dict[str, float]]]:
    """Return label -> history of run folders and comparison folders.

    Raises
    ------
    ConfigError
        A folder that holds neither ``history.csv`` nor ``comparison.json``.
    """
    histories: dict[str, list[dict[str, float]]] = {}
    for name in folders:
        folder = Path(name)
        if (folder / "comparison.json").is_file():
            for label, sub in read_index(folder)[1].items():
                if (folder / sub / "history.csv").is_file():
                    histories[label] = read_history(folder / sub)
        elif (folder / "history.csv").is_file():
            histories[folder.name] = read_history(folder)
        else:
            raise ConfigError(
                "plot", f"expected a run or comparison folder, {name!r} holds no results"
            )
    return histories


def read_index(folder: Path) -> tuple[str | None, dict[str, str]]:
    """Return (title, label -> run subfolder) of a comparison folder's ``comparison.json``.

    Raises
    ------
    ConfigError
        ``plot``: the index is unreadable, not JSON, or names a folder outside.
    """
    path = folder / f"{TABLE}.json"
    try:
        if path.stat().st_size > 10_000_000:
            raise ConfigError("plot", f"{path}: larger than 10 MB")
        index = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as err:
        raise ConfigError("plot", f"{path} cannot be read ({err.strerror})") from None
    except (UnicodeDecodeError, ValueError):
        raise ConfigError("plot", f"{path} is not a JSON file") from None
    runs = index.get("runs") if isinstance(index, dict) else None
    title = index.get("title") if isinstance(index, dict) else None
    if not isinstance(runs, dict) or not isinstance(title, str | None):
        raise ConfigError("plot", f"{path}: expected a title and a mapping of runs")
    for label, sub in runs.items():
        if not isinstance(sub, str) or sub in ("", ".", "..") or "/" in sub or "\\" in sub:
            raise ConfigError("plot", f"{path}: run {label!r} names no folder inside")
    return title, runs
