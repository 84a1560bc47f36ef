"""``flwr-multilevel deploy``: every hub its own Flower server on this machine, end to end.

Starts D SuperLinks and one SuperNode per worker (:func:`local_federation`,
TLS and SuperNode authentication unless ``insecure``), submits the hub app
(:mod:`flwr_multilevel.deploy.hub_app`, from ``flwr_multilevel/deploy/app``) to
every SuperLink, follows the hubs' own results folders, and combines them
into the results folder of ``run``: ``history.csv`` (u = sum_d b_d y_d scored
from the hubs' checkpoints, consensus, bytes per level, time slots),
``rounds.csv`` (one row per round over all hubs, with the neighbours each hub
skipped), ``hub_models.pt``, ``summary.json``, plus ``hub-<d>/`` (its
rounds.csv, checkpoints, ``hub.log`` and ``run.log``) and ``federation/``
(every process's log). Every process started is stopped on success, error
and Ctrl-C. A hub that dies does not stop the others: they skip it after the
gossip timeout; the deploy then names it (:attr:`DeployOutcome.failed`).
"""

import csv
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from logging import INFO, WARNING
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord
from flwr.common.logger import log
from omegaconf import OmegaConf

from flwr_multilevel.deploy.federation import LocalFederation, local_federation, pid_alive
from flwr_multilevel.experiment import prepare as experiment
from flwr_multilevel.run.results import RunRecorder
from flwr_multilevel.strategies.network_peer import format_peers

APP_DIR = Path(__file__).parent / "app"
SUPEREXEC_POLL_S = 0.1  # how soon a SuperExec starts a submitted ServerApp/ClientApp


@dataclass
class DeployOutcome:
    """What a deployment did.

    Attributes
    ----------
    summary : dict[str, Any]
        The run's summary (also ``summary.json``).
    failed : dict[int, str]
        Hubs that did not finish, and why (empty on success).
    """

    summary: dict[str, Any]
    failed: dict[int, str] = field(default_factory=dict)


def hub_run_config(
    exp: experiment.Experiment,
    fed: LocalFederation,
    hub_id: int,
    *,
    gossip_timeout: float,
    poll_s: float,
) -> dict[str, Any]:
    """Return the run config that ``flwr run`` hands hub ``hub_id``'s ServerApp.

    Examples
    --------
    The keys (values depend on the federation): ``deploy.hub-id``,
    ``deploy.listen``, ``deploy.peers``, ``deploy.ca``/``cert``/``key`` or
    ``deploy.insecure``, ``deploy.gossip-timeout``, ``deploy.poll-s``,
    ``deploy.out`` and ``deploy.config`` (the experiment as YAML).
    """
    others = {j: a for j, a in fed.peer_addresses.items() if j != hub_id}
    tls = fed.peer_tls_files(hub_id)
    config: dict[str, Any] = {
        "deploy.hub-id": hub_id,
        "deploy.listen": fed.peer_addresses[hub_id],
        "deploy.peers": format_peers(others),
        "deploy.insecure": not tls,
        "deploy.gossip-timeout": float(gossip_timeout),
        "deploy.poll-s": float(poll_s),
        "deploy.out": str(exp.output_dir / f"hub-{hub_id}"),
        "deploy.config": OmegaConf.to_yaml(exp.cfg, resolve=True),
    }
    return config | {f"deploy.{k}": v for k, v in tls.items()}


def _read_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def _checkpoints(folder: Path) -> dict[int, Path]:
    return {int(p.stem.split("-")[1]): p for p in (folder / "models").glob("round-*.pt")}


class HubWatch:
    """Follows one hub: its ``flwr run`` process, its ServerApp's pid, its folder."""

    def __init__(self, hub_id: int, folder: Path, proc: Any) -> None:
        self.hub_id, self.folder, self.proc = hub_id, folder, proc
        self.failed: str | None = None
        self.done = False

    def poll(self) -> None:
        """Update :attr:`done` / :attr:`failed` (once set, they stay)."""
        if self.done or self.failed:
            return
        if (self.folder / "summary.json").is_file():
            self.done = True
            return
        pid_file = self.folder / "pid"
        code = self.proc.poll()
        why = None
        if pid_file.is_file() and pid_file.read_text().strip():
            pid = int(pid_file.read_text())
            if not pid_alive(pid):
                why = f"its ServerApp (pid {pid}) died"
        if why is None and code is not None:
            why = f"its flwr run exited with code {code}"
        if why is not None and not (self.folder / "summary.json").is_file():
            self.failed = why
            log(WARNING, "hub %s failed: %s", self.hub_id, why)
        elif why is not None:
            self.done = True

    @property
    def running(self) -> bool:
        """Whether the hub is neither done nor failed."""
        return not (self.done or self.failed)


class Combiner:
    """Scores u from the hubs' checkpoints as they appear; writes the run's files."""

    def __init__(self, exp: experiment.Experiment, recorder: RunRecorder, hubs: list[HubWatch]):
        self.exp, self.recorder, self.hubs = exp, recorder, hubs
        self.evaluate = experiment.Evaluator(exp)
        self.recorded: set[int] = set()
        self.last_row: dict[str, Any] = {}
        self.last_models: list[ArrayRecord] = []

    def _model(self, hub: HubWatch, server_round: int) -> ArrayRecord | None:
        found = _checkpoints(hub.folder)
        if server_round in found:
            path = found[server_round]
        elif hub.running:
            return None
        else:  # a finished or failed hub: its last model (a failed hub's stays stale)
            earlier = [r for r in found if r <= server_round]
            if not earlier:
                return None
            path = found[max(earlier)]
        return ArrayRecord(torch.load(path, map_location="cpu", weights_only=True))

    def step(self, progress: Callable[[dict[str, Any]], None] | None = None) -> None:
        """Record every evaluation round that every hub has reached, in order."""
        rounds = sorted({r for h in self.hubs for r in _checkpoints(h.folder)} - self.recorded)
        for server_round in rounds:
            models = [self._model(h, server_round) for h in self.hubs]
            if any(m is None for m in models):
                return
            self._record(server_round, [m for m in models if m is not None])
            if progress is not None:
                progress(self.last_row)

    def _record(self, server_round: int, models: list[ArrayRecord]) -> None:
        steps = slot = bytes_wh = bytes_hh = 0
        elapsed = 0.0
        for hub in self.hubs:
            for row in _read_rows(hub.folder / "rounds.csv"):
                if int(row["round"]) > server_round:
                    break
                steps += int(row["steps"])
                bytes_wh += int(row["bytes_down"]) + int(row["bytes_up"])
                bytes_hh += int(row["bytes_hubs"])
                slot = max(slot, int(row["time_slot"]))
                elapsed = max(elapsed, float(row["elapsed_s"]))
        self.last_row = {
            "round": server_round,
            "time_step": server_round * int(self.exp.cfg.tau),
            "time_slot": slot,
            **self.evaluate(models),
            "steps_taken": steps,
            "bytes_worker_hub": bytes_wh,
            "bytes_hub_hub": bytes_hh,
            "elapsed_s": elapsed,
        }
        self.recorder.append_row("history.csv", self.last_row)
        self.recorder.save_hub_models(server_round, models)
        self.recorded.add(server_round)
        self.last_models = models

    def write_rounds(self) -> None:
        """Write ``rounds.csv``: every round over all hubs, with skipped neighbours per hub."""
        per_hub = {h.hub_id: _read_rows(h.folder / "rounds.csv") for h in self.hubs}
        rounds = sorted({int(r["round"]) for rows in per_hub.values() for r in rows})
        path = self.recorder.folder / "rounds.csv"
        path.unlink(missing_ok=True)
        for server_round in rounds:
            rows = {
                d: next(r for r in rs if int(r["round"]) == server_round)
                for d, rs in per_hub.items()
                if any(int(r["round"]) == server_round for r in rs)
            }

            def total(key: str, rows: dict[int, dict[str, str]] = rows) -> int:
                return sum(int(r[key]) for r in rows.values())

            first = next(iter(rows.values()))
            self.recorder.append_row(
                "rounds.csv",
                {
                    "round": server_round,
                    "time_step": int(first["time_step"]),
                    "time_slot": int(first["time_slot"]),
                    "slots": int(first["slots"]),
                    "gossip": int(first["gossip"]),
                    "steps": total("steps"),
                    "bytes_down": total("bytes_down"),
                    "bytes_up": total("bytes_up"),
                    "bytes_hubs": total("bytes_hubs"),
                    "dropped": total("dropped"),
                    "missing": total("missing"),
                    "seconds": max(float(r["seconds"]) for r in rows.values()),
                    "hubs": " ".join(map(str, sorted(rows))),
                    **{
                        f"hub{d}_train_loss": rows[d]["train_loss"] if d in rows else ""
                        for d in per_hub
                    },
                    **{
                        f"hub{d}_skipped_peers": rows[d]["skipped_peers"] if d in rows else ""
                        for d in per_hub
                    },
                    "dropped_reasons": " | ".join(
                        r["dropped_reasons"] for r in rows.values() if r["dropped_reasons"]
                    ),
                },
            )


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
    exp: experiment.Experiment,
    *,
    gossip_timeout: float = 30.0,
    poll_s: float = 0.05,
    progress: Callable[[dict[str, Any]], None] | None = None,
    on_submitted: Callable[[list[HubWatch]], None] | None = None,
) -> DeployOutcome:
    """Run a prepared experiment on a started federation (one SuperLink per hub).

    Parameters
    ----------
    fed : LocalFederation
        Started with ``exp``'s hub sizes.
    exp : experiment.Experiment
        The experiment; its ``output_dir`` receives the results.
    gossip_timeout : float (default: 30.0)
        Seconds a hub waits for a neighbour's model before skipping it.
    poll_s : float (default: 0.05)
        Seconds between two pulls of worker replies at every hub.
    progress : Callable[[dict[str, Any]], None] | None (default: None)
        Called with every history row as it is written.
    on_submitted : Callable[[list[HubWatch]], None] | None (default: None)
        Called once every hub's run is submitted (tests use it).

    Returns
    -------
    DeployOutcome
        The summary and the hubs that failed.
    """
    cfg = exp.cfg
    recorder = RunRecorder(exp.output_dir, overwrite=bool(cfg.overwrite))
    recorder.write_config(cfg)
    recorder.write_json("network.json", experiment.network_record(exp))
    recorder.write_json("theory.json", exp.theory)
    recorder.write_partition(exp.partitions)
    recorder.save_model("initial_model.pt", experiment.initial_model(exp))
    experiment.log_network(exp)
    start = time.perf_counter()
    hubs = []
    for d in range(exp.hierarchy.num_hubs):
        folder = exp.output_dir / f"hub-{d}"
        shutil.rmtree(folder, ignore_errors=True)
        config = hub_run_config(exp, fed, d, gossip_timeout=gossip_timeout, poll_s=poll_s)
        hubs.append(HubWatch(d, folder, fed.submit(d, APP_DIR, config)))
    if on_submitted is not None:
        on_submitted(hubs)
    combiner = Combiner(exp, recorder, hubs)
    while any(h.running for h in hubs):
        time.sleep(0.2)
        for hub in hubs:
            hub.poll()
        combiner.step(progress)
    combiner.step(progress)
    combiner.write_rounds()
    for hub in hubs:
        log_file = fed.folder / f"run-{hub.hub_id}.log"
        if log_file.is_file():
            hub.folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(log_file, hub.folder / "run.log")
    failed = {h.hub_id: h.failed for h in hubs if h.failed}
    summary = {
        **combiner.last_row,
        "output_dir": str(exp.output_dir),
        "wall_s": round(time.perf_counter() - start, 3),
        "zeta": exp.spectrum.zeta,
        "failed_hubs": {str(d): why for d, why in failed.items()},
    }
    recorder.write_json("summary.json", summary)
    return DeployOutcome(summary, failed)


def deploy(
    exp: experiment.Experiment,
    *,
    insecure: bool = False,
    gossip_timeout: float = 30.0,
    poll_s: float = 0.05,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> DeployOutcome:
    """Start a local federation for ``exp`` (``output_dir/federation``), run it, stop it.

    Secure by default (certificates under ``federation/certs``, removed at
    the end); ``insecure`` opts out of TLS and SuperNode authentication.

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
    try:
        with local_federation(
            folder, sizes, insecure=insecure, superexec_poll_s=SUPEREXEC_POLL_S
        ) as fed:
            log(INFO, "federation up in %s", folder)
            return deploy_on(
                fed, exp, gossip_timeout=gossip_timeout, poll_s=poll_s, progress=progress
            )
    finally:
        shutil.rmtree(folder / "certs", ignore_errors=True)  # private keys stay off results
