"""The hub average of stock FedAvg (and FedProx), on arrays the hub has already decoded.

A hub whose strategy is exactly Flower's FedAvg or FedProx (their
``aggregate_train`` is the same), with Flower's own metric aggregation, needs
nothing from the strategy but ``aggregate_arrayrecords``: this module does the
same float operations in the same order on the values the reply checks
decoded, so the result is bit-identical without building a message per worker,
re-validating and decoding every reply a second time. Any other strategy or
chain goes through the strategy itself.
"""

from collections.abc import Callable, Mapping, Sequence

import numpy as np
from flwr.app import Array, ArrayRecord
from flwr.serverapp.strategy import FedAvg, FedProx, Strategy

from flwr_multilevel import flower_compat
from flwr_multilevel.protocol.codec import array_record, encode

PLAIN = (FedAvg, FedProx)


def is_plain_fedavg(strategy: Strategy) -> bool:
    """Return whether ``strategy`` aggregates exactly as stock FedAvg does.

    Examples
    --------
    >>> is_plain_fedavg(FedAvg()), is_plain_fedavg(FedProx(proximal_mu=0.1))
    (True, True)
    >>> from flwr.serverapp.strategy import FedAdam
    >>> is_plain_fedavg(FedAdam())
    False
    """
    return type(strategy) in PLAIN and flower_compat.is_flower_metric_aggregation(
        getattr(strategy, "train_metrics_aggr_fn", None)
    )


def fedavg_arrays(
    inputs: Sequence[tuple[Mapping[str, np.ndarray], float]],
) -> dict[str, np.ndarray]:
    """Return ``sum_i (w_i / sum_j w_j) x_i``, as Flower's ``aggregate_arrayrecords`` computes it.

    Parameters
    ----------
    inputs : Sequence[tuple[Mapping[str, np.ndarray], float]]
        Each worker's arrays and weight, in the order the strategy would see them.

    Returns
    -------
    dict[str, np.ndarray]
        The weighted average of every array (keys in the order of the first input).

    Raises
    ------
    ZeroDivisionError
        All weights are 0 (as Flower's does).

    Examples
    --------
    >>> one, three = {"w": np.ones(2)}, {"w": 3 * np.ones(2)}
    >>> fedavg_arrays([(one, 1.0), (three, 1.0)])["w"].tolist()
    [2.0, 2.0]
    """
    weights = [weight for _, weight in inputs]
    total = sum(weights)
    factors = [weight / total for weight in weights]
    average: dict[str, np.ndarray] = {}
    for (values, _), factor in zip(inputs, factors, strict=True):
        for key, value in values.items():
            if key not in average:
                average[key] = value * factor
            else:
                average[key] += value * factor
    return average


def fedavg_record(
    records: Mapping[int, ArrayRecord],
    weights: Mapping[int, float],
    values: Callable[[str, Array], np.ndarray],
) -> ArrayRecord:
    """Return the :func:`fedavg_arrays` of ``records`` in worker order, encoded for sending.

    ``records`` and ``weights`` are keyed by worker id; ``values`` decodes one
    array of a record (the hub decodes in its model's layout, without parsing).
    """
    average = fedavg_arrays(
        [({k: values(k, a) for k, a in records[w].items()}, weights[w]) for w in sorted(records)]
    )
    return array_record((k, encode(np.asarray(v))) for k, v in average.items())
