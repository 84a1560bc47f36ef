"""The strategy chain at a hub: a Flower strategy, what it wraps, and the end that averages."""

from flwr.serverapp.strategy import (
    Bulyan,
    FedMedian,
    FedTrimmedAvg,
    FedXgbBagging,
    FedXgbCyclic,
    Krum,
    Strategy,
)

from flwr_multilevel.protocol.keys import WORKER_WEIGHT

UNWEIGHTED = (FedMedian, FedTrimmedAvg, Krum, Bulyan)  # robust rules that ignore weights
MIN_NODE_ATTRS = ("min_train_nodes", "min_evaluate_nodes", "min_available_nodes")


def strategy_chain(strategy: Strategy) -> list[Strategy]:
    """Return ``strategy`` and every strategy it wraps, outermost first.

    Flower's wrappers (the differential-privacy ones) keep the wrapped
    strategy in ``.strategy``.

    Examples
    --------
    >>> from flwr.serverapp.strategy import FedAvg
    >>> from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping as DP
    >>> [type(s).__name__ for s in strategy_chain(DP(FedAvg(), 0.0, 1.0, 2))]
    ['DifferentialPrivacyServerSideFixedClipping', 'FedAvg']
    """
    chain = [strategy]
    while isinstance(inner := getattr(chain[-1], "strategy", None), Strategy):
        chain.append(inner)
    return chain


def weighting_aggregator(strategy: Strategy, num_workers: int) -> Strategy:
    """Return the end of ``strategy``'s chain, set to average with the weights ``v_i``.

    Every node minimum along the chain is capped at ``num_workers``.

    Raises
    ------
    ValueError
        The end of the chain cannot weight its average (no ``weighted_by_key``),
        or it does not average arrays (the XGBoost strategies).
    """
    chain = strategy_chain(strategy)
    aggregator = chain[-1]
    if isinstance(aggregator, (FedXgbBagging, FedXgbCyclic)):
        raise ValueError(
            f"HubStrategy: {type(aggregator).__name__} combines XGBoost trees; "
            "MLL-SGD's hubs average model arrays (use FedAvg or another averaging strategy)"
        )
    if not hasattr(aggregator, "weighted_by_key"):
        raise ValueError(
            f"HubStrategy: {type(aggregator).__name__} has no weighted_by_key, so it "
            "cannot average with the hub's weights v_i; wrap a FedAvg-based strategy"
        )
    aggregator.weighted_by_key = WORKER_WEIGHT  # type: ignore[attr-defined]
    for member in chain:  # stock minimums (2 nodes) would wait forever at a small hub
        for attr in MIN_NODE_ATTRS:
            if isinstance(getattr(member, attr, None), int):
                setattr(member, attr, min(getattr(member, attr), num_workers))
    return aggregator
