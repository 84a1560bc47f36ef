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
  ``hub.log`` (its log), ``pid`` (its process), ``summary.json`` at the end,
  or ``failed`` (one line) if it had to stop (its SuperLink is gone).

Deployment keys of the run config (the experiment's own keys are those of
``default.yaml``, flattened, or one YAML document in ``deploy.config``; its
``deploy.*`` section bounds every wait, see ``default.yaml``):
``deploy.hub-id``, ``deploy.listen`` (host:port of its peer layer),
``deploy.peers`` (``"0=host:port,2=host:port"``), ``deploy.ca``/``.cert``/
``.key`` (PEM files of its peer certificate) or ``deploy.insecure``,
``deploy.poll-s`` (seconds between two pulls of replies) and ``deploy.out``
(its folder; default ``<output_dir>/hub-<d>``).
"""

import dataclasses
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.common.logger import FLOWER_LOGGER, log
from flwr.serverapp import Grid, ServerApp
from omegaconf import DictConfig, OmegaConf

from flwr_multilevel.deploy.hub_grid import (
    FAILED_FILE,
    POLL_S,
    FastGrid,
    SuperLinkWatch,
    leave_run,
)
from flwr_multilevel.errors import ConfigError
from flwr_multilevel.experiment.config import from_run_config, merge, validate
from flwr_multilevel.experiment.prepare import (
    Experiment,
    build_mllsgd,
    initial_model,
    prepare,
    train_config,
)
from flwr_multilevel.experiment.schema import Deploy
from flwr_multilevel.run.recorder import RunRecorder
from flwr_multilevel.run.reports import append_report
from flwr_multilevel.run.results import ResultsFolder
from flwr_multilevel.strategies.network_peer import NetworkPeerLayer, PeerTls, parse_peers
from flwr_multilevel.strategies.report import RoundReport

PREFIX = "deploy."
EXPERIMENT_KEYS = {f.name for f in dataclasses.fields(Deploy)}  # deploy.* of the experiment
__all__ = ["POLL_S", "FastGrid", "app", "peer_layer", "run_hub", "split_run_config"]

app = ServerApp()


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

    def hub_key(key: Any) -> bool:
        return str(key).startswith(PREFIX) and str(key)[len(PREFIX) :] not in EXPERIMENT_KEYS

    flat = {k: v for k, v in run_config.items() if not hub_key(k)}
    deploy = {str(k)[len(PREFIX) :]: v for k, v in run_config.items() if hub_key(k)}
    seconds = gossip_timeout(deploy)  # a bad hub key is refused before any work
    cfg = from_run_config(flat)
    if deploy.get("config"):
        cfg = merge(cfg, OmegaConf.create(str(deploy["config"])), "deploy.config")
    if seconds is not None:  # the hub's own key wins over the experiment's
        cfg.deploy.gossip_timeout = seconds
        cfg.deploy.peer_wait = max(float(cfg.deploy.peer_wait), seconds)
    return cfg, deploy


def peer_layer(
    deploy: Mapping[str, Any], mixing: Any, hub_id: int, bounds: Deploy | None = None
) -> NetworkPeerLayer:
    """Return hub ``hub_id``'s networked peer layer from the ``deploy.*`` keys.

    ``bounds``: the experiment's ``deploy`` section (gossip timeout, peer wait;
    the hub then says it is stalled once its SuperLink calls hang for
    ``superlink_timeout``); None: the defaults, never stalled.

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
            timeout=float(bounds.gossip_timeout) if bounds else gossip_timeout(deploy) or 30.0,
            peer_wait=float(bounds.peer_wait) if bounds else None,
            stall_after=float(bounds.superlink_timeout) if bounds else None,
        )
    except ValueError as err:
        raise ConfigError("deploy.peers", str(err)) from None


def gossip_timeout(deploy: Mapping[str, Any]) -> float | None:
    """Return the hub key ``deploy.gossip-timeout`` (seconds > 0), or None if not given.

    Not given ("" or absent), the experiment's ``deploy.gossip_timeout``
    holds; given, it replaces it (and ``deploy.peer_wait`` is at least as long).

    Raises
    ------
    ConfigError
        ``deploy.gossip-timeout`` is not a number of seconds > 0.

    Examples
    --------
    >>> gossip_timeout({}), gossip_timeout({"gossip-timeout": ""})
    (None, None)
    >>> gossip_timeout({"gossip-timeout": "2.5"})
    2.5
    """
    value = deploy.get("gossip-timeout", "")
    if isinstance(value, str) and value == "":
        return None
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
    cfg, deploy = split_run_config(run_config)  # a bad deployment key: refused before any work
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
    except Exception as err:  # the hub's one-line reason, for whoever follows it; then Flower's
        why = " ".join(f"{type(err).__name__}: {err}".split())[:300]
        (folder.path / FAILED_FILE).write_text(why + "\n")
        raise
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

    bounds = Deploy(**OmegaConf.to_container(exp.cfg.deploy))  # type: ignore[arg-type]

    def on_round(report: RoundReport, models: list[ArrayRecord]) -> bool:
        append_report(folder.path, report)
        stop = recorder.on_round(report, models)
        if report.skipped_peers.get(d):
            log(
                logging.ERROR if bounds.strict else logging.WARNING,
                "hub %s round %s: skipped neighbours %s%s",
                d,
                report.server_round,
                report.skipped_peers[d],
                "; deploy.strict: the hub stops" if bounds.strict else "",
            )
            return True if bounds.strict else stop
        return stop

    layer = peer_layer(deploy, exp.mixing, d, bounds)
    fast = FastGrid(grid, float(deploy.get("poll-s", POLL_S)), on_progress=layer.beat)
    watch = SuperLinkWatch(
        fast,
        bounds.superlink_timeout,
        lambda why: leave_run(
            folder.path, why, lambda line: layer.leave(line, bounds.gossip_timeout)
        ),
    ).start()
    try:
        strategy = build_mllsgd(
            exp,
            on_round,
            hub_ids=[d],
            peer_layer=layer,
            discovery_timeout=bounds.discovery_timeout,
            partial_discovery=True,
        )
        strategy.start(
            fast,
            init,
            exp.num_rounds,
            timeout=float(exp.cfg.simulation.timeout),
            train_config=ConfigRecord(dict(train_config(exp))),  # type: ignore[arg-type]
        )
    finally:
        watch.stop()
        layer.close(linger=0)  # start() already lingered for the neighbours on success
    return recorder.finish(hub=d)


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run hub ``deploy.hub-id`` of the experiment in ``context.run_config``."""
    summary = run_hub(grid, context.run_config)
    log(logging.INFO, "hub %s done after round %s", summary["hub"], summary["rounds_run"])
