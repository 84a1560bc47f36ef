"""One parser of workers per hub and of rate lists; distinct names for the two rate functions."""

import pytest

from flwr_multilevel.errors import ConfigError
from flwr_multilevel.model.hierarchy import hub_sizes
from flwr_multilevel.model.rates import operating_rates
from flwr_multilevel.strategies.settings import worker_rates


def test_one_parser_of_workers_per_hub_and_distinct_rate_functions():
    assert hub_sizes(None, "3,2") == hub_sizes(2, [3, 2]) == (3, 2)
    assert hub_sizes(3, 4) == hub_sizes(3, "4") == hub_sizes(3, [4]) == (4, 4, 4)
    with pytest.raises(ConfigError, match="^hubs: expected comma-separated integers"):
        hub_sizes(None, "2,x", keys=("hubs", "hubs"))
    # MLLSGD's rates argument (one rate, or one per worker) vs a named distribution's draw
    assert worker_rates(0.5, 3).tolist() == [0.5, 0.5, 0.5]
    assert operating_rates(3, "fixed", p=0.5).tolist() == [0.5, 0.5, 0.5]
    assert operating_rates(2, "explicit", values="0.5").tolist() == [0.5, 0.5]
