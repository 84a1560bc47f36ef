"""The typed schema of an experiment config: one dataclass per section, and the names it takes.

The dataclasses are omegaconf structured configs: a value of the wrong type is
refused when it is merged in (``seed=abc``, ``output_dir=[1,2]``), and
:func:`flwr_multilevel.experiment.config.validate` then holds every value to its
range (:mod:`flwr_multilevel.experiment.ranges`,
:mod:`flwr_multilevel.experiment.strategy_options`). ``flwr_multilevel/default.yaml``
documents the same keys with the same defaults (a test compares them).
"""

from dataclasses import dataclass, field
from typing import Any

# re-exported: the range checks and the strategy check were defined here
from flwr_multilevel.experiment.ranges import (  # noqa: F401
    MAX_WORKERS_PER_HUB,
    choice,
    flag,
    float_list,
    integer,
    number,
    path_text,
    ray_address,
    show,
    text,
)
from flwr_multilevel.experiment.strategy_options import (  # noqa: F401
    OPTION_RANGES,
    RESERVED_OPTIONS,
    check_strategy,
    strategy_class,
)

# the names the modules accept (tests compare them with the modules' own constants)
GRAPHS = ("complete", "ring", "path", "star", "erdos_renyi")
MIXINGS = ("auto", "metropolis", "complete")
DISTRIBUTIONS = ("fixed", "uniform", "two_level", "explicit")
DATASETS = ("digits", "mnist", "fashion_mnist", "emnist_letters", "cifar10")
PARTITIONS = ("iid", "unequal", "dirichlet", "shards")
MODELS = ("logreg", "cnn", "resnet18")
BACKENDS = ("ray", "inprocess", "batched")
DEVICES = ("cpu", "cuda", "auto")
WEIGHTINGS = ("equal", "data_size")
MAX_CONSTANT = 1e15  # theory constants: beyond this the bound's products overflow


@dataclass
class Hubs:
    """``hubs.*``: the hub graph and its workers."""

    count: int = 3
    workers: Any = 4  # int, list of ints, or "2,3,4"
    graph: str = "path"
    edge_probability: float = 0.5
    mixing: str = "auto"


@dataclass
class Rates:
    """``rates.*``: the operating rates p_i."""

    distribution: str = "uniform"
    p: float = 1.0
    low: float = 0.5
    high: float = 1.0
    slow_fraction: float = 0.1
    p_slow: float = 0.6
    p_fast: float = 0.9
    values: Any = None  # None, list of numbers, or "0.5,1.0"


@dataclass
class Data:
    """``data.*``: the data set and its partition."""

    name: str = "digits"
    root: str = "data"
    partition: str = "iid"
    alpha: float = 0.5
    shards_per_worker: int = 2


@dataclass
class Model:
    """``model.*``."""

    name: str = "logreg"


@dataclass
class Strategy:
    """``strategy.*``: the Flower strategy at every hub and its keyword arguments."""

    name: str = "FedAvg"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Hub:
    """``hub.*``: how every hub treats failed and hostile workers."""

    missing: str = "stay"
    clip_norm: float | None = None
    min_replies: float = 0.0
    max_failed_rounds: int = 5


@dataclass
class Eval:
    """``eval.*``: what is evaluated, and when."""

    every: int = 0
    train_loss: bool = True
    train_examples: int | None = 10000
    hubs: bool = False


@dataclass
class Simulation:
    """``simulation.*``: how the workers are run."""

    backend: str = "ray"
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    device: str = "cpu"
    timeout: float = 600.0
    threads: int = 0
    ray_groups: bool = True
    ray_address: str = ""  # empty: a private Ray instance; auto or host:port: attach


@dataclass
class Deploy:
    """``deploy.*``: every wait of a deployment (``flwr-multilevel deploy``) is bounded here."""

    gossip_timeout: float = 30.0
    peer_wait: float = 600.0
    discovery_timeout: float = 300.0
    start_timeout: float = 300.0
    superlink_timeout: float = 60.0
    run_timeout: float | None = None
    strict: bool = False


@dataclass
class Theory:
    """``theory.*``: constants of Theorem 1."""

    L: float | None = None  # noqa: N815 (the paper's name)
    sigma2: float | None = None
    beta: float | None = None
    f_gap: float | None = None


@dataclass
class Config:
    """The whole experiment config (the schema of ``default.yaml``)."""

    seed: int = 0
    rounds: int = 60
    time_steps: int | None = None
    max_time_slots: int | None = None
    wait_for_slowest: bool = False
    tau: int = 4
    q: int = 2
    lr: float = 0.5
    batch_size: int = 16
    hubs: Hubs = field(default_factory=Hubs)
    rates: Rates = field(default_factory=Rates)
    weighting: str = "data_size"
    data: Data = field(default_factory=Data)
    model: Model = field(default_factory=Model)
    strategy: Strategy = field(default_factory=Strategy)
    hub: Hub = field(default_factory=Hub)
    eval: Eval = field(default_factory=Eval)
    simulation: Simulation = field(default_factory=Simulation)
    deploy: Deploy = field(default_factory=Deploy)
    theory: Theory = field(default_factory=Theory)
    output_dir: str | None = None
    overwrite: bool = False
