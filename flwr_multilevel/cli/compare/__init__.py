"""Compare several configs on the same seed, data, partition and clock.

A comparison is a list of runs, each a full config. ``flwr-multilevel compare``
takes config files, shipped baseline names (``local_sgd``, see ``baselines/``)
or comparison files, which hold several runs::

    comparison: "q versus tau at q*tau = 32"   # title of the table and plots
    common: {data: {name: mnist}}              # keys every run shares
    runs:
      Distributed SGD: {base: distributed_sgd, hubs: {workers: 20}}
      MLL-SGD q=4 tau=8: {tau: 8, q: 4}
    targets: {accuracy: 0.9, loss: 0.3}        # optional

A run's config is the default, then ``common``, then its ``base`` (a
baseline name or a YAML path), then its own keys, then the command line's
``key=value`` overrides.

The comparison's runs (:mod:`.load`, :mod:`.baselines`), their numbers
(:mod:`.metrics`), its table and plots (:mod:`.table`), what it may replace in
its folder (:mod:`.target`), the runner (:mod:`.runner`), its runs as parallel
Ray tasks (:mod:`.sweep`) and finished runs read back (:mod:`.finished`).
"""

from flwr_multilevel.cli.compare.baselines import baseline_names, baseline_path, baselines_dir
from flwr_multilevel.cli.compare.finished import load_finished, read_index
from flwr_multilevel.cli.compare.load import (
    SHARED_KEYS,
    Comparison,
    RunSpec,
    load_comparison,
    slug,
    with_seeds,
)
from flwr_multilevel.cli.compare.metrics import default_targets, first_reaching, mean_row, summarize
from flwr_multilevel.cli.compare.runner import (
    Progress,
    check_comparison_dir,
    comparison_dir,
    run_comparison,
)
from flwr_multilevel.cli.compare.sweep import SweepOptions
from flwr_multilevel.cli.compare.table import COLUMNS, TABLE, setup_of, write_outputs, write_table

__all__ = [
    "COLUMNS",
    "SHARED_KEYS",
    "TABLE",
    "Comparison",
    "Progress",
    "RunSpec",
    "SweepOptions",
    "baseline_names",
    "baseline_path",
    "baselines_dir",
    "check_comparison_dir",
    "comparison_dir",
    "default_targets",
    "first_reaching",
    "load_comparison",
    "load_finished",
    "mean_row",
    "read_index",
    "run_comparison",
    "setup_of",
    "slug",
    "summarize",
    "with_seeds",
    "write_outputs",
    "write_table",
]
