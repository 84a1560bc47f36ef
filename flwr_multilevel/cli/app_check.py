"""``flwr-multilevel config --run-config ... --app DIR`` on a user's Flower app.

This repository's own app declares every key of ``default.yaml`` and is checked
as a whole experiment. Any other app (a Flower app made multi-level with
``MLLSGD.from_run_config``) has its own keys beside MLL-SGD's: only MLL-SGD's
are read and checked, exactly as its ServerApp will (the strategy is built),
and the app's own keys are listed, unchecked.
"""

from collections.abc import Mapping
from typing import Any

from flwr_multilevel.experiment.merge import default_config
from flwr_multilevel.experiment.run_config import to_run_config
from flwr_multilevel.strategies.app_config import RUN_CONFIG_KEYS, SECTIONS


def is_this_repositorys_app(run_config: Mapping[str, Any]) -> bool:
    """Return whether ``run_config`` holds every key of ``default.yaml`` (this repository's app).

    Examples
    --------
    >>> is_this_repositorys_app({"num-server-rounds": 3, "tau": 4})
    False
    """
    return set(to_run_config(default_config())) <= set(run_config)


def app_settings(run_config: Mapping[str, Any]) -> dict[str, Any]:
    """Return the MLL-SGD settings a user's app gets from ``run_config``, checked.

    Raises
    ------
    ConfigError
        A multi-level key's value (naming it), or an argument the strategy
        refuses, as :meth:`MLLSGD.from_run_config` raises it in the ServerApp.

    Examples
    --------
    >>> config = {"hubs.workers": "2,2", "tau": 8, "rates.values": "1,0.5,0.8,0.6", "lr": 0.1}
    >>> settings = app_settings(config)
    >>> settings["hubs"], settings["tau"], settings["rates"]
    ([2, 2], 8, [1.0, 0.5, 0.8, 0.6])
    >>> settings["the app's own keys (not checked)"]
    ['lr']
    """
    # pylint: disable-next=import-outside-toplevel
    from flwr_multilevel.strategies import MLLSGD

    strategy = MLLSGD.from_run_config(None, run_config)
    own = [k for k in run_config if k not in RUN_CONFIG_KEYS and not k.startswith(SECTIONS)]
    return {
        "hubs": list(strategy.sizes),
        "tau": strategy.tau,
        "q": strategy.q,
        "graph": str(run_config.get("hubs.graph", "path")),
        "graph_edges": strategy.graph.number_of_edges(),
        "rates": [round(float(p), 6) for p in strategy.rates],
        "seed": strategy.seed,
        "missing": strategy.missing,
        "the app's own keys (not checked)": sorted(own),
    }
