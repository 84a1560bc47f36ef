"""The shipped baseline configs (``flwr_multilevel/baselines/*.yaml``), by name."""

from pathlib import Path


def baselines_dir() -> Path:
    """Return the folder of the shipped baseline configs (``flwr_multilevel/baselines``).

    The configs are data: nothing imports them.
    """
    return Path(__file__).resolve().parents[2] / "baselines"


def baseline_names() -> list[str]:
    """Return the names of the shipped baselines (``local_sgd``, ...)."""
    return sorted(path.stem for path in baselines_dir().glob("*.yaml"))


def baseline_path(name: str) -> Path | None:
    """Return the shipped config of a baseline name (``local_sgd``), or None."""
    path = baselines_dir() / f"{name}.yaml"
    return path if path.is_file() else None
