"""The ServerApp of ONE hub in a deployment: its own SuperLink, its workers, network gossip.

``flwr run`` submits it (from ``flwr_multilevel/deploy/app``) to hub d's
SuperLink. It prepares the same experiment as the simulation (same seed: same
partitions, rates, weights and H), runs :class:`MLLSGD` with ``hub_ids=[d]``
on its grid and a :class:`NetworkPeerLayer` for the gossip, and writes its
own results folder ``<output_dir>/hub-<d>/`` through the run core
(:class:`~flwr_multilevel.run.recorder.RunRecorder`, without evaluation):

* ``rounds.csv``: one row per round, the columns of ``run``'s (its own
  workers' steps, bytes, dropped and missing workers, ``skipped_peers``);
* ``reports.jsonl``: the same rounds in full, read by deploy's combined view;
* ``models/round-<r>.pt``: its model ``y_d`` at every evaluation round
  (round 0 included), read by :mod:`flwr_multilevel.deploy.runner` to compute u;
* ``config.yaml`` (the experiment it ran, read by ``flwr-multilevel collect``),
  ``hub.log`` (its log), ``pid`` (its process), ``summary.json`` at the end.

Deployment keys of the run config (the experiment's own keys are those of
``default.yaml``, flattened, or one YAML document in ``deploy.config``):
``deploy.hub-id``, ``deploy.listen`` (host:port of its peer layer),
``deploy.peers`` (``"0=host:port,2=host:port"``), ``deploy.ca``/``.cert``/
``.key`` (PEM files of its peer certificate) or ``deploy.insecure``,
``deploy.gossip-timeout`` (seconds), ``deploy.poll-s`` (seconds between two
pulls of replies) and ``deploy.out`` (its folder; default ``<output_dir>/hub-<d>``).
"""

import logging
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.common.logger import FLOWER_LOGGER, log
from flwr.serverapp import Grid, ServerApp
from omegaconf import DictConfig, OmegaConf

from flwr_multilevel.errors import ConfigError
from flwr_multilevel.experiment.config import from_run_config, merge, validate
from flwr_multilevel.experiment.prepare import (
    Experiment,
    build_mllsgd,
    initial_model,
    prepare,
    train_config,
)
from flwr_multilevel.flower_compat import Run
from flwr_multilevel.run.recorder import RunRecorder
from flwr_multilevel.run.reports import append_report
from flwr_multilevel.run.results import ResultsFolder
from flwr_multilevel.strategies.network_peer import NetworkPeerLayer, PeerTls, parse_peers
from flwr_multilevel.strategies.report import RoundReport

PREFIX = "deploy."
POLL_S = 0.05

app = ServerApp()


class FastGrid(Grid):
    """A Grid whose ``send_and_receive`` pulls replies every ``poll_s`` seconds.

    Flower's ``HttpGrid.send_and_receive`` sleeps 3 s between two pulls, so
    every round of a deployed hub would last at least 3 s; this wrapper pushes,
    then pulls with a short pause. Everything else is the wrapped grid's.

    Parameters
    ----------
    grid : Grid
        The grid Flower hands the ServerApp.
    poll_s : float (default: 0.05)
        Seconds between two pulls.
    """

    def __init__(self, grid: Grid, poll_s: float = POLL_S) -> None:
        self.grid, self.poll_s = grid, float(poll_s)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.grid, name)  # anything else Flower's grid offers

    def set_run(self, run: Run) -> None:  # noqa: D102 (the wrapped grid's)
        self.grid.set_run(run)

    @property
    def run(self) -> Run:  # noqa: D102
        return self.grid.run

    def create_message(  # noqa: D102  # pylint: disable=too-many-arguments
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return self.grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:  # noqa: D102
        return self.grid.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:  # noqa: D102
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:  # noqa: D102
        return self.grid.pull_messages(message_ids)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Push ``messages``, then pull replies every ``poll_s`` until all came or ``timeout``."""
        pending = set(self.push_messages(messages))
        end = time.monotonic() + (timeout if timeout is not None else 0.0)
        replies: list[Message] = []
        while pending:
            got = list(self.pull_messages(pending))
            replies.extend(got)
            pending.difference_update(m.metadata.reply_to_message_id for m in got)
            if not pending or (timeout is not None and time.monotonic() >= end):
                break
            time.sleep(self.poll_s)
        return replies


def split_run_config(run_config: Mapping[str, Any]) -> tuple[DictConfig, dict[str, Any]]:
    """Return (the experiment's config, the ``deploy.*`` keys without prefix) of a run config.

    ``deploy.config``, when not empty, is a YAML document merged over the
    flat experiment keys (it carries lists and strategy options intact).

    Raises
    ------
    ConfigError
        An unknown or bad experiment key.

    Examples
    --------
    >>> cfg, dep = split_run_config({"tau": 3, "deploy.hub-id": 1, "deploy.config": "q: 5"})
    >>> cfg.tau, cfg.q, dep["hub-id"]
    (3, 5, 1)
    """
    flat = {k: v for k, v in run_config.items() if not str(k).startswith(PREFIX)}
    deploy = {str(k)[len(PREFIX) :]: v for k, v in run_config.items() if str(k).startswith(PREFIX)}
    cfg = from_run_config(flat)
    if deploy.get("config"):
        cfg = merge(cfg, OmegaConf.create(str(deploy["config"])), "deploy.config")
    return cfg, deploy


def peer_layer(deploy: Mapping[str, Any], mixing: Any, hub_id: int) -> NetworkPeerLayer:
    """Return hub ``hub_id``'s networked peer layer from the ``deploy.*`` keys.

    Raises
    ------
    ConfigError
        Missing TLS files without ``deploy.insecure``, or bad addresses.
    """
    insecure = bool(deploy.get("insecure", False))
    tls = None
    if not insecure:
        paths = [str(deploy.get(k, "")) for k in ("ca", "cert", "key")]
        if not all(paths):
            raise ConfigError(
                "deploy.ca", "expected the peer CA, cert and key files, or deploy.insecure=true"
            )
        tls = PeerTls.from_files(*paths)
    try:
        return NetworkPeerLayer(
            hub_id,
            mixing,
            str(deploy.get("listen", "")),
            parse_peers(str(deploy.get("peers", ""))),
            tls=tls,
            insecure=insecure,
            timeout=gossip_timeout(deploy),
        )
    except ValueError as err:
        raise ConfigError("deploy.peers", str(err)) from None


def gossip_timeout(deploy: Mapping[str, Any]) -> float:
    """Return ``deploy.gossip-timeout`` (seconds, default 30): a finite number > 0.

    Raises
    ------
    ConfigError
        ``deploy.gossip-timeout`` is not a number of seconds > 0.

    Examples
    --------
    >>> gossip_timeout({}), gossip_timeout({"gossip-timeout": "2.5"})
    (30.0, 2.5)
    """
    value = deploy.get("gossip-timeout", 30.0)
    try:
        seconds = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ConfigError("deploy.gossip-timeout", f"expected seconds > 0, got {str(value)[:60]!r}")
    return seconds


def _log_to(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    FLOWER_LOGGER.addHandler(handler)
    return handler


def run_hub(grid: Grid, run_config: Mapping[str, Any]) -> dict[str, Any]:
    """Run one hub of a deployed experiment on ``grid``; return its summary.

    Raises
    ------
    ConfigError
        A bad experiment or deployment key.
    """
    cfg, deploy = split_run_config(run_config)
    gossip_timeout(deploy)  # a bad deployment key is refused before any work
    exp = prepare(validate(cfg))
    d = int(deploy.get("hub-id", -1))
    if not 0 <= d < exp.hierarchy.num_hubs:
        raise ConfigError(
            "deploy.hub-id", f"expected a hub in 0..{exp.hierarchy.num_hubs - 1}, got {d}"
        )
    folder = ResultsFolder(Path(str(deploy.get("out") or exp.output_dir / f"hub-{d}")), True)
    (folder.path / "models").mkdir(exist_ok=True)
    (folder.path / "pid").write_text(f"{os.getpid()}\n")
    folder.write_config(exp.cfg)  # what `flwr-multilevel collect` combines the hubs by
    handler = _log_to(folder.path / "hub.log")
    try:
        return _run(exp, d, grid, deploy, folder)
    finally:
        FLOWER_LOGGER.removeHandler(handler)
        handler.close()


def _run(
    exp: Experiment,
    d: int,
    grid: Grid,
    deploy: Mapping[str, Any],
    folder: ResultsFolder,
) -> dict[str, Any]:
    """Run hub ``d``, recorded by the run core: rounds.csv, reports.jsonl, its models."""

    def save_models(server_round: int, models: Sequence[ArrayRecord]) -> None:
        folder.save_model(f"models/round-{server_round:05d}.pt", models[0])

    recorder = RunRecorder(folder, exp.plan, None, save_models=save_models)
    init = initial_model(exp)
    recorder.begin([init], None)

    def on_round(report: RoundReport, models: list[ArrayRecord]) -> bool:
        append_report(folder.path, report)
        if report.skipped_peers.get(d):
            log(
                logging.WARNING,
                "hub %s round %s: skipped neighbours %s",
                d,
                report.server_round,
                report.skipped_peers[d],
            )
        return recorder.on_round(report, models)

    layer = peer_layer(deploy, exp.mixing, d)
    try:
        strategy = build_mllsgd(exp, on_round, hub_ids=[d], peer_layer=layer)
        strategy.start(
            FastGrid(grid, float(deploy.get("poll-s", POLL_S))),
            init,
            exp.num_rounds,
            timeout=float(exp.cfg.simulation.timeout),
            train_config=ConfigRecord(dict(train_config(exp))),  # type: ignore[arg-type]
        )
    finally:
        layer.close(linger=0)  # start() already lingered for the neighbours on success
    return recorder.finish(hub=d)


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run hub ``deploy.hub-id`` of the experiment in ``context.run_config``."""
    summary = run_hub(grid, context.run_config)
    log(logging.INFO, "hub %s done after round %s", summary["hub"], summary["rounds_run"])
