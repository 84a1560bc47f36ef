"""Baselines as configs on the MLL-SGD engine.

Each ``<name>.yaml`` here is a small config on top of the default one
(``flwr-multilevel config`` prints it); ``flwr-multilevel run <name>`` and
``flwr-multilevel compare <name> ...`` accept the bare name. They all use the
default's 12 workers and 240 time steps, so they compare on one clock.
"""

from pathlib import Path

BASELINES = tuple(sorted(path.stem for path in Path(__file__).parent.glob("*.yaml")))
