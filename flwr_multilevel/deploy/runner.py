"""``flwr-multilevel deploy``: every hub its own Flower server on this machine, end to end.

Starts D SuperLinks and one SuperNode per worker (:func:`local_federation`,
TLS and SuperNode authentication unless ``insecure``), submits the hub app
(:mod:`flwr_multilevel.deploy.hub_app`, from ``flwr_multilevel/deploy/app``) to
every SuperLink, follows the hubs' own results folders, and combines them as
they grow (:mod:`flwr_multilevel.deploy.collect`, which ``collect`` uses on
hubs that ran elsewhere) through the run core into the results folder of
``run``, the same files and columns (u = sum_d b_d y_d scored from the hubs'
models), plots included, plus ``hub-<d>/``
(its rounds.csv, ``reports.jsonl``, models, ``hub.log`` and ``run.log``) and
``federation/`` (every process's log). Every process started is stopped on success, error
and Ctrl-C. A hub that dies does not stop the others: they skip it (at once if
it could say it left, else after ``deploy.gossip_timeout``); the deploy then names
it and why (:attr:`DeployOutcome.failed`: its SuperLink, its ServerApp, or the
reason the hub wrote). Every wait is bounded by ``deploy.*``; the whole run by
``deploy.run_timeout`` (:func:`run_bound`).
"""

import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from logging import INFO, WARNING
from pathlib import Path
from typing import Any

from flwr.common.logger import log
from omegaconf import OmegaConf

from flwr_multilevel.deploy.collect import CombinedRun, Combiner
from flwr_multilevel.deploy.federation import LocalFederation, local_federation, pid_alive
from flwr_multilevel.deploy.hub_grid import FAILED_FILE
from flwr_multilevel.experiment.local_data import CACHE_ENV
from flwr_multilevel.experiment.prepare import Experiment
from flwr_multilevel.run.recorder import Progress
from flwr_multilevel.run.reports import read_reports
from flwr_multilevel.strategies.network_peer import format_peers

APP_DIR = Path(__file__).parent / "app"
SUPEREXEC_POLL_S = 0.1  # how soon a SuperExec starts a submitted ServerApp/ClientApp
FOLDERS = ("hub-*", "federation")  # what a deployment adds to the results folder of a run


@dataclass
class DeployOutcome:
    """What a deployment did.

    Attributes
    ----------
    summary : dict[str, Any]
        The run's summary (also ``summary.json``).
    failed : dict[int, str]
        Hubs that did not finish, and why (empty on success).
    strict : str
        With ``deploy.strict``: the skipped gossip that stopped the run ("" if none).
    """

    summary: dict[str, Any]
    failed: dict[int, str] = field(default_factory=dict)
    strict: str = ""  # deploy.strict stopped the run: the first skip, in one line


def hub_run_config(
    exp: Experiment,
    fed: LocalFederation,
    hub_id: int,
    *,
    gossip_timeout: float | None = None,
    poll_s: float,
) -> dict[str, Any]:
    """Return the run config that ``flwr run`` hands hub ``hub_id``'s ServerApp.

    ``gossip_timeout`` (None: the config's) replaces ``deploy.gossip_timeout``.

    Examples
    --------
    The keys (values depend on the federation): ``deploy.hub-id``,
    ``deploy.listen``, ``deploy.peers``, ``deploy.ca``/``cert``/``key`` or
    ``deploy.insecure``, ``deploy.poll-s``, ``deploy.out`` and ``deploy.config``
    (the experiment as YAML, its ``deploy`` section included).
    """
    others = {j: a for j, a in fed.peer_addresses.items() if j != hub_id}
    tls = fed.peer_tls_files(hub_id)
    cfg = exp.cfg.copy()
    if gossip_timeout is not None:
        cfg.deploy.gossip_timeout = float(gossip_timeout)
        cfg.deploy.peer_wait = max(float(cfg.deploy.peer_wait), float(gossip_timeout))
    config: dict[str, Any] = {
        "deploy.hub-id": hub_id,
        "deploy.listen": fed.peer_addresses[hub_id],
        "deploy.peers": format_peers(others),
        "deploy.insecure": not tls,
        "deploy.poll-s": float(poll_s),
        "deploy.out": str(exp.output_dir / f"hub-{hub_id}"),
        "deploy.config": OmegaConf.to_yaml(cfg, resolve=True),
    }
    return config | {f"deploy.{k}": v for k, v in tls.items()}


class HubWatch:
    """Follows one hub: its SuperLink, its ``flwr run`` process, its ServerApp's pid, its folder.

    ``superlink`` (the SuperLink's process, when this machine started it) lets
    a dead SuperLink be named as such, not as the ``flwr run`` that lost it.
    """

    def __init__(self, hub_id: int, folder: Path, proc: Any, superlink: Any = None) -> None:
        self.hub_id, self.folder, self.proc, self.superlink = hub_id, folder, proc, superlink
        self.failed: str | None = None
        self.done = False

    def _why(self) -> str | None:
        """Return why the hub is gone, if it is; the most telling reason first."""
        written = self.folder / FAILED_FILE  # the hub's own reason (it left, or it raised)
        if written.is_file() and (text := written.read_text(errors="replace").strip()):
            return text.splitlines()[0]
        link = self.superlink
        if link is not None and link.poll() is not None:
            return f"its SuperLink (pid {link.pid}) died (exit code {link.returncode})"
        pid_file = self.folder / "pid"
        if pid_file.is_file() and pid_file.read_text().strip():
            pid = int(pid_file.read_text())
            if not pid_alive(pid):
                return f"its ServerApp (pid {pid}) died"
        code = self.proc.poll()
        return None if code is None else f"its flwr run exited with code {code}"

    def poll(self) -> None:
        """Update :attr:`done` / :attr:`failed` (once set, they stay)."""
        if self.done or self.failed:
            return
        if (self.folder / "summary.json").is_file():
            self.done = True
            return
        why = self._why()
        if why is not None and not (self.folder / "summary.json").is_file():
            self.failed = why
            log(WARNING, "hub %s failed: %s", self.hub_id, why)
        elif why is not None:
            self.done = True

    def stop(self, why: str) -> None:
        """Count a hub that is still running as failed, for ``why`` (the deploy stops it)."""
        if self.running:
            self.failed = why
            log(WARNING, "hub %s stopped: %s", self.hub_id, why)

    @property
    def running(self) -> bool:
        """Whether the hub is neither done nor failed."""
        return not (self.done or self.failed)


def run_bound(exp: Experiment) -> float:
    """Return the seconds the whole deployed run may take (``deploy.run_timeout``).

    Unset, it is what the other bounds allow: discovery, then every round's
    replies (``simulation.timeout``) and every gossip (``deploy.peer_wait``).

    Examples
    --------
    >>> from types import SimpleNamespace as NS
    >>> cfg = NS(deploy=NS(run_timeout=None, discovery_timeout=300.0, peer_wait=600.0),
    ...          simulation=NS(timeout=600.0), q=2)
    >>> run_bound(NS(cfg=cfg, num_rounds=4))
    3900.0
    """
    dep = exp.cfg.deploy
    if dep.run_timeout is not None:
        return float(dep.run_timeout)
    gossips = exp.num_rounds // int(exp.cfg.q)
    per_round = float(exp.cfg.simulation.timeout)
    return float(dep.discovery_timeout) + exp.num_rounds * per_round + gossips * dep.peer_wait


def first_skip(hubs: list[HubWatch]) -> str:
    """Return the first skipped gossip in the hubs' reports, in one line ("" if none)."""
    for hub in hubs:
        for server_round, report in sorted(read_reports(hub.folder).items()):
            if peers := report.skipped_peers.get(hub.hub_id):
                return f"hub {hub.hub_id} skipped neighbours {peers} in round {server_round}"
    return ""


def progress_line(row: Mapping[str, Any], num_rounds: int) -> str:
    """Return the one line printed per evaluated round.

    Examples
    --------
    >>> progress_line({"round": 2, "time_step": 8, "time_slot": 8, "accuracy": 0.5,
    ...                "loss": 1.0, "consensus": 0.001, "elapsed_s": 3.0}, 10)
    'round 2/10 (step 8, slot 8): accuracy 0.5000, loss 1.0000, consensus 0.001, 3.0 s'
    """
    return (
        f"round {row['round']}/{num_rounds} (step {row['time_step']}, slot {row['time_slot']}): "
        f"accuracy {row['accuracy']:.4f}, loss {row['loss']:.4f}, "
        f"consensus {row['consensus']:.3g}, {row['elapsed_s']:.1f} s"
    )


def deploy_on(
    fed: LocalFederation,
    exp: Experiment,
    *,
    gossip_timeout: float | None = None,
    poll_s: float = 0.05,
    progress: Progress | None = None,
    on_submitted: Callable[[list[HubWatch]], None] | None = None,
) -> DeployOutcome:
    """Run a prepared experiment on a started federation (one SuperLink per hub).

    Parameters
    ----------
    fed : LocalFederation
        Started with ``exp``'s hub sizes.
    exp : Experiment
        The experiment; its ``output_dir`` receives the results.
    gossip_timeout : float | None (default: None, ``deploy.gossip_timeout``)
        Seconds a hub waits for a neighbour it cannot reach before skipping it.
    poll_s : float (default: 0.05)
        Seconds between two pulls of worker replies at every hub.
    progress : Callable[[dict[str, float]], None] | None (default: None)
        Called after every recorded round (``evaluated`` is 1.0 when u was scored).
    on_submitted : Callable[[list[HubWatch]], None] | None (default: None)
        Called once every hub's run is submitted (tests use it).

    Returns
    -------
    DeployOutcome
        The summary and the hubs that failed.
    """
    run = CombinedRun(exp)  # claims the folder, writes the run files
    hubs = []
    for d in range(exp.hierarchy.num_hubs):
        hub_folder = exp.output_dir / f"hub-{d}"
        shutil.rmtree(hub_folder, ignore_errors=True)
        config = hub_run_config(exp, fed, d, gossip_timeout=gossip_timeout, poll_s=poll_s)
        link = fed.superlinks[d].proc if d < len(fed.superlinks) else None
        hubs.append(HubWatch(d, hub_folder, fed.submit(d, APP_DIR, config), link))
    if on_submitted is not None:
        on_submitted(hubs)
    combiner = run.combiner(hubs, progress)
    strict = _wait(hubs, combiner, run_bound(exp), bool(exp.cfg.deploy.strict), fed.group.track)
    combiner.step()
    for hub in hubs:
        log_file = fed.folder / f"run-{hub.hub_id}.log"
        if log_file.is_file():
            hub.folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(log_file, hub.folder / "run.log")
    failed = {h.hub_id: h.failed for h in hubs if h.failed}
    return DeployOutcome(run.finish(failed), failed, strict)


def _wait(
    hubs: list[HubWatch], combiner: Combiner, bound: float, strict: bool, track: Callable[[], None]
) -> str:
    """Follow the hubs until none runs, ``bound`` seconds pass, or (``strict``) one skips.

    Returns the skip that stopped a strict run ("" otherwise); hubs still
    running when the wait ends are counted failed, with the reason. ``track``
    notes the processes below the federation's (stopped at the end, orphans too).
    """
    deadline, ticks = time.monotonic() + bound, 0
    while any(h.running for h in hubs):
        time.sleep(0.2)
        ticks += 1
        if ticks % 5 == 1:  # once a second: it reads /proc
            track()
        for hub in hubs:
            hub.poll()
        combiner.step()
        if strict and (skip := first_skip(hubs)):
            for hub in hubs:
                hub.stop(f"deploy.strict: {skip}")
            return skip
        if time.monotonic() > deadline:
            for hub in hubs:
                hub.stop(f"still running after {bound:g} s (deploy.run_timeout)")
    return ""


def deploy(
    exp: Experiment,
    *,
    insecure: bool = False,
    gossip_timeout: float | None = None,
    poll_s: float = 0.05,
    progress: Progress | None = None,
) -> DeployOutcome:
    """Start a local federation for ``exp`` (``output_dir/federation``), run it, stop it.

    Secure by default (certificates under ``federation/certs``, removed at
    the end); ``insecure`` opts out of TLS and SuperNode authentication. The
    workers cache their partitions in ``federation/partitions`` (also removed),
    unless ``FLWR_MULTILEVEL_CACHE`` names a folder already.

    Returns
    -------
    DeployOutcome
        The summary and the hubs that failed.

    Raises
    ------
    DeploymentError
        A SuperLink or SuperNode did not come up (nothing is left running).
    """
    folder = exp.output_dir / "federation"
    shutil.rmtree(folder, ignore_errors=True)
    sizes = list(exp.hierarchy.sizes)
    cache = os.environ.get(CACHE_ENV) or str(folder / "partitions")
    try:
        with local_federation(
            folder,
            sizes,
            insecure=insecure,
            superexec_poll_s=SUPEREXEC_POLL_S,
            ready_s=float(exp.cfg.deploy.start_timeout),
            env={CACHE_ENV: cache},
        ) as fed:
            log(INFO, "federation up in %s", folder)
            return deploy_on(
                fed, exp, gossip_timeout=gossip_timeout, poll_s=poll_s, progress=progress
            )
    finally:
        shutil.rmtree(folder / "certs", ignore_errors=True)  # private keys stay off results
        shutil.rmtree(folder / "partitions", ignore_errors=True)  # copies of the data set
