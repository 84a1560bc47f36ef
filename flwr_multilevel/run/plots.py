"""Loss and accuracy curves of finished runs, against time steps and time slots."""

import textwrap
from collections.abc import Mapping, Sequence
from itertools import cycle
from pathlib import Path

METRICS = {
    "loss": "training loss of u",
    "accuracy": "test accuracy of u",
    "consensus": "consensus distance sum_d b_d ||y_d - u||^2",
}
LOG_SCALE = ("loss", "consensus")
AXES = {"time_step": "time steps", "time_slot": "time slots"}
STYLES = ("-", "--", "-.", ":")  # overlapping curves stay visible


def check_plot_dir(folder: str | Path) -> Path:
    """Check that the PNGs may go to ``folder`` (a folder or new; no links); return it.

    Raises
    ------
    ConfigError
        ``--out``: a file, a link, or a read-only place.
    """
    from flwr_multilevel.errors import ConfigError  # pylint: disable=import-outside-toplevel
    from flwr_multilevel.run.results import check_output_dir  # pylint: disable=import-outside-toplevel

    try:
        out = check_output_dir(folder, overwrite=True)
    except ConfigError as err:
        raise ConfigError("--out", err.message) from None
    for metric in METRICS:
        for axis in AXES:
            path = out / f"{metric}_vs_{axis}.png"
            if path.is_symlink() or path.is_dir():
                raise ConfigError("--out", f"{path} is a link or a folder")
    return out


def mean_band(
    runs: Sequence[Sequence[Mapping[str, float]]], axis: str, metric: str
) -> tuple[list[float], list[float], list[float], list[float]]:
    """Return x, mean, min and max of ``metric`` over runs, matched by time step.

    Runs of different seeds evaluate at the same time steps, but their clocks
    (time slots) can differ: x is the mean of ``axis`` over the runs.

    Examples
    --------
    >>> a = [{"time_step": 0, "time_slot": 0, "loss": 1.0},
    ...      {"time_step": 4, "time_slot": 6, "loss": 0.5}]
    >>> b = [{"time_step": 0, "time_slot": 0, "loss": 3.0},
    ...      {"time_step": 4, "time_slot": 8, "loss": 0.7}]
    >>> mean_band([a, b], "time_slot", "loss")
    ([0.0, 7.0], [2.0, 0.6], [1.0, 0.5], [3.0, 0.7])
    """
    series = [{row["time_step"]: row for row in rows if metric in row} for rows in runs]
    steps = sorted(set.intersection(*(set(s) for s in series)))
    xs = [sum(float(s[t].get(axis, t)) for s in series) / len(series) for t in steps]
    values = [[float(s[t][metric]) for s in series] for t in steps]
    return (
        xs,
        [round(sum(v) / len(v), 12) for v in values],
        [min(v) for v in values],
        [max(v) for v in values],
    )


def plot_histories(
    histories: Mapping[str, Sequence[Mapping[str, float]]],
    folder: str | Path,
    title: str | None = None,
    groups: Mapping[str, Sequence[str]] | None = None,
) -> list[Path]:
    """Draw one PNG per metric and x-axis, every run a line; return the files.

    Files are ``<metric>_vs_<axis>.png`` for ``loss`` and ``accuracy``
    against ``time_step`` and ``time_slot``; loss on a log scale. Histories
    written before the virtual clock existed have no ``time_slot``; their
    time steps are used.

    Parameters
    ----------
    histories : Mapping[str, Sequence[Mapping[str, float]]]
        Run label -> its history rows (``results.read_history``).
    folder : str | Path
        Where the PNGs go (created).
    title : str | None (default: None)
        Figure title.
    groups : Mapping[str, Sequence[str]] | None (default: None)
        Label -> the runs (one per seed) it stands for: each group is drawn as
        its mean with a shaded min-max band instead of one line per run.
    """
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for metric, ylabel in METRICS.items():
        for axis, xlabel in AXES.items():
            fig, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
            styles = cycle(STYLES)
            for label, members in (groups or {}).items():
                band = mean_band([histories[m] for m in members], axis, metric)
                if metric in LOG_SCALE:
                    keep = [i for i, v in enumerate(band[2]) if v > 0]
                    band = tuple([seq[i] for i in keep] for seq in band)  # type: ignore[assignment]
                if band[0]:
                    (line,) = ax.plot(
                        band[0],
                        band[1],
                        next(styles),
                        linewidth=1.4,
                        label=f"{label} (mean of {len(members)})",
                    )
                    ax.fill_between(band[0], band[2], band[3], color=line.get_color(), alpha=0.2)
            grouped = {m for members in (groups or {}).values() for m in members}
            for label, rows in histories.items():
                if label in grouped:
                    continue
                points = [
                    (row.get(axis, row["time_step"]), row[metric])
                    for row in rows
                    if row.get(metric) == row.get(metric)  # skip NaN (and absent)
                    and row.get(metric) is not None
                    and (metric not in LOG_SCALE or row[metric] > 0)
                ]
                if points:
                    xs, ys = zip(*points, strict=True)
                    ax.plot(xs, ys, next(styles), label=label, linewidth=1.4)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            if metric in LOG_SCALE:
                ax.set_yscale("log")
            if metric == "accuracy":  # the untrained first point must not squash the curves
                later = [r[metric] for rows in histories.values() for r in rows[1:] if metric in r]
                if later and min(later) == min(later):
                    low = min(later)
                    ax.set_ylim(max(0.0, low - 0.1 * (1.0 - low + 1e-3)), None)
            ax.grid(alpha=0.3, which="both")
            if title:
                ax.set_title("\n".join(textwrap.wrap(title, 80)), fontsize=9)
            ax.legend(fontsize=8)
            path = out / f"{metric}_vs_{axis}.png"
            fig.savefig(path, dpi=110)
            plt.close(fig)
            files.append(path)
    return files


def plot_run(folder: str | Path) -> list[Path]:
    """Draw a finished run's own plots next to its ``history.csv``; return the files.

    Loss, accuracy and consensus of u against time steps and time slots
    (:func:`plot_histories` with the run as its one line).
    """
    from flwr_multilevel.run.results import read_history  # pylint: disable=import-outside-toplevel

    folder = Path(folder)
    return plot_histories({folder.name: read_history(folder)}, folder)
