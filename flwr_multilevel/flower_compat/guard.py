"""The tested Flower range, and the checks every touch of Flower's internals makes first.

A private name that is missing or changed shape is either an error
(:class:`~flwr_multilevel.errors.FlowerCompatError`, where running without it
would change results or behaviour) or one warning naming it (where running
without it is correct, only slower). Never silently.
"""

import functools
import inspect
from collections.abc import Sequence
from logging import WARNING
from typing import Any

from flwr.common.logger import log
from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from flwr_multilevel.errors import FlowerCompatError

TESTED = ">=1.42,<1.43"  # the Flower releases every private touch was checked against

_warned: set[str] = set()  # names a warning was logged for (one each)


def installed_flower() -> str:
    """Return the installed Flower's version."""
    import flwr  # pylint: disable=import-outside-toplevel

    return str(flwr.__version__)


def in_tested_range(version: str) -> bool:
    """Return whether Flower ``version`` is in :data:`TESTED`.

    Examples
    --------
    >>> in_tested_range("1.42.0"), in_tested_range("1.42.3"), in_tested_range("1.43.0")
    (True, True, False)
    >>> in_tested_range("not a version")
    False
    """
    try:
        return Version(version) in SpecifierSet(TESTED)
    except InvalidVersion:
        return False


@functools.cache
def check_version() -> bool:
    """Return whether the installed Flower is in :data:`TESTED`; warn once if it is not.

    Every function of :mod:`flwr_multilevel.flower_compat` calls this before
    its first touch of Flower's internals.
    """
    version = installed_flower()
    if in_tested_range(version):
        return True
    log(
        WARNING,
        "flwr_multilevel is tested with flwr%s, and flwr %s is installed: each private "
        "Flower name it uses is checked when first used (flwr_multilevel.flower_compat)",
        TESTED,
        version,
    )
    return False


def compat_error(name: str, problem: str) -> FlowerCompatError:
    """Return the error for a private Flower ``name`` that is missing or changed."""
    return FlowerCompatError(
        f"Flower {installed_flower()}: {name} {problem}; flwr_multilevel relies on it "
        f"(tested with flwr{TESTED}: pip install 'flwr{TESTED}')"
    )


def warn_missing(name: str, instead: str) -> None:
    """Log (once per ``name``) that Flower lacks ``name``, and what runs ``instead``."""
    if name in _warned:
        return
    _warned.add(name)
    log(
        WARNING,
        "Flower %s: %s is missing or changed (flwr_multilevel is tested with flwr%s); %s",
        installed_flower(),
        name,
        TESTED,
        instead,
    )


def shape_problem(owner: Any, attr: str, params: Sequence[str] = ()) -> str | None:
    """Return what is wrong with ``owner.attr`` (missing, other leading parameters), or None.

    ``params`` are the names its signature must start with (``self`` aside).

    Examples
    --------
    >>> class Engine:
    ...     def worker(self, messages, replies, backend): ...
    >>> shape_problem(Engine, "worker", ("messages", "replies")) is None
    True
    >>> shape_problem(Engine, "feeder")
    'is missing'
    >>> shape_problem(Engine, "worker", ("queue",))
    'takes (messages, replies, backend), expected (queue, ...)'
    """
    value = getattr(owner, attr, None)
    if value is None:
        return "is missing"
    if not params:
        return None
    try:
        found = [p for p in inspect.signature(value).parameters if p not in ("self", "cls")]
    except (TypeError, ValueError):
        return "has no signature"
    if found[: len(params)] != list(params):
        return f"takes ({', '.join(found)}), expected ({', '.join(params)}, ...)"
    return None


def require(owner: Any, attr: str, name: str, params: Sequence[str] = ()) -> Any:
    """Return ``owner.attr``, checked by :func:`shape_problem`; else raise FlowerCompatError."""
    problem = shape_problem(owner, attr, params)
    if problem is not None:
        raise compat_error(name, problem)
    return getattr(owner, attr)


def looks_up(function: Any, global_name: str) -> bool:
    """Return whether ``function`` reads ``global_name`` when it runs (a swap then takes effect).

    Examples
    --------
    Names read in nested code (comprehensions, inner functions) count.

    >>> def run():
    ...     return [len(x) for x in ([],)]
    >>> looks_up(run, "len"), looks_up(run, "print")
    (True, False)
    """
    codes = [getattr(function, "__code__", None)]
    while codes:
        code = codes.pop()
        if code is None:
            continue
        if global_name in code.co_names:
            return True
        codes += [c for c in code.co_consts if isinstance(c, type(code))]
    return False
