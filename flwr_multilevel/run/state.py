"""Saved state as tensors and plain data only: nothing in a checkpoint can run code.

A checkpoint is read with ``torch.load(weights_only=True)``, which unpickles
tensors, numbers, strings, lists, tuples and dicts and refuses anything else.
:func:`encode` turns the state of a run (numpy arrays, Flower ``ArrayRecord``
s, hub strategies) into that form; :func:`decode` turns it back, and
:func:`load_strategy_state` puts a strategy's saved attributes onto a fresh
strategy built from the run's config, so no object is ever unpickled.

Tagged values are 2-tuples: ``("ndarray", tensor)``, ``("arrays", {key: tensor})``
(an ``ArrayRecord``), ``("strategy", {attribute: value})``.
"""

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord
from flwr.serverapp.strategy import Strategy

PLAIN = (type(None), bool, int, float, str)


class StateError(TypeError):
    """A value that a checkpoint cannot hold as tensors and plain data."""


def encode(value: Any, where: str = "state") -> Any:
    """Return ``value`` as tensors and plain data (see the module's tags).

    Raises
    ------
    StateError
        A value of another type, named by its path ``where``.

    Examples
    --------
    >>> encoded = encode({"m": np.arange(3.0), "n": [1, "a"]})
    >>> encoded["m"][0], encoded["n"]
    ('ndarray', [1, 'a'])
    """
    if isinstance(value, (PLAIN, torch.Tensor)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return ("ndarray", torch.from_numpy(np.array(value, copy=True)))
    if isinstance(value, ArrayRecord):
        return ("arrays", {k: torch.from_numpy(a.numpy().copy()) for k, a in value.items()})
    if isinstance(value, Strategy):
        return ("strategy", strategy_state(value, where))
    if isinstance(value, Mapping):
        if not all(isinstance(k, (str, int)) for k in value):
            raise StateError(f"{where}: a dict with keys other than str or int")
        return {k: encode(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise StateError(f"{where}: cannot save a {type(value).__name__} as tensors and plain data")


def decode(value: Any) -> Any:
    """Return the value :func:`encode` encoded (a strategy stays its attribute dict).

    Examples
    --------
    >>> decode(encode({"m": np.arange(3.0)}))["m"].tolist()
    [0.0, 1.0, 2.0]
    """
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        tag, payload = value
        if tag == "ndarray":
            return payload.numpy()
        if tag == "arrays":
            return ArrayRecord({k: Array(t.numpy()) for k, t in payload.items()})
        if tag == "strategy":
            return {k: decode(v) for k, v in payload.items()}
    if isinstance(value, dict):
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def strategy_state(strategy: Strategy, where: str = "strategy") -> dict[str, Any]:
    """Return a strategy's attributes as tensors and plain data, without its functions.

    Functions (metric aggregators, selection rules) are what its constructor
    set; a strategy rebuilt from the same config has them again.

    Raises
    ------
    StateError
        An attribute that cannot be saved as tensors and plain data.
    """
    return {
        name: encode(value, f"{where}.{name}")
        for name, value in vars(strategy).items()
        if not callable(value) or isinstance(value, Strategy)
    }


def load_strategy_state(strategy: Strategy, state: Mapping[str, Any]) -> Strategy:
    """Set the saved attributes (:func:`strategy_state`, decoded) onto ``strategy``; return it.

    A wrapped strategy (Flower's wrappers keep it in an attribute) gets its own.

    Raises
    ------
    StateError
        The state names an attribute the strategy does not have (another strategy).
    """
    for name, value in state.items():
        if not hasattr(strategy, name):
            raise StateError(f"{type(strategy).__name__} has no attribute {name!r}")
        current = getattr(strategy, name)
        if isinstance(current, Strategy) and isinstance(value, Mapping):
            load_strategy_state(current, value)
        else:
            setattr(strategy, name, value)
    return strategy
