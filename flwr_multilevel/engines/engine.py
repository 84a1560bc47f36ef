"""The engine interface: what runs an experiment's rounds, behind one recorder.

An engine runs the rounds of a prepared experiment from the initial model
and hands every finished round to ``on_round`` (the run core's
:meth:`~flwr_multilevel.run.recorder.RunRecorder.on_round`), which returns
True to stop. :class:`GridEngine` is the message engine: :class:`MLLSGD`
on a Flower Grid (the in-process grid, or Flower's simulation engine on
Ray). :class:`BatchedEngine` advances every worker in one vectorised
computation (:mod:`flwr_multilevel.engines.batched`).
"""

import copy
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord
from flwr.serverapp import Grid

from flwr_multilevel.experiment.prepare import Experiment, build_mllsgd, train_config
from flwr_multilevel.model.clock import round_slots
from flwr_multilevel.protocol.arrays import record_bytes
from flwr_multilevel.run.state import decode, load_strategy_state
from flwr_multilevel.strategies.report import OnRound, RoundReport


class Engine(Protocol):
    """What runs the rounds of an experiment."""

    def run(self, initial: ArrayRecord, on_round: OnRound) -> None:
        """Run the rounds from ``initial``, calling ``on_round`` after each; stop when it says."""

    def state_dict(self) -> dict[str, Any] | None:
        """Return what a checkpoint needs to continue after the last round (None: no resume)."""

    def restore(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict` at the next :meth:`run`."""


class GridEngine:
    """The message engine: :class:`MLLSGD` over the experiment's strategy, on ``grid``.

    Parameters
    ----------
    exp : Experiment
        The prepared experiment.
    grid : Grid
        Reaches the workers: a :class:`~flwr_multilevel.engines.local_grid.LocalGrid`
        or the grid Flower hands a ServerApp.
    """

    def __init__(self, exp: Experiment, grid: Grid) -> None:
        self.exp, self.grid = exp, grid
        self.strategy = build_mllsgd(exp)

    def run(self, initial: ArrayRecord, on_round: OnRound) -> None:
        """Run :meth:`MLLSGD.start` with ``on_round`` as its round observer."""
        self.strategy.on_round = on_round
        self.strategy.start(
            self.grid,
            initial,
            self.exp.num_rounds,
            timeout=float(self.exp.cfg.simulation.timeout),
            train_config=ConfigRecord(dict(train_config(self.exp))),  # type: ignore[arg-type]
        )

    def state_dict(self) -> dict[str, Any] | None:
        """Return the strategy's state (:meth:`MLLSGD.state_dict`).

        A checkpoint saves it as tensors and plain data
        (:func:`~flwr_multilevel.run.state.encode`): each hub strategy as its attributes.
        """
        return self.strategy.state_dict()

    def restore(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state`` (:meth:`state_dict`, decoded) at the next :meth:`run`.

        Each hub's strategy is the experiment's, built from the config, with
        the saved attributes set on it: nothing is unpickled.
        """
        strategies = {
            int(d): load_strategy_state(copy.deepcopy(self.exp.strategy), decode(attributes))
            for d, attributes in state["strategies"].items()
        }
        models = {int(d): m for d, m in state["models"].items()}
        weights = {int(d): {int(w): v for w, v in ws.items()} for d, ws in state["weights"].items()}
        failed = {int(d): int(n) for d, n in state["failed_in_a_row"].items()}
        self.strategy.restore(
            {
                **state,
                "strategies": strategies,
                "models": models,
                "weights": weights,
                "failed_in_a_row": failed,
            }
        )


class BatchedEngine:
    """The batched engine: every worker in one vectorised computation, same draws.

    Each round is reported as the message engine reports it; bytes are what
    that engine would send: the model to and from every worker, and one model
    per directed hub link with ``H[j, d] != 0`` at a gossip. Runs of this
    engine cannot be resumed (no checkpoint).
    """

    def __init__(self, exp: Experiment) -> None:
        self.exp = exp

    def run(self, initial: ArrayRecord, on_round: OnRound) -> None:
        """Run :func:`~flwr_multilevel.engines.batched.simulate`, one report per round."""
        # pylint: disable-next=import-outside-toplevel
        from flwr_multilevel.engines.batched import RoundResult, simulate

        cfg, h = self.exp.cfg, self.exp.hierarchy
        model_bytes = record_bytes(initial)
        mixing = self.exp.mixing
        links = int(np.count_nonzero(mixing - np.diag(np.diag(mixing))))
        began = [time.perf_counter()]

        def adapter(server_round: int, models: Sequence[ArrayRecord], result: RoundResult) -> bool:
            gossip = server_round % int(cfg.q) == 0
            dropped = sorted(result.dropped.items())
            report = RoundReport(
                server_round,
                gossip=gossip,
                steps={
                    w: s for w, s in enumerate(result.steps.tolist()) if w not in result.dropped
                },
                dropped=[f"worker {w}: {reason}" for w, reason in dropped],
                missing=[w for w, _ in dropped],
                failed_hubs=dict(result.failed),
                slots=round_slots(
                    int(cfg.seed),
                    server_round,
                    h.rates.tolist(),
                    int(cfg.tau),
                    bool(cfg.wait_for_slowest),
                ),
                bytes_down=h.num_workers * model_bytes,
                bytes_up=h.num_workers * model_bytes,
                bytes_hubs=links * model_bytes if gossip else 0,
                seconds=time.perf_counter() - began[0],
            )
            stop = bool(on_round(report, list(models)))
            began[0] = time.perf_counter()
            return stop

        simulate(self.exp, adapter)

    def state_dict(self) -> dict[str, Any] | None:
        """Return None: the batched engine writes no checkpoint."""
        return None

    def restore(self, state: Mapping[str, Any]) -> None:
        """Refuse: runs of the batched engine cannot be resumed."""
        raise ValueError("runs of the batched backend cannot be resumed")
