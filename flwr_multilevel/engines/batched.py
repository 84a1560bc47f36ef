"""The batched backend: a prepared experiment run by :class:`BatchedMLLSGD`.

:func:`simulate` is the experiment glue around the torch-and-numpy core
(:mod:`flwr_multilevel.engines.batched_mllsgd`): the experiment's data,
partitions, network and ``hub.*`` rules in, the worker's own draws
(``clients.worker.step_schedule``), and the hub models out as Flower
``ArrayRecord`` objects (:class:`HubModels`, converted only when read).
:func:`check_supported` refuses, before any work, what the batched backend
does not run (the table of :mod:`flwr_multilevel.engines.support`).
"""

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, overload

import torch

from flwr_multilevel.engines import support
from flwr_multilevel.engines.batched_draws import RoundDraws, example_weights, round_draws
from flwr_multilevel.engines.batched_grads import Params, gradient_function
from flwr_multilevel.engines.batched_hubs import HubRules
from flwr_multilevel.engines.batched_mllsgd import BatchedMLLSGD, RoundResult
from flwr_multilevel.errors import ConfigError
from flwr_multilevel.experiment.models import build_model, resolve_device

if TYPE_CHECKING:  # only for annotations: the core runs without Flower
    from flwr.app import ArrayRecord

    from flwr_multilevel.experiment.prepare import Experiment


class HubModels(Sequence["ArrayRecord"]):
    """The hub models of one round as ArrayRecords, converted on first access.

    Holds the stacked tensors (already a fresh result of the round), so
    rounds whose models nobody reads cost no device-to-host copy.
    """

    def __init__(self, stacked: Params) -> None:
        self._stacked = stacked
        self._records: list[ArrayRecord] | None = None

    def _materialise(self) -> list["ArrayRecord"]:
        if self._records is None:
            from flwr.app import ArrayRecord  # pylint: disable=import-outside-toplevel

            host = {key: value.detach().cpu() for key, value in self._stacked.items()}
            count = next(iter(host.values())).shape[0]
            self._records = [
                ArrayRecord({key: value[d].clone() for key, value in host.items()})
                for d in range(count)
            ]
        return self._records

    @overload
    def __getitem__(self, index: int) -> "ArrayRecord": ...

    @overload
    def __getitem__(self, index: slice) -> list["ArrayRecord"]: ...

    def __getitem__(self, index: int | slice) -> "ArrayRecord | list[ArrayRecord]":
        return self._materialise()[index]

    def __len__(self) -> int:
        return int(next(iter(self._stacked.values())).shape[0])

    def __iter__(self) -> Iterator["ArrayRecord"]:
        return iter(self._materialise())


OnRound = Callable[[int, Sequence["ArrayRecord"], RoundResult], bool | None]


def check_supported(exp: "Experiment") -> None:
    """Raise a one-line ConfigError if the batched backend cannot run ``exp``.

    Every key of the table in :mod:`flwr_multilevel.engines.support`, for
    ``simulation.backend=batched``.

    Raises
    ------
    ConfigError
        ``strategy.name`` other than FedAvg, ``strategy.options.fraction_train``
        below 1 (part of a hub sampled), a model other than logreg or cnn,
        or another key the batched backend does not run (``simulation.timeout``, ...).
    """
    support.check_supported(exp.cfg, "batched")
    from flwr.serverapp.strategy import FedAvg  # pylint: disable=import-outside-toplevel

    strategy = exp.strategy  # the object too, should a caller have swapped it
    if type(strategy) is not FedAvg:
        raise ConfigError(
            "strategy.name",
            f"the batched hubs average with FedAvg's rule, got a {type(strategy).__name__}",
        )
    if float(strategy.fraction_train) != 1.0:
        raise ConfigError(
            "strategy.options.fraction_train",
            f"the batched backend trains every worker each round, got {strategy.fraction_train}",
        )


def hub_rules(exp: "Experiment") -> HubRules:
    """Return the experiment's ``hub.*`` as the batched core takes them."""
    hub = exp.cfg.hub
    return HubRules(
        missing=str(hub.missing),
        clip_norm=None if hub.clip_norm is None else float(hub.clip_norm),
        min_replies=float(hub.min_replies),
        max_failed_rounds=int(hub.max_failed_rounds),
    )


def simulate(exp: "Experiment", on_round: OnRound | None = None) -> list["ArrayRecord"]:
    """Run a prepared experiment on the batched path; return the final hub models.

    Same algorithm, draws, initial model (``torch.manual_seed(seed)``) and
    hub averaging as the message-based engine, to float32 rounding.

    Parameters
    ----------
    exp : Experiment
        From :func:`flwr_multilevel.experiment.prepare.prepare`.
    on_round : Callable[[int, Sequence[ArrayRecord], RoundResult], bool | None] | None
        Called after every round with the round, the hub models ``y_d`` (a
        lazy sequence of ArrayRecords in the model's dtypes: read it only on
        the rounds you need it) and the round's
        :class:`~flwr_multilevel.engines.batched_mllsgd.RoundResult` (the
        steps each worker took, the hubs that kept their model and the
        workers without a valid reply, with why); returning True stops the run.

    Returns
    -------
    list[ArrayRecord]
        The hub models after the last round.

    Raises
    ------
    ConfigError
        A setting the batched backend does not run (:func:`check_supported`).
    RunAborted
        A hub kept its model ``hub.max_failed_rounds`` rounds in a row.

    Examples
    --------
    >>> from flwr_multilevel.experiment.config import load_config, validate
    >>> from flwr_multilevel.experiment.prepare import prepare
    >>> exp = prepare(validate(load_config(None, ["rounds=2", "output_dir=/tmp/doc"])))
    >>> len(simulate(exp))
    3
    """
    # pylint: disable=import-outside-toplevel
    from flwr_multilevel.clients.worker import step_schedule

    check_supported(exp)
    cfg, data = exp.cfg, exp.dataset
    device = resolve_device(str(cfg.simulation.device))
    torch.manual_seed(int(cfg.seed))
    model = build_model(str(cfg.model.name), data.input_shape, data.num_classes)
    initial = {key: value.detach().clone() for key, value in model.state_dict().items()}
    runner = BatchedMLLSGD(
        model,
        data.x_train,
        data.y_train,
        exp.partitions,
        exp.hierarchy,
        exp.mixing,
        tau=int(cfg.tau),
        q=int(cfg.q),
        lr=float(cfg.lr),
        batch_size=int(cfg.batch_size),
        seed=int(cfg.seed),
        schedule=step_schedule,
        wait_for_slowest=bool(cfg.wait_for_slowest),
        device=device,
        rules=hub_rules(exp),
    )

    def report(server_round: int, result: RoundResult) -> bool | None:
        if on_round is None:
            return None
        return on_round(server_round, HubModels(result.hubs), result)  # fresh tensors each round

    with torch.backends.cudnn.flags(
        enabled=torch.backends.cudnn.enabled,
        benchmark=True,
        deterministic=torch.backends.cudnn.deterministic,
        allow_tf32=torch.backends.cudnn.allow_tf32,
    ):
        final = runner.run(initial, exp.num_rounds, report)
    return list(HubModels(final))


__all__ = [
    "BatchedMLLSGD",
    "HubModels",
    "HubRules",
    "RoundDraws",
    "RoundResult",
    "check_supported",
    "example_weights",
    "gradient_function",
    "hub_rules",
    "round_draws",
    "simulate",
]
