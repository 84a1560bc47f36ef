"""The strategy of the baseline: flwr-multilevel's ``MLLSGD`` over a stock Flower strategy.

Nothing of the algorithm lives here: this module only reads the run config
into ``MLLSGD(FedAvg(), hubs=..., tau=..., q=..., graph=..., rates=...)``.
"""

from collections.abc import Mapping
from typing import Any

from flwr_multilevel.experiment.prepare import build_strategy
from flwr_multilevel.strategies import MLLSGD

from .utils import worker_rates

WEIGHTS = {"data-size": "num-examples", "equal": "equal"}


def mll_sgd_strategy(run_config: Mapping[str, Any]) -> MLLSGD:
    """Return the MLL-SGD strategy of a run config.

    Every hub runs ``hub-strategy`` (a ``flwr.serverapp.strategy`` class, e.g.
    ``FedAvg``); ``hubs``, ``tau``, ``q``, ``hub-graph`` and ``seed`` are read by
    :meth:`MLLSGD.from_run_config`, the rest here. Federated evaluation is off:
    the server scores the global model u itself, and the run core's recorder
    (its ``on_round``) keeps the clock and stops at ``max-time-slots``.

    Raises
    ------
    ValueError
        Any bad setting, naming its key.

    Examples
    --------
    >>> cfg = {"hubs": "2,2", "tau": 8, "q": 4, "hub-graph": "complete", "seed": 0,
    ...        "rates-distribution": "fixed", "rates-p": 0.5, "weighting": "equal"}
    >>> s = mll_sgd_strategy(cfg)
    >>> (s.sizes, s.tau, s.q, s.rates.tolist())
    ((2, 2), 8, 4, [0.5, 0.5, 0.5, 0.5])
    """
    weighting = str(run_config.get("weighting", "data-size"))
    if weighting not in WEIGHTS:
        raise ValueError(f"weighting: expected 'data-size' or 'equal', got {weighting!r}")
    return MLLSGD.from_run_config(
        build_strategy(str(run_config.get("hub-strategy", "FedAvg")), {}),
        run_config,
        mixing=str(run_config.get("hub-mixing", "auto")),
        rates=worker_rates(run_config),
        weights=WEIGHTS[weighting],
        wait_for_slowest=bool(run_config.get("wait-for-slowest", False)),
        evaluate_every=0,
        discovery_timeout=float(run_config.get("discovery-timeout", 120)),
    )
