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

from flwr_multilevel.errors import ConfigError
from flwr_multilevel.model.hierarchy import Hierarchy, build_hierarchy, hub_sizes
from flwr_multilevel.model.mixing import (
    Spectrum,
    check_mixing,
    complete_mixing,
    metropolis_hastings,
    mix_models,
    mixing_matrix,
    spectrum,
)
from flwr_multilevel.model.rates import operating_rates
from flwr_multilevel.model.topology import hub_graph, load_graph_file

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
