"""Metrics at a hub: the keys every reply holds, their ``v_i``-weighted average, the totals."""

from flwr.app import MetricRecord

from flwr_multilevel.protocol.keys import REPLY_METRICS, WORKER_WEIGHT
from flwr_multilevel.strategies.replies import finite_number


def common_numeric_keys(records: list[MetricRecord]) -> list[str]:
    """Return the metric keys every record holds as a finite number (the weight key aside).

    Examples
    --------
    >>> common_numeric_keys([MetricRecord({"a": 1.0, "b": 2}), MetricRecord({"a": 3.0})])
    ['a']
    """
    keys = set.intersection(*(set(r.keys()) for r in records)) - {WORKER_WEIGHT}
    return sorted(k for k in keys if all(finite_number(r, k) is not None for r in records))


def weighted_metrics(records: list[MetricRecord], weights: list[float]) -> MetricRecord:
    """Return the weighted average of every metric that all records hold as a finite number.

    The same sums, in the same order, as Flower's ``aggregate_metricrecords``.

    Examples
    --------
    >>> a = MetricRecord({"loss": 1.0, "acc": 0.5})
    >>> b = MetricRecord({"loss": 3.0, "note": [1, 2]})
    >>> dict(weighted_metrics([a, b], [1.0, 3.0]))
    {'loss': 2.5}
    """
    keys = common_numeric_keys(records)
    weights = [float(w) for w in weights]
    total = sum(weights)
    factors = [w / total for w in weights]
    sums: dict[str, float] = {}
    for record, factor in zip(records, factors, strict=True):
        for key in keys:
            value = record[key]
            sums[key] = value * factor if key not in sums else sums[key] + value * factor  # type: ignore[operator]
    return MetricRecord(sums)  # type: ignore[arg-type]


def train_metrics(records: list[MetricRecord], weights: list[float]) -> MetricRecord:
    """Return a hub's train metrics: weighted averages, and total steps and examples.

    Examples
    --------
    >>> a = MetricRecord({"loss": 1.0, "num-examples": 10, "steps": 4})
    >>> b = MetricRecord({"loss": 3.0, "num-examples": 30, "steps": 2})
    >>> dict(train_metrics([a, b], [1.0, 3.0]))
    {'loss': 2.5, 'num-examples': 40, 'steps': 6}
    """
    metrics = weighted_metrics(records, weights)
    for key in REPLY_METRICS:
        metrics[key] = int(sum(finite_number(r, key) or 0.0 for r in records))
    return metrics
