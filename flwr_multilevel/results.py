"""The results folder of a run, written as rounds finish."""

import csv
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord
from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError

HISTORY = "history.csv"


def _atomic_write(path: Path, write: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


class RunRecorder:
    """Writes one run's results folder.

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

    Raises
    ------
    ConfigError
        ``output_dir`` already holds a run and ``overwrite`` is false.
    """

    def __init__(self, folder: str | Path, overwrite: bool = False) -> None:
        self.folder = Path(folder)
        if (self.folder / HISTORY).exists() and not overwrite:
            raise ConfigError(
                "output_dir",
                f"expected a new folder, {str(self.folder)!r} already holds a run "
                "(pass overwrite=true to replace it)",
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        for name in (HISTORY, "rounds.csv", "summary.json"):
            (self.folder / name).unlink(missing_ok=True)

    def write_config(self, cfg: DictConfig) -> None:
        """Write the resolved config."""
        OmegaConf.save(cfg, self.folder / "config.yaml", resolve=True)

    def write_json(self, name: str, data: Mapping[str, Any]) -> None:
        """Write a JSON file (numpy values converted)."""

        def convert(value: Any) -> Any:
            if isinstance(value, np.ndarray):
                return value.tolist()
            if isinstance(value, np.generic):
                return value.item()
            raise TypeError(f"cannot write {type(value).__name__} to JSON")

        _atomic_write(
            self.folder / name,
            lambda p: p.write_text(json.dumps(data, indent=1, default=convert) + "\n"),
        )

    def write_partition(self, partitions: Sequence[np.ndarray]) -> None:
        """Write the sample indices of each worker."""
        self.write_json("partition.json", {str(i): part for i, part in enumerate(partitions)})

    def save_model(self, name: str, arrays: ArrayRecord) -> None:
        """``torch.save`` the state dict of one model."""
        state = arrays.to_torch_state_dict()
        _atomic_write(self.folder / name, lambda p: torch.save(state, p))

    def save_hub_models(self, server_round: int, hub_models: Sequence[ArrayRecord]) -> None:
        """``torch.save`` every hub's state dict, with the round they belong to."""
        state = {
            "round": server_round,
            "hubs": [arrays.to_torch_state_dict() for arrays in hub_models],
        }
        _atomic_write(self.folder / "hub_models.pt", lambda p: torch.save(state, p))

    def append_row(self, name: str, row: Mapping[str, Any]) -> None:
        """Append a row to a CSV file (header written with the first row)."""
        path = self.folder / name
        new = not path.exists()
        with path.open("a", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)
            file.flush()


def read_history(folder: str | Path) -> list[dict[str, float]]:
    """Read ``history.csv`` of a results folder as a list of rows of floats."""
    with (Path(folder) / HISTORY).open() as file:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(file)]
