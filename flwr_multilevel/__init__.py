"""Multi-Level Local SGD (MLL-SGD) on Flower.

The network model (hubs, workers, operating rates, hub graphs, mixing
matrices) is importable without Flower or torch; the engine, apps and command
line compose it with Flower's Message API.

Its subpackages ``flwr_multilevel.strategies`` (server side), ``.clients``
(worker side) and ``.baselines`` (configs) live at the top of the source
repository and are installed inside this package, so nothing generic lands at
the top of site-packages.
"""

from pathlib import Path as _Path

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

# In a source checkout (or a Flower App bundle of it) the subpackages sit beside
# this folder; an installed wheel holds them inside it.
_SOURCE_ROOT = _Path(__file__).resolve().parent.parent
if not (_Path(__file__).parent / "strategies").is_dir() and all(
    (_SOURCE_ROOT / name / "__init__.py").is_file() for name in ("strategies", "clients")
):
    __path__.append(str(_SOURCE_ROOT))  # noqa: F821 (the package's own __path__)

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
