"""Multi-Level Local SGD (MLL-SGD) on Flower.

The network model (hubs, workers, operating rates, hub graphs, mixing
matrices) is importable without Flower or torch; the engine, apps and command
line compose it with Flower's Message API.
"""

from .errors import ConfigError
from .hierarchy import Hierarchy, build_hierarchy, hub_sizes
from .mixing import (
    Spectrum,
    check_mixing,
    complete_mixing,
    metropolis_hastings,
    mix_models,
    mixing_matrix,
    spectrum,
)
from .rates import operating_rates
from .topology import hub_graph, load_graph_file

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
