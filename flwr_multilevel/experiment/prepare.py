"""An MLL-SGD experiment from a config: validated up front, then run on a Grid."""

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from logging import INFO
from pathlib import Path
from typing import Any, cast

import networkx as nx
import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp import strategy as flwr_strategies
from flwr.serverapp.strategy import Strategy
from omegaconf import DictConfig, OmegaConf
from torch.nn import functional as F

from flwr_multilevel.errors import ConfigError
from flwr_multilevel.experiment.config import int_list, num_rounds
from flwr_multilevel.experiment.data import Dataset, load_dataset, partition, train_size
from flwr_multilevel.experiment.local_data import fixed_sample
from flwr_multilevel.experiment.models import build_model, resolve_device
from flwr_multilevel.experiment.schema import check_strategy
from flwr_multilevel.model.clock import round_slots
from flwr_multilevel.model.hierarchy import Hierarchy, build_hierarchy, hub_sizes
from flwr_multilevel.model.mixing import (
    Spectrum,
    consensus_distance,
    mixing_matrix,
    spectrum,
    weighted_average,
)
from flwr_multilevel.model.rates import operating_rates
from flwr_multilevel.model.theory import theory_report
from flwr_multilevel.model.topology import hub_graph
from flwr_multilevel.protocol.arrays import record_bytes, stack, unstack
from flwr_multilevel.run.checkpoint import cut_csv, load_checkpoint, save_checkpoint
from flwr_multilevel.run.results import RunRecorder, plan_output_dir
from flwr_multilevel.strategies import MLLSGD, OnRound, RoundReport
from flwr_multilevel.strategies.report import round_row


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

    def evaluates_after(self, server_round: int) -> bool:
        """Whether round ``server_round`` crosses an evaluation time step (or is the last)."""
        tau, every = int(self.cfg.tau), self.eval_every
        crossed = server_round * tau // every > (server_round - 1) * tau // every
        return crossed or server_round == self.num_rounds


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
    sizes = hub_sizes(cfg.hubs.count, int_list("hubs.workers", cfg.hubs.workers))
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
        "lr": float(cfg.lr),
        "batch-size": int(cfg.batch_size),
        "seed": int(cfg.seed),
        "dataset": str(cfg.data.name),
        "data-root": str(cfg.data.root),
        "partition": str(cfg.data.partition),
        "partition-alpha": float(cfg.data.alpha),
        "partition-shards": int(cfg.data.shards_per_worker),
        "num-workers": exp.hierarchy.num_workers,
        "model": str(cfg.model.name),
        "device": str(cfg.simulation.device),
        "torch-threads": torch_threads(cfg),
    }


def initial_model(exp: Experiment) -> ArrayRecord:
    """Return ``x_1``: the model initialised with ``torch.manual_seed(seed)``."""
    torch.manual_seed(int(exp.cfg.seed))
    model = build_model(exp.cfg.model.name, exp.dataset.input_shape, exp.dataset.num_classes)
    return ArrayRecord(model.state_dict())


class Evaluator:
    """Loss and accuracy of ``u = sum_d b_d y_d`` and of every hub model."""

    def __init__(self, exp: Experiment) -> None:
        self.exp = exp
        data = exp.dataset
        self.device = resolve_device(str(exp.cfg.simulation.device))
        model = build_model(exp.cfg.model.name, data.input_shape, data.num_classes)
        self.model = model.to(self.device)
        # a fixed, seeded sample: the same examples at every evaluation of every run
        self.x_train, self.y_train = fixed_sample(
            data.x_train, data.y_train, exp.cfg.eval.train_examples, int(exp.cfg.seed)
        )

    @torch.no_grad()
    def _score(self, arrays: ArrayRecord, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        self.model.load_state_dict(arrays.to_torch_state_dict())
        self.model.eval()
        loss, correct = 0.0, 0
        for start in range(0, len(y), 2048):
            inputs = x[start : start + 2048].to(self.device)
            labels = y[start : start + 2048].to(self.device)
            logits = self.model(inputs)
            loss += float(F.cross_entropy(logits, labels, reduction="sum"))
            correct += int((logits.argmax(1) == labels).sum())
        return loss / len(y), correct / len(y)

    def __call__(self, hub_models: list[ArrayRecord]) -> dict[str, float]:
        """Return the metrics of one evaluation.

        ``loss`` (training loss of u), ``test_loss``, ``accuracy`` (of u),
        ``consensus`` and, with ``eval.hubs``, ``hub<d>_accuracy`` for every
        hub (scored once when every hub holds the same model).
        """
        data, b = self.exp.dataset, self.exp.hierarchy.b
        stacked, layout = stack(hub_models)
        u = unstack(weighted_average(b, stacked)[None, :], layout)[0]
        test_loss, accuracy = self._score(u, data.x_test, data.y_test)
        train_loss = (
            self._score(u, self.x_train, self.y_train)[0]
            if self.exp.cfg.eval.train_loss
            else float("nan")
        )
        row = {
            "loss": train_loss,
            "test_loss": test_loss,
            "accuracy": accuracy,
            "consensus": consensus_distance(b, stacked),
        }
        if not self.exp.cfg.eval.hubs:
            return row
        if np.array_equal(stacked.min(axis=0), stacked.max(axis=0)):  # hubs agree: score once
            return {**row, **{f"hub{d}_accuracy": accuracy for d in range(len(hub_models))}}
        for hub, arrays in enumerate(hub_models):
            row[f"hub{hub}_accuracy"] = self._score(arrays, data.x_test, data.y_test)[1]
        return row


def log_network(exp: Experiment) -> None:
    """Log the network quantities of the theory at the start of a run."""
    h, s = exp.hierarchy, exp.spectrum
    log(
        INFO,
        "MLL-SGD network: %s hubs %s, graph '%s' (%s edges)",
        h.num_hubs,
        list(h.sizes),
        exp.cfg.hubs.graph,
        exp.graph.number_of_edges(),
    )
    log(
        INFO,
        "Mixing H: zeta=%.4f, lambda_2=%.4f, lambda_D=%.4f, spectral gap=%.4f",
        s.zeta,
        s.lambda_2,
        s.lambda_d,
        s.gap,
    )
    log(
        INFO,
        "Hub weights b=%s, mean rate P=%.4f, sum a_i^2 p_i=%.3g",
        np.round(h.b, 4).tolist(),
        h.mean_rate,
        h.rate_variance_term,
    )


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


Progress = Callable[[dict[str, float]], None]


def build_mllsgd(exp: Experiment, on_round: OnRound | None = None, **overrides: Any) -> MLLSGD:
    """Return the multi-level strategy of an experiment: its network, weights, rates and H.

    Federated evaluation is off: the experiment scores u on the server
    (:class:`Evaluator`), from ``on_round``. ``overrides`` are further
    :class:`MLLSGD` arguments (a deployed hub: ``hub_ids``, ``peer_layer``).
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
        discovery_timeout=max(60.0, float(cfg.simulation.timeout)),
        on_round=on_round,
        **overrides,
    )


def run_batched(exp: Experiment, init: ArrayRecord, on_round: OnRound) -> None:
    """Run ``exp`` on the batched path, reporting each round as the message engine does.

    Bytes are what the message engine would send: the model to and from every
    worker, and one model per directed hub link with ``H[j, d] != 0`` at a gossip.
    """
    from flwr_multilevel.engines.batched import simulate  # pylint: disable=import-outside-toplevel

    cfg, h = exp.cfg, exp.hierarchy
    model_bytes = record_bytes(init)
    links = int(np.count_nonzero(exp.mixing - np.diag(np.diag(exp.mixing))))
    clock = {"start": time.perf_counter()}

    def adapter(server_round: int, models: Sequence[ArrayRecord], steps: np.ndarray) -> bool:
        gossip = server_round % int(cfg.q) == 0
        report = RoundReport(
            server_round,
            gossip=gossip,
            steps=dict(enumerate(steps.tolist())),
            slots=round_slots(
                int(cfg.seed),
                server_round,
                h.rates.tolist(),
                int(cfg.tau),
                bool(cfg.wait_for_slowest),
            ),
            bytes_down=h.num_workers * model_bytes,
            bytes_up=h.num_workers * model_bytes,
            bytes_hubs=links * model_bytes if gossip else 0,
            seconds=time.perf_counter() - clock["start"],
        )
        stop = bool(on_round(report, models))  # type: ignore[arg-type]
        clock["start"] = time.perf_counter()
        return stop

    simulate(exp, adapter)


def run(
    exp: Experiment, grid: Grid | None, progress: Progress | None = None, resume: bool = False
) -> dict[str, Any]:
    """Run an experiment on ``grid``, writing its results folder as it goes.

    Parameters
    ----------
    exp : Experiment
        A prepared experiment (:func:`prepare`).
    grid : Grid | None
        The Flower grid that reaches the workers; None runs the batched path
        (``simulation.backend=batched``).
    progress : Callable[[dict[str, float]], None] | None (default: None)
        Called after every round with its round, time step and slot and the
        latest evaluation's scores (``evaluated`` is 1.0 when it was scored now).
    resume : bool (default: False)
        Continue the run in ``exp.output_dir`` from its checkpoint (written at
        every evaluation): the finished run's files equal an uninterrupted
        run's, bit for bit.

    Returns
    -------
    dict[str, Any]
        The summary (also written to ``summary.json``): the final history row,
        the folder, wall time and network quantities.
    """
    cfg, h = exp.cfg, exp.hierarchy
    torch.set_num_threads(torch_threads(cfg))  # the server's evaluation, and in-process workers
    recorder = RunRecorder(exp.output_dir, overwrite=bool(cfg.overwrite), resume=resume)
    state = load_checkpoint(exp.output_dir) if resume else None
    init = initial_model(exp)
    if state is None:
        recorder.write_config(cfg)
        recorder.write_json("network.json", network_record(exp))
        recorder.write_json("theory.json", exp.theory)
        recorder.write_partition(exp.partitions)
        recorder.save_model("initial_model.pt", init)
    log_network(exp)

    evaluate = Evaluator(exp)
    start = time.perf_counter()
    steps_taken = np.zeros(h.num_workers, dtype=np.int64)
    clock = {"time_slot": 0, "bytes_worker_hub": 0, "bytes_hub_hub": 0, "eval_s": 0.0}
    max_slots = cfg.max_time_slots
    last_row: dict[str, float] = {}
    if state is not None:  # continue where the checkpoint left off; later rows are cut
        clock, steps_taken, last_row = state["clock"], state["steps_taken"], state["last_row"]
        start -= state["elapsed"]
        for name in ("history.csv", "rounds.csv"):
            cut_csv(exp.output_dir / name, int(state["mll"]["round"]))
    strategy = build_mllsgd(exp) if grid is not None else None
    if strategy is not None and state is not None:
        strategy.restore(state["mll"])

    def record(server_round: int, models: list[ArrayRecord]) -> None:
        nonlocal last_row
        began = time.perf_counter()
        scores = evaluate(models)
        clock["eval_s"] += time.perf_counter() - began
        last_row = {
            "round": server_round,
            "time_step": server_round * int(cfg.tau),
            "time_slot": clock["time_slot"],
            **scores,
            "steps_taken": int(steps_taken.sum()),
            "bytes_worker_hub": clock["bytes_worker_hub"],
            "bytes_hub_hub": clock["bytes_hub_hub"],
            "elapsed_s": round(time.perf_counter() - start, 3),
        }
        recorder.save_hub_models(server_round, models)
        if strategy is not None and server_round > 0:  # before the row: history never ahead
            save_checkpoint(
                exp.output_dir,
                {
                    "mll": strategy.state_dict(),
                    "clock": clock,
                    "steps_taken": steps_taken,
                    "last_row": last_row,
                    "elapsed": time.perf_counter() - start,
                },
            )
        recorder.append_row("history.csv", last_row)
        log(
            INFO,
            "round %s: accuracy %.4f, loss %.4f, consensus %.3g",
            server_round,
            last_row["accuracy"],
            last_row["loss"],
            last_row["consensus"],
        )

    def on_round(report: RoundReport, models: list[ArrayRecord]) -> bool:
        for worker, steps in report.steps.items():
            steps_taken[worker] += steps
        clock["time_slot"] += report.slots
        clock["bytes_worker_hub"] += report.bytes_down + report.bytes_up
        clock["bytes_hub_hub"] += report.bytes_hubs
        losses = [m.get("train-loss") if m else None for m in report.hub_metrics.values()]
        recorder.append_row(
            "rounds.csv",
            {
                **round_row(report, int(cfg.tau), clock["time_slot"]),
                "seconds": round(report.seconds, 4),
                **{f"hub{d}_train_loss": loss for d, loss in enumerate(losses)},
                "failed_hubs": " ".join(str(d) for d in report.failed_hubs),
                "skipped_peers": " ".join(
                    f"{d}:{'/'.join(map(str, peers))}" for d, peers in report.skipped_peers.items()
                ),
                "dropped_reasons": " | ".join(report.dropped),
            },
        )
        out_of_time = max_slots is not None and clock["time_slot"] >= int(max_slots)
        evaluated = exp.evaluates_after(report.server_round) or out_of_time
        if evaluated:
            record(report.server_round, models)
        if progress is not None:  # every round, with the latest evaluation's scores
            progress(
                {
                    **last_row,
                    "round": report.server_round,
                    "time_step": report.server_round * int(cfg.tau),
                    "time_slot": clock["time_slot"],
                    "evaluated": float(evaluated),
                }
            )
        return out_of_time

    if state is None:
        record(0, [init] * h.num_hubs)
    if strategy is None:  # the batched backend: every worker in one vectorised computation
        run_batched(exp, init, on_round)
    else:
        strategy.on_round = on_round
        strategy.start(
            grid,
            init,
            exp.num_rounds,
            timeout=float(cfg.simulation.timeout),
            train_config=ConfigRecord(dict(train_config(exp))),  # type: ignore[arg-type]
        )
    summary = {
        **last_row,
        "output_dir": str(exp.output_dir),
        "wall_s": round(time.perf_counter() - start, 3),
        "eval_s": round(clock["eval_s"], 3),
        "zeta": exp.spectrum.zeta,
        "steps_per_worker": steps_taken,
    }
    recorder.write_json("summary.json", summary)
    return summary
