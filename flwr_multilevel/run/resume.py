"""Resume a killed run: check its folder as a whole, then repair it from the checkpoint.

Nothing is changed until everything checks: the checkpoint (safe format,
:mod:`flwr_multilevel.run.checkpoint`), the config (the same run: only keys
that cannot change results may differ), and the CSV files (text, the run's
columns, every round up to the checkpoint's). A folder that fails is refused
in one line naming the file and the reason, and left as it was. Then rows
after the checkpoint's round are cut, a half-written last row is dropped,
and a history row the kill cut off is written from the checkpoint.
"""

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord
from omegaconf import DictConfig, OmegaConf

from flwr_multilevel.errors import ConfigError
from flwr_multilevel.run.checkpoint import clear_stale_writes, load_checkpoint
from flwr_multilevel.run.recorder import ROUNDS, RunPlan
from flwr_multilevel.run.results import HISTORY, MAX_HISTORY_BYTES, ResultsFolder
from flwr_multilevel.run.resume_checks import check_counters, check_engine, check_rows
from flwr_multilevel.strategies.app_config import dotted_keys

# keys that may differ between the checkpoint's config and config.yaml: they cannot change
# the rows already written or the ones to come (rounds only upward: it adds rounds)
MAY_CHANGE = ("rounds", "simulation.timeout", "output_dir", "overwrite")

Rows = list[dict[str, str]]


def check_config(saved_yaml: str, cfg: DictConfig, last_round: int) -> list[str]:
    """Return the keys of ``cfg`` that differ from the checkpoint's config (all allowed).

    Raises
    ------
    ConfigError
        ``config.yaml``: a key that changes results differs, or ``rounds``
        went below the checkpoint's round.
    """
    try:
        saved = dotted_keys(OmegaConf.to_container(OmegaConf.create(saved_yaml)))  # type: ignore[arg-type]
    except Exception:  # pylint: disable=broad-except
        raise ConfigError("--resume", "the checkpoint's config cannot be read") from None
    now = dotted_keys(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
    changed = sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k))
    for key in changed:
        if key not in MAY_CHANGE:
            raise ConfigError(
                "--resume",
                f"config.yaml: {key} is {now.get(key)!r}, the checkpoint's run has "
                f"{saved.get(key)!r}; only {', '.join(MAY_CHANGE)} may change",
            )
    if int(cfg.rounds) < last_round and "rounds" in changed:
        raise ConfigError(
            "--resume", f"config.yaml: rounds {cfg.rounds} is below the checkpoint's {last_round}"
        )
    return changed


def read_rows(path: Path) -> tuple[list[str], Rows]:
    """Return (header, complete rows) of a run's CSV file; a half-written last row is dropped.

    Raises
    ------
    ConfigError
        The file is missing, too large, not text or not CSV, or an incomplete
        row stands before the last one.
    """
    name = path.name
    if path.is_symlink() or not path.is_file():
        raise ConfigError("--resume", f"{name} is missing: the folder does not hold the run")
    if path.stat().st_size > MAX_HISTORY_BYTES:
        raise ConfigError("--resume", f"{name} is larger than {MAX_HISTORY_BYTES} bytes")
    try:
        text = path.read_bytes().decode("utf-8")
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = list(reader.fieldnames or [])
        rows = list(reader)
    except UnicodeDecodeError:
        raise ConfigError("--resume", f"{name} is not a text file") from None
    except csv.Error as err:
        raise ConfigError("--resume", f"{name} is not a CSV file ({err})") from None
    complete = [r for r in rows if None not in r and all(v is not None for v in r.values())]
    if len(complete) < len(rows) - 1 or (rows and complete != rows[: len(complete)]):
        raise ConfigError("--resume", f"{name}: a row before the last is incomplete")
    if "round" not in header:
        raise ConfigError("--resume", f"{name} has no 'round' column")
    for row in complete:
        if not row["round"].isdigit():
            raise ConfigError("--resume", f"{name}: round {row['round']!r} is not a number")
    return header, complete


def _check_rounds(name: str, rows: Rows, want: list[int]) -> None:
    got = [int(r["round"]) for r in rows]
    if got[: len(want)] != want:
        raise ConfigError(
            "--resume",
            f"{name}: expected the rows of rounds {want[:3]}..{want[-1:]}, got {got[:8]}",
        )


@dataclass
class Resumable:
    """A checked run folder: its checkpoint and the rows to keep, nothing changed yet."""

    state: dict[str, Any]
    changed: list[str]
    history_header: list[str]
    history: Rows
    rounds_header: list[str]
    rounds: Rows


def check_resume(folder: Path, cfg: DictConfig, initial: ArrayRecord, plan: RunPlan) -> Resumable:
    """Check the run in ``folder`` as a whole against its checkpoint; change nothing.

    Raises
    ------
    ConfigError
        ``--resume``: anything in the folder that is not the run of its
        checkpoint: its format, config, engine state, counters or rows.
    """
    state = load_checkpoint(folder)
    last = state["round"]
    if not isinstance(last, int) or isinstance(last, bool) or last < 1:
        raise ConfigError("--resume", f"checkpoint.pt: {last!r} is not a round")
    changed = check_config(str(state["config"]), cfg, last)
    check_engine(state["mll"], initial, plan, last)
    check_counters(state, plan)
    history_header, history = read_rows(folder / HISTORY)
    rounds_header, rounds = read_rows(folder / ROUNDS)
    if history_header != list(state["last_row"]):
        raise ConfigError("--resume", f"{HISTORY} has other columns than the checkpoint's run")
    _check_rounds(ROUNDS, rounds, list(range(1, last + 1)))
    kept = [r for r in history if int(r["round"]) < last]
    evaluated = [int(r["round"]) for r in kept]
    if not evaluated or evaluated[0] != 0 or evaluated != sorted(set(evaluated)):
        raise ConfigError("--resume", f"{HISTORY}: expected rows from round 0 in order")
    check_rows(state, history, rounds)
    return Resumable(state, changed, history_header, kept, rounds_header, rounds)


def repair(folder: Path, checked: Resumable) -> None:
    """Cut the rows after the checkpoint's round and write its history row back."""
    last = int(checked.state["round"])
    clear_stale_writes(folder)
    out = ResultsFolder(folder, resume=True)
    out.write_rows(HISTORY, checked.history_header, [*checked.history, checked.state["last_row"]])
    out.write_rows(
        ROUNDS, checked.rounds_header, [r for r in checked.rounds if int(r["round"]) <= last]
    )
