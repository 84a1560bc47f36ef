"""Lists of numbers as configs give them: a number, a sequence, or ``"2,3,4"``.

A Flower run config (TOML) has no lists, so a list travels as a comma-separated
string; the YAML config and the Python API give real lists. Every list of the
network model (workers per hub, operating rates) is read here, so that ``"2,,2"``
and ``"1.0,x"`` are refused the same way, naming the key, wherever they come from.
"""

from collections.abc import Sequence

from flwr_multilevel.errors import ConfigError


def number_list(key: str, value: object, kind: type[int] | type[float]) -> list:
    """Return the numbers of ``value``: one number, a sequence, or a comma-separated string.

    Only strings are converted (to ``kind``); the items of a sequence are
    returned as they are, for the caller's range checks.

    Raises
    ------
    ConfigError
        An empty string or item (``"2,,2"``), an item that is not a ``kind``
        (``"1.0,x"``, or ``"2.5"`` for integers), or a value of another type.

    Examples
    --------
    >>> number_list("hubs.workers", "3, 4", int), number_list("rates.values", 0.5, float)
    ([3, 4], [0.5])
    >>> number_list("hubs.workers", "2,,2", int)
    Traceback (most recent call last):
    ...
    flwr_multilevel.errors.ConfigError: hubs.workers: expected ... without empty items, got '2,,2'
    """
    what = "integers" if kind is int else "numbers"
    if isinstance(value, str):
        items = [item.strip() for item in value.split(",")]
        if not all(items):
            raise ConfigError(
                key, f"expected comma-separated {what} without empty items, got {value[:80]!r}"
            )
        try:
            return [kind(item) for item in items]
        except ValueError:
            raise ConfigError(key, f"expected comma-separated {what}, got {value[:80]!r}") from None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [value]
    if isinstance(value, Sequence) and not isinstance(value, bytes):
        return list(value)
    raise ConfigError(key, f"expected a number or a list of {what}, got {str(value)[:80]!r}")
