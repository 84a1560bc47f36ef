"""What a user sees while a run goes: one progress bar, and Flower's INFO lines only on request."""

import logging
import sys
from collections.abc import Mapping
from typing import Any


def quiet_flower(verbose: bool = False) -> None:
    """Keep Flower's per-round INFO lines (and Ray's banner) off the console unless ``verbose``.

    Warnings (a dropped reply, a skipped neighbour) still show.
    """
    if not verbose:
        logging.getLogger("flwr").setLevel(logging.WARNING)


class ProgressBar:
    """A tqdm bar over a run's rounds: time step, loss, accuracy and consensus of u, and ETA.

    Drawn on stderr, and only where stderr is a terminal (logs and CI stay clean).

    Parameters
    ----------
    total_rounds : int
        Rounds the run will take at most.
    tau : int
        Time steps per round.
    """

    def __init__(self, total_rounds: int, tau: int) -> None:
        from tqdm import tqdm  # pylint: disable=import-outside-toplevel

        self.tau = tau
        self.bar: Any = tqdm(
            total=total_rounds,
            unit="round",
            file=sys.stderr,
            disable=None,  # off when stderr is not a terminal
            dynamic_ncols=True,
            leave=True,
        )

    def __call__(self, row: Mapping[str, float]) -> None:
        """Advance to ``row["round"]`` and show the latest scores."""
        self.bar.update(int(row["round"]) - self.bar.n)
        self.bar.set_postfix_str(
            f"step {int(row['time_step'])}, loss {row['loss']:.4f}, "
            f"acc {row['accuracy']:.4f}, consensus {row['consensus']:.2g}",
            refresh=False,
        )

    def close(self) -> None:
        """Finish the bar."""
        self.bar.close()
