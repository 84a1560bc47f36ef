"""Range checks of config values: each returns the value, or raises ConfigError naming its key.

Messages stay one short line (:func:`show`), and every check names what it
expected, so a user sees the key at fault and the values it takes.
"""

import math
import re
from typing import Any

from omegaconf import OmegaConf

from flwr_multilevel.errors import ConfigError
from flwr_multilevel.model.lists import number_list

MAX_WORKERS_PER_HUB = 10_000


def show(value: Any) -> str:
    """Return ``repr(value)``, cut to 80 characters (error messages stay one short line)."""
    text = repr(value).replace("\n", " ")
    return text if len(text) <= 80 else text[:77] + "..."


def plain(value: Any) -> Any:
    """Return ``value`` as plain Python (an omegaconf list or dict as a list or dict)."""
    return OmegaConf.to_container(value, resolve=False) if OmegaConf.is_config(value) else value


def _fmt(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def integer(key: str, value: Any, low: int, high: int | None = None) -> int:
    """Return ``value`` if it is an integer in ``[low, high]``; else raise ConfigError.

    Examples
    --------
    >>> integer("tau", 4, 1)
    4
    """
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
    if not ok or (high is not None and value > high):
        span = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ConfigError(key, f"expected an integer {span}, got {show(value)}")
    return int(value)


def number(
    key: str,
    value: Any,
    low: float,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``value`` as a float if it is a finite number in its interval; else raise.

    Examples
    --------
    >>> number("lr", 0.5, 0, low_open=True)
    0.5
    >>> number("lr", float("nan"), 0, low_open=True)
    Traceback (most recent call last):
    ...
    flwr_multilevel.errors.ConfigError: lr: expected a finite number > 0, got nan
    """
    real = isinstance(value, int | float) and not isinstance(value, bool)
    x = float(value) if real else math.nan
    fine = (
        math.isfinite(x)
        and (x > low if low_open else x >= low)
        and (x < high if high_open else x <= high)
    )
    if not fine:
        if high == math.inf:
            span = f"{'>' if low_open else '>='} {_fmt(low)}"
        else:
            span = (
                f"in {'(' if low_open else '['}{_fmt(low)}, {_fmt(high)}{')' if high_open else ']'}"
            )
        raise ConfigError(key, f"expected a finite number {span}, got {show(value)}")
    return x


def choice(key: str, value: Any, allowed: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``allowed``; else raise ConfigError."""
    if value not in allowed:
        raise ConfigError(key, f"expected one of {', '.join(allowed)}, got {show(value)}")
    return str(value)


def flag(key: str, value: Any) -> bool:
    """Return ``value`` if it is a bool; else raise ConfigError."""
    if not isinstance(value, bool):
        raise ConfigError(key, f"expected true or false, got {show(value)}")
    return value


def text(key: str, value: Any) -> str:
    """Return ``value`` if it is a string; else raise ConfigError."""
    if not isinstance(value, str):
        raise ConfigError(key, f"expected a string, got {show(value)}")
    return value


def path_text(key: str, value: Any) -> str:
    """Return ``value`` if it can name a file: a string without NUL, parts <= 255 bytes."""
    text = str(value)
    if "\x00" in text or not text.strip():
        raise ConfigError(key, f"expected a file or folder name, got {show(value)}")
    parts = text.replace("\\", "/").split("/")
    if len(text.encode()) > 4000 or max(len(p.encode()) for p in parts) > 255:
        raise ConfigError(key, "expected a path of at most 4000 bytes and parts of at most 255")
    return text


_HOST = re.compile(r"[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]")  # a name, IPv4, or [IPv6]


def ray_address(key: str, value: Any) -> str:
    """Return ``value`` if it is empty, ``auto`` or the ``host:port`` of a Ray cluster's head.

    Ray Client's ``ray://`` addresses are refused: Flower's engine needs a
    driver in the cluster's network, not a client.

    Examples
    --------
    >>> ray_address("simulation.ray_address", "10.0.0.5:6379"), ray_address("k", "auto")
    ('10.0.0.5:6379', 'auto')
    >>> ray_address("simulation.ray_address", "ray://head:10001")
    Traceback (most recent call last):
    ...
    flwr_multilevel.errors.ConfigError: simulation.ray_address: expected empty, auto or ...
    """
    address = text(key, value)
    if address in ("", "auto"):
        return address
    host, _, port = address.rpartition(":")
    if not (_HOST.fullmatch(host) and port.isdigit() and 0 < int(port) < 65536):
        raise ConfigError(
            key,
            "expected empty, auto or the host:port of a Ray cluster's head "
            f"(e.g. 10.0.0.5:6379), got {show(value)}",
        )
    return address


def float_list(key: str, value: Any) -> list[float] | None:
    """Return None, or a list of rates in (0, 1] from a number, a list or a ``"0.5,1"`` string.

    Examples
    --------
    >>> float_list("rates.values", "0.5, 1")
    [0.5, 1.0]
    """
    value = plain(value)
    if value is None:
        return None
    return [number(key, v, 0, 1, low_open=True) for v in number_list(key, value, float)]
