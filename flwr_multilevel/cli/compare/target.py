"""What a comparison may write over in its ``--out`` folder: only what a comparison wrote.

A comparison writes its table (``comparison.md``/``.csv``/``.json``), its
plots and one run folder per run; run again into the same folder, it keeps
the finished runs of the same config and runs the others again, replacing
their files. That is safe only for files an earlier comparison wrote
(its ``comparison.json`` lists the run folders) and that are still whole, so
:func:`check_comparison_target` refuses, before anything is loaded:

* an ``--out`` that holds a run (``flwr-multilevel run``'s files: its plots
  have the comparison's names);
* a comparison's files or run folders without a readable ``comparison.json``;
* a run folder that ``comparison.json`` does not list (among its runs, or
  under ``folders``: every run folder comparisons wrote there);
* a listed run folder whose files are damaged (``config.yaml`` that is not a
  config, ``summary.json`` that is not JSON, CSV files that are not text).
"""

import json
from collections.abc import Sequence
from pathlib import Path

from flwr_multilevel.cli.compare.finished import read_index
from flwr_multilevel.cli.compare.table import TABLE
from flwr_multilevel.errors import ConfigError
from flwr_multilevel.experiment.config import _read_yaml_file
from flwr_multilevel.run.plots import AXES, METRICS
from flwr_multilevel.run.results import HISTORY, RUN_FILES

MAX_TEXT_BYTES = 100_000_000  # of a run's CSV files read back here (as read_history)


def _damage(run: Path) -> str | None:
    """Return what is damaged in an earlier run's folder (a comparison's), or None."""
    present = [name for name in RUN_FILES if (run / name).exists()]
    if present and "config.yaml" not in present:
        return f"{present[0]} without config.yaml"
    if "config.yaml" in present:
        try:
            config = _read_yaml_file(run / "config.yaml", "compare")
        except ConfigError as err:
            return f"config.yaml: {err.message}"
        if not hasattr(config, "keys") or "seed" not in config:
            return "config.yaml holds no run's config"
    if "summary.json" in present:
        try:
            summary = json.loads((run / "summary.json").read_bytes().decode("utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            return "summary.json is not JSON"
        if not isinstance(summary, dict):
            return "summary.json holds no run's summary"
    for name in (HISTORY, "rounds.csv"):
        if name in present and (problem := _csv_problem(run / name)):
            return f"{name} {problem}"
    return None


def _csv_problem(path: Path) -> str | None:
    """Return why ``path`` is not a run's CSV file (text with a ``round`` header), or None."""
    try:
        if path.stat().st_size > MAX_TEXT_BYTES:
            return f"is larger than {MAX_TEXT_BYTES} bytes"
        text = path.read_bytes().decode("utf-8")
    except OSError as err:
        return f"cannot be read ({err.strerror})"
    except UnicodeDecodeError:
        return "is not a text file"
    header = text.split("\n", 1)[0].split(",")
    if "\x00" in text or "round" not in header:
        return "is not a run's CSV file"
    return None


def listed_folders(out: Path) -> set[str] | None:
    """Return the run folders comparisons wrote in ``out``; None if it has no index.

    The index lists its runs, and under ``folders`` every run folder a
    comparison wrote there (earlier comparisons' included).

    Raises
    ------
    ConfigError
        ``--out``: the index is not a comparison's.
    """
    index = out / f"{TABLE}.json"
    if not index.exists():
        return None
    try:
        runs = set(read_index(out)[1].values())
        folders = json.loads(index.read_bytes().decode("utf-8")).get("folders", [])
    except ConfigError as err:
        raise ConfigError(
            "--out", f"{index} is not a comparison's index ({err.message.split(': ')[-1]})"
        ) from None
    if not isinstance(folders, list) or not all(isinstance(f, str) for f in folders):
        raise ConfigError("--out", f"{index} is not a comparison's index (folders)")
    return runs | {f for f in folders if f not in ("", ".", "..") and "/" not in f}


def check_comparison_target(out: Path, folders: Sequence[str]) -> None:
    """Check that a comparison writing run folders ``folders`` in ``out`` replaces only its own.

    Raises
    ------
    ConfigError
        ``--out``: it holds a run, files of a comparison without its index, a
        run folder the index does not list, or a damaged earlier run.
    """
    if not out.is_dir():
        return
    run_files = [name for name in RUN_FILES if (out / name).exists()]
    if run_files:
        raise ConfigError(
            "--out",
            f"{out} holds a run ({run_files[0]}), not a comparison; choose another folder",
        )
    listed = listed_folders(out)
    if listed is None:
        own = [f"{TABLE}.md", f"{TABLE}.csv"]
        own += [f"{metric}_vs_{axis}.png" for metric in METRICS for axis in AXES]
        found = [name for name in own if (out / name).exists()]
        if found:
            raise ConfigError(
                "--out", f"{out} holds {found[0]} but no {TABLE}.json: not a comparison's folder"
            )
        listed = set()
    for name in folders:
        run = out / name
        if not run.is_dir() or not any(run.iterdir()):
            continue
        if name not in listed:
            raise ConfigError(
                "--out",
                f"{run} holds files no comparison wrote (not in {TABLE}.json); "
                "remove them or choose another folder",
            )
        if problem := _damage(run):
            raise ConfigError(
                "--out",
                f"{run} holds a damaged earlier run ({problem}); remove it to run it again",
            )
