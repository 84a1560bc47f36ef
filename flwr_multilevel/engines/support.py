"""What each simulation backend runs: one table, and the check that refuses the rest.

Every backend implements a setting or refuses it, before any work: a config
whose value the chosen ``simulation.backend`` does not run ends with one
``ConfigError`` naming the key (exit status 2 on the command line).

:data:`RULES` lists, per key, the values each backend runs (:data:`ANY`:
every value the schema accepts). The keys in :data:`EVERY_BACKEND` (or under a
section listed there) are implemented by all three backends: they shape the
network, data, draws, evaluation and clock that :mod:`flwr_multilevel.experiment.prepare`
builds and runs the same way whatever trains the workers. A test holds every
schema key to one of the two.

* ``ray``: Flower's simulation engine, the message engine on Ray: everything.
* ``inprocess``: the same message engine in one process, without Ray: Ray's
  GPU shares and grouped actor calls do not exist there.
* ``batched``: every worker in one vectorised computation
  (:mod:`flwr_multilevel.engines.batched`): FedAvg hubs only, every worker
  every round, buffer-free models, and no replies that could time out.
  ``hub.*`` are implemented with the message engine's semantics
  (:mod:`flwr_multilevel.engines.batched_hubs`).
"""

from typing import Any, NamedTuple

from omegaconf import DictConfig, OmegaConf

from flwr_multilevel.errors import ConfigError
from flwr_multilevel.experiment import schema

ANY = None  # every value the schema accepts
Allowed = tuple[Any, ...] | None


class Rule(NamedTuple):
    """One row of the table: the values of ``key`` each backend runs, and why not others.

    Attributes
    ----------
    key : str
        Dotted config key (``strategy.options.<name>`` for a strategy keyword).
    ray, inprocess, batched : tuple | None
        The values that backend runs; :data:`ANY` (None) for every value.
    why : str
        What a backend that restricts the key cannot do (the error's first words).
    """

    key: str
    ray: Allowed
    inprocess: Allowed
    batched: Allowed
    why: str = ""


SIM = schema.Simulation  # the schema's defaults
RULES: tuple[Rule, ...] = (
    Rule("strategy.name", ANY, ANY, ("FedAvg",), "the batched hubs average with FedAvg's rule"),
    Rule(
        "strategy.options.fraction_train",
        ANY,
        ANY,
        (1.0,),
        "the batched backend trains every worker each round",
    ),
    Rule(
        "model.name",
        ANY,
        ANY,
        ("logreg", "cnn"),
        "the batched backend trains models without buffers",
    ),
    Rule("simulation.device", ANY, ANY, ANY),
    Rule("hub.missing", ANY, ANY, ANY),
    Rule("hub.clip_norm", ANY, ANY, ANY),
    Rule("hub.min_replies", ANY, ANY, ANY),
    Rule("hub.max_failed_rounds", ANY, ANY, ANY),
    Rule(
        "simulation.timeout",
        ANY,
        ANY,
        (SIM.timeout,),
        "the batched backend waits for no replies, so none can time out",
    ),
    Rule(
        "simulation.gpus_per_worker",
        ANY,
        (SIM.gpus_per_worker,),
        (SIM.gpus_per_worker,),
        "GPU shares per worker are Ray's (this backend trains on simulation.device)",
    ),
    Rule(
        "simulation.ray_groups",
        ANY,
        (SIM.ray_groups,),
        (SIM.ray_groups,),
        "grouped actor calls are Ray's",
    ),
    Rule(
        "simulation.ray_address",
        ANY,
        (SIM.ray_address,),
        (SIM.ray_address,),
        "attaching to a Ray cluster is Ray's",
    ),
)

EVERY_BACKEND = (
    "seed",
    "rounds",
    "time_steps",
    "max_time_slots",
    "wait_for_slowest",
    "tau",
    "q",
    "lr",
    "batch_size",
    "hubs",
    "rates",
    "weighting",
    "data",
    "strategy.options",  # the other keywords: FedAvg's besides fraction_train change no number
    "eval",
    "simulation.backend",
    "simulation.cpus_per_worker",  # Ray's CPUs, and everywhere the default torch threads
    "simulation.threads",
    "theory",
    "deploy",  # read by `flwr-multilevel deploy` only: the simulation backends ignore it
    "output_dir",
    "overwrite",
)

_MISSING = object()


def check_supported(cfg: DictConfig, backend: str | None = None) -> None:
    """Raise a one-line ConfigError if ``backend`` does not run a value of ``cfg``.

    Parameters
    ----------
    cfg : DictConfig
        A config (validated against the schema).
    backend : str | None (default: None)
        ``ray``, ``inprocess`` or ``batched``; None: ``cfg.simulation.backend``.

    Raises
    ------
    ConfigError
        The first key of :data:`RULES` whose value the backend does not run,
        with what it runs and the backends that run the value.

    Examples
    --------
    >>> from flwr_multilevel.experiment.config import load_config
    >>> check_supported(load_config(None, ["hub.clip_norm=0.5"]), "batched")
    >>> check_supported(load_config(None, ["strategy.name=FedAdam"]), "batched")
    Traceback (most recent call last):
    ...
    flwr_multilevel.errors.ConfigError: strategy.name: the batched hubs average with FedAvg's ...
    """
    chosen = str(cfg.simulation.backend) if backend is None else backend
    if chosen not in schema.BACKENDS:
        raise ConfigError(
            "simulation.backend", f"expected one of {schema.BACKENDS}, got {chosen!r}"
        )
    for rule in RULES:
        allowed: Allowed = getattr(rule, chosen)
        value = OmegaConf.select(cfg, rule.key, default=_MISSING)
        if allowed is ANY or value is _MISSING or value in allowed:
            continue
        others = [name for name in schema.BACKENDS if _runs(rule, name, value)]
        takes = " or ".join(_show(v) for v in allowed)
        use = f" (use simulation.backend={' or '.join(others)})" if others else ""
        raise ConfigError(
            rule.key,
            f"{rule.why}; simulation.backend={chosen} takes {takes} only, got {_show(value)}{use}",
        )


def _runs(rule: Rule, backend: str, value: Any) -> bool:
    allowed: Allowed = getattr(rule, backend)
    return allowed is ANY or value in allowed


def _show(value: Any) -> str:
    """Return ``value`` as a config writes it: ``true``, ``600``, ``'FedAvg'``."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return repr(value)


__all__ = ["ANY", "EVERY_BACKEND", "RULES", "Rule", "check_supported"]
