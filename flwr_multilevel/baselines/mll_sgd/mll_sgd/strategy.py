"""The strategy of the baseline: flwr-multilevel's ``MLLSGD`` over a stock Flower strategy.

Nothing of the algorithm lives here: this module only reads the run config
into ``MLLSGD(FedAvg(), hubs=..., tau=..., q=..., graph=..., rates=...)``.
"""

from collections.abc import Mapping
from typing import Any

from flwr_multilevel.experiment.prepare import build_strategy
from flwr_multilevel.strategies import MLLSGD


def mll_sgd_strategy(run_config: Mapping[str, Any]) -> MLLSGD:
    """Return the MLL-SGD strategy of a run config.

    Every hub runs ``strategy.name`` (a ``flwr.serverapp.strategy`` class, e.g.
    ``FedAvg``); :meth:`MLLSGD.from_run_config` reads the network and the
    training settings (``hubs.*``, ``tau``, ``q``, ``seed``, ``rates.*``,
    ``weighting``, ``wait_for_slowest``). Federated evaluation is off: the
    server scores the global model u itself, and the run core's recorder (its
    ``on_round``) keeps the clock and stops at ``max_time_slots``. Workers
    have ``simulation.timeout`` seconds (at least 60) to connect, as in
    ``flwr-multilevel run``.

    Raises
    ------
    ValueError
        Any bad setting, naming its key.

    Examples
    --------
    >>> cfg = {"hubs.count": 2, "hubs.workers": 2, "tau": 8, "q": 4, "hubs.graph": "complete",
    ...        "seed": 0, "rates.distribution": "fixed", "rates.p": 0.5, "weighting": "equal"}
    >>> s = mll_sgd_strategy(cfg)
    >>> (s.sizes, s.tau, s.q, s.rates.tolist())
    ((2, 2), 8, 4, [0.5, 0.5, 0.5, 0.5])
    """
    timeout = float(run_config.get("simulation.timeout", 600.0))
    return MLLSGD.from_run_config(
        build_strategy(str(run_config.get("strategy.name", "FedAvg")), {}),
        run_config,
        evaluate_every=0,
        discovery_timeout=max(60.0, timeout),
    )
