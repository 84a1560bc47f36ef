"""Multi-Level Local SGD (MLL-SGD) on Flower.

The network model (hubs, workers, operating rates, hub graphs, mixing
matrices) is importable without Flower or torch; the engine, apps and command
line compose it with Flower's Message API.

Subpackages: ``model`` (the pure network model), ``protocol`` (message keys
and codec), ``experiment`` (config, data, models), ``run`` (the run core),
``engines`` (in-process, Ray, batched), ``deploy`` (hubs as SuperLinks),
``cli``; and what a Flower user imports: ``strategies`` (server side),
``clients`` (worker side), plus ``baselines`` (configs). The source
repository shows ``strategies/``, ``clients/`` and ``baselines/`` at its top
as links to these folders; ``flwr_multilevel`` is the one importable name.
"""

from importlib import import_module
from typing import Any

from flwr_multilevel.errors import ConfigError

# The network model imports networkx: loaded on first use, so a worker's ClientApp
# (``flwr_multilevel.client_app``, started once per message in a deployment) never pays it.
_LAZY = {
    "Hierarchy": "flwr_multilevel.model.hierarchy",
    "build_hierarchy": "flwr_multilevel.model.hierarchy",
    "hub_sizes": "flwr_multilevel.model.hierarchy",
    "Spectrum": "flwr_multilevel.model.mixing",
    "check_mixing": "flwr_multilevel.model.mixing",
    "complete_mixing": "flwr_multilevel.model.mixing",
    "metropolis_hastings": "flwr_multilevel.model.mixing",
    "mix_models": "flwr_multilevel.model.mixing",
    "mixing_matrix": "flwr_multilevel.model.mixing",
    "spectrum": "flwr_multilevel.model.mixing",
    "operating_rates": "flwr_multilevel.model.rates",
    "hub_graph": "flwr_multilevel.model.topology",
    "load_graph_file": "flwr_multilevel.model.topology",
}


def __getattr__(name: str) -> Any:
    """Return a name of the network model, importing its module on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'flwr_multilevel' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "Hierarchy",
    "Spectrum",
    "build_hierarchy",
    "check_mixing",
    "complete_mixing",
    "hub_graph",
    "hub_sizes",
    "load_graph_file",
    "metropolis_hastings",
    "mix_models",
    "mixing_matrix",
    "operating_rates",
    "spectrum",
]
