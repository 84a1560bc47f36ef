"""What :meth:`MLLSGD.start` logs: Flower's strategy log, with each round's MLL-SGD line.

The same blocks as Flower's ``Strategy.start``: the start (rounds, model size,
configs), every round (``[ROUND r/R]``, the aggregated train metrics, federated
and central evaluation), and the final results (Flower's ``Result``). Metric
names are the app's own: whatever keys its ClientApp reports are averaged (by
``v_i`` at a hub, by ``b_d`` across hubs) and shown as they are spelled.

Examples
--------
>>> app_metrics(MetricRecord({"train_loss": 2.0, "steps": 12, "hub0-train_loss": 1.0}))
{'train_loss': 2.0}
"""

import io
import re
from logging import INFO

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from flwr.common.logger import log
from flwr.serverapp.strategy import Result

from flwr_multilevel.protocol.keys import (
    BYTES_DOWN,
    BYTES_HUBS,
    BYTES_UP,
    CONSENSUS,
    DROPPED,
    MISSING,
    NUM_EXAMPLES,
    SLOTS,
    STEPS,
    WORKER_STEPS,
)
from flwr_multilevel.strategies.report import RoundReport

MLL_METRICS = frozenset(
    (STEPS, MISSING, DROPPED, SLOTS, BYTES_DOWN, BYTES_UP, BYTES_HUBS, CONSENSUS, WORKER_STEPS)
) | {NUM_EXAMPLES}  # the round's counters, and the weighting key (left out, as Flower does)
HUB_METRIC = re.compile(r"hub\d+-")
LISTED_WORKERS = 32  # up to this many workers the round's line lists every worker's steps


def app_metrics(metrics: MetricRecord) -> MetricRecord:
    """Return the app's own metrics of a round (``b_d``-weighted), without MLL-SGD's counters."""
    return MetricRecord(
        {k: v for k, v in metrics.items() if k not in MLL_METRICS and not HUB_METRIC.match(k)}
    )


def _config(config: ConfigRecord | None) -> str:
    return str(dict(config.items())) if config else "(empty!)"


def log_start(
    name: str,
    num_rounds: int,
    arrays: ArrayRecord,
    train_config: ConfigRecord | None,
    evaluate_config: ConfigRecord | None,
) -> None:
    """Log the start of a run, as Flower's strategies do."""
    log(INFO, "Starting %s strategy:", name)
    log(INFO, "\t├── Number of rounds: %d", num_rounds)
    size = sum(len(array.data) for array in arrays.values()) / (1024**2)
    log(INFO, "\t├── ArrayRecord (%.2f MB)", size)
    log(INFO, "\t├── ConfigRecord (train): %s", _config(train_config))
    log(INFO, "\t├── ConfigRecord (evaluate): %s", _config(evaluate_config))


def log_round_start(server_round: int, num_rounds: int) -> None:
    """Log the head of a round."""
    log(INFO, "")
    log(INFO, "[ROUND %s/%s]", server_round, num_rounds)


def _steps(steps: list[int], tau: int) -> str:
    if len(steps) <= LISTED_WORKERS:
        return f"steps per worker {steps} of tau={tau}"
    a = np.asarray(steps)
    return f"steps per worker {a.min()}..{a.max()} (mean {a.mean():.2f}) of tau={tau}"


def log_round(report: RoundReport, metrics: MetricRecord, tau: int) -> None:
    """Log a finished round: its steps, gossip and time, then the app's aggregated metrics."""
    steps = metrics[WORKER_STEPS] if WORKER_STEPS in metrics else list(report.steps.values())
    line = f"{_steps(list(steps), tau)} ({metrics[STEPS]} in all)"  # type: ignore[arg-type]
    if report.gossip:
        line += ", gossip"
    if CONSENSUS in metrics:
        line += f", consensus {float(metrics[CONSENSUS]):.4g}"  # type: ignore[arg-type]
    log(INFO, "\t├──> %s, %.2f s", line, report.seconds)
    log(INFO, "\t└──> Aggregated MetricRecord: %s", app_metrics(metrics))
    # failed workers: one warning line per round, from MLLSGDRounds.log_failures


def log_evaluation(metrics: MetricRecord | None, central: bool, server_round: int) -> None:
    """Log a federated (aggregated) or central evaluation of u."""
    if central and server_round == 0:
        log(INFO, "Initial global evaluation results: %s", metrics)
    elif central:
        log(INFO, "Global evaluation")
        log(INFO, "\t└──> MetricRecord: %s", metrics)
    elif metrics is not None:
        log(INFO, "\t└──> Aggregated MetricRecord: %s", app_metrics(metrics))


def log_final(result: Result, seconds: float) -> None:
    """Log the end of a run and Flower's ``Result``, as Flower's strategies do."""
    log(INFO, "")
    log(INFO, "Strategy execution finished in %.2fs", seconds)
    log(INFO, "")
    log(INFO, "Final results:")
    log(INFO, "")
    for line in io.StringIO(str(result)):
        log(INFO, "\t%s", line.strip("\n"))
    log(INFO, "")
