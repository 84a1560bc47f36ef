"""An MLL-SGD experiment from a config: network, data, strategy and folder, checked up front."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import networkx as nx
import numpy as np
import torch
from flwr.app import ArrayRecord
from flwr.serverapp import strategy as flwr_strategies
from flwr.serverapp.strategy import Strategy
from omegaconf import DictConfig, OmegaConf

from flwr_multilevel.errors import ConfigError
from flwr_multilevel.experiment.config import num_rounds
from flwr_multilevel.experiment.data import Dataset, load_dataset, partition, train_size
from flwr_multilevel.experiment.models import build_model, resolve_device
from flwr_multilevel.experiment.ranges import plain
from flwr_multilevel.experiment.schema import check_strategy
from flwr_multilevel.model.hierarchy import Hierarchy, build_hierarchy, hub_sizes
from flwr_multilevel.model.mixing import (
    Spectrum,
    mixing_matrix,
    spectrum,
)
from flwr_multilevel.model.rates import operating_rates
from flwr_multilevel.model.theory import theory_report
from flwr_multilevel.model.topology import hub_graph
from flwr_multilevel.protocol.keys import (
    BATCH_SIZE,
    DATA_ROOT,
    DATASET,
    DEVICE,
    LR,
    MODEL,
    NUM_WORKERS,
    PARTITION,
    PARTITION_ALPHA,
    PARTITION_SHARDS,
    SEED,
    TORCH_THREADS,
)
from flwr_multilevel.run.recorder import RunPlan
from flwr_multilevel.run.results import plan_output_dir
from flwr_multilevel.strategies import MLLSGD, OnRound


@dataclass
class Experiment:
    """Everything a run needs, built and checked before any training."""

    cfg: DictConfig
    hierarchy: Hierarchy
    graph: nx.Graph
    mixing: np.ndarray
    spectrum: Spectrum
    partitions: list[np.ndarray]
    dataset: Dataset
    strategy: Strategy
    output_dir: Path
    theory: dict[str, Any]

    @property
    def num_rounds(self) -> int:
        """Rounds to run: ``ceil(time_steps / tau)`` if ``time_steps`` is set, else ``rounds``."""
        return num_rounds(self.cfg)

    @property
    def eval_every(self) -> int:
        """Evaluate every this many time steps (default: every gossip, q * tau)."""
        return int(self.cfg.eval.every) or int(self.cfg.q) * int(self.cfg.tau)

    @property
    def plan(self) -> RunPlan:
        """Return the run's rounds, evaluation schedule, slot budget and network size."""
        slots = self.cfg.max_time_slots
        return RunPlan(
            tau=int(self.cfg.tau),
            num_rounds=self.num_rounds,
            eval_every=self.eval_every,
            num_workers=self.hierarchy.num_workers,
            num_hubs=self.hierarchy.num_hubs,
            max_time_slots=None if slots is None else int(slots),
        )


def build_strategy(name: str, options: dict[str, Any]) -> Strategy:
    """Return ``flwr.serverapp.strategy.<name>(**options)``.

    Raises
    ------
    ConfigError
        Unknown strategy or keyword arguments it does not take.
    """
    check_strategy(name, options)  # also for callers that bypass the config's validation
    cls = getattr(flwr_strategies, name, None)
    if not (isinstance(cls, type) and issubclass(cls, Strategy)) or cls is Strategy:
        known = sorted(
            n
            for n in flwr_strategies.__all__
            if isinstance(getattr(flwr_strategies, n), type) and n not in ("Strategy", "Result")
        )
        raise ConfigError(
            "strategy.name",
            f"expected a strategy of flwr.serverapp.strategy ({', '.join(known)}), got {name!r}",
        )
    try:
        return cls(**options)  # type: ignore[no-any-return]
    except TypeError as err:
        raise ConfigError("strategy.options", f"{name} rejected {options}: {err}") from None


def prepare(cfg: DictConfig) -> Experiment:
    """Build and check the network, data, strategy and output folder of a config.

    Raises
    ------
    ConfigError
        On any invalid setting; nothing has been trained or written yet.
    """
    sizes = hub_sizes(cfg.hubs.count, plain(cfg.hubs.workers))
    num_workers = sum(sizes)
    root = str(Path(str(cfg.data.root)).expanduser().absolute())
    train_size(cfg.data.name)  # checks data.name before anything is loaded
    dataset = load_dataset(cfg.data.name, root)
    parts = partition(
        dataset.y_train.numpy(),
        num_workers,
        cfg.data.partition,
        cfg.seed,
        alpha=float(cfg.data.alpha),
        shards_per_worker=int(cfg.data.shards_per_worker),
    )
    weights = (
        np.ones(num_workers)
        if cfg.weighting == "equal"
        else np.array([len(p) for p in parts], dtype=np.float64)
    )
    rate_options = cast(dict[str, Any], OmegaConf.to_container(cfg.rates))
    distribution = rate_options.pop("distribution")
    rates = operating_rates(num_workers, distribution, seed=cfg.seed, **rate_options)
    hierarchy = build_hierarchy(sizes, weights, rates)
    graph = hub_graph(cfg.hubs.graph, len(sizes), p=cfg.hubs.edge_probability, seed=cfg.seed)
    mix = mixing_matrix(graph, hierarchy.b, cfg.hubs.mixing)
    options = cast(dict[str, Any], OmegaConf.to_container(cfg.strategy.options))
    strategy = build_strategy(cfg.strategy.name, options)
    build_model(cfg.model.name, dataset.input_shape, dataset.num_classes)  # checks model.name
    resolve_device(str(cfg.simulation.device))  # checks that a requested GPU is there
    report = theory_report(
        hierarchy,
        mix,
        graph,
        tau=int(cfg.tau),
        q=int(cfg.q),
        time_steps=num_rounds(cfg) * int(cfg.tau),
        lr=float(cfg.lr),
        **{key: cfg.theory[key] for key in ("L", "sigma2", "beta", "f_gap")},
    )
    output = (  # a given folder was checked by the entry point; none: a new unique one
        plan_output_dir(None)
        if cfg.output_dir in (None, "")
        else Path(str(cfg.output_dir)).expanduser().absolute()
    )
    cfg.output_dir, cfg.data.root = str(output), root
    exp = Experiment(
        cfg, hierarchy, graph, mix, spectrum(mix), parts, dataset, strategy, output, report
    )
    if cfg.simulation.backend == "batched":
        from flwr_multilevel.engines.batched import check_supported  # pylint: disable=import-outside-toplevel

        check_supported(exp)
    return exp


def torch_threads(cfg: DictConfig) -> int:
    """Return the torch threads of every worker and of the server's evaluation.

    ``simulation.threads``, or by default the CPUs a Ray worker is given
    (``simulation.cpus_per_worker``, at least 1) on every backend: the same
    thread count everywhere makes float sums, and so results, bit-identical
    between backends and reruns, whatever else runs on the machine.
    """
    threads = int(cfg.simulation.threads)
    return threads if threads > 0 else max(1, int(cfg.simulation.cpus_per_worker))


def train_config(exp: Experiment) -> dict[str, int | float | str | bool]:
    """Return what every worker receives each round besides its own instructions."""
    cfg = exp.cfg
    return {
        LR: float(cfg.lr),
        BATCH_SIZE: int(cfg.batch_size),
        SEED: int(cfg.seed),
        DATASET: str(cfg.data.name),
        DATA_ROOT: str(cfg.data.root),
        PARTITION: str(cfg.data.partition),
        PARTITION_ALPHA: float(cfg.data.alpha),
        PARTITION_SHARDS: int(cfg.data.shards_per_worker),
        NUM_WORKERS: exp.hierarchy.num_workers,
        MODEL: str(cfg.model.name),
        DEVICE: str(cfg.simulation.device),
        TORCH_THREADS: torch_threads(cfg),
    }


def initial_model(exp: Experiment) -> ArrayRecord:
    """Return ``x_1``: the model initialised with ``torch.manual_seed(seed)``."""
    torch.manual_seed(int(exp.cfg.seed))
    model = build_model(exp.cfg.model.name, exp.dataset.input_shape, exp.dataset.num_classes)
    return ArrayRecord(model.state_dict())


def network_record(exp: Experiment) -> dict[str, Any]:
    """Return the contents of ``network.json``."""
    h, s = exp.hierarchy, exp.spectrum
    return {
        "hub_sizes": list(h.sizes),
        "hub_of_worker": h.hub_of,
        "weights": h.weights,
        "rates": h.rates,
        "v": h.v,
        "a": h.a,
        "b": h.b,
        "mean_rate_P": h.mean_rate,
        "sum_a2_p": h.rate_variance_term,
        "graph_edges": sorted(exp.graph.edges),
        "mixing": exp.mixing,
        "zeta": s.zeta,
        "lambda_2": s.lambda_2,
        "lambda_D": s.lambda_d,
        "spectral_gap": s.gap,
    }


def build_mllsgd(exp: Experiment, on_round: OnRound | None = None, **overrides: Any) -> MLLSGD:
    """Return the multi-level strategy of an experiment: its network, weights, rates and H.

    Federated evaluation is off: the experiment scores u on the server
    (:class:`Evaluator`), from ``on_round``. ``overrides`` are further
    :class:`MLLSGD` arguments (a deployed hub: ``hub_ids``, ``peer_layer``,
    ``discovery_timeout`` from ``deploy.discovery_timeout``).
    """
    cfg, h = exp.cfg, exp.hierarchy
    return MLLSGD(
        exp.strategy,
        hubs=h.sizes,
        tau=int(cfg.tau),
        q=int(cfg.q),
        graph=exp.graph,
        mixing=exp.mixing,
        rates=h.rates.tolist(),
        weights=h.weights.tolist(),
        seed=int(cfg.seed),
        evaluate_every=0,
        missing=str(cfg.hub.missing),  # type: ignore[arg-type]
        clip_norm=None if cfg.hub.clip_norm is None else float(cfg.hub.clip_norm),
        min_replies=float(cfg.hub.min_replies),
        max_failed_rounds=int(cfg.hub.max_failed_rounds),
        wait_for_slowest=bool(cfg.wait_for_slowest),
        on_round=on_round,
        **{"discovery_timeout": max(60.0, float(cfg.simulation.timeout)), **overrides},
    )
