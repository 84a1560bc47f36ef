"""Hub folders into a run's results folder: deploy's combined view, and ``flwr-multilevel collect``.

A deployed hub writes its own folder ``hub-<d>/`` (:mod:`flwr_multilevel.deploy.hub_app`):
``config.yaml``, ``rounds.csv``, ``reports.jsonl``, ``models/round-<r>.pt`` (its
y_d at each evaluation round) and, once it finished, ``summary.json``. This
module turns such folders into the results folder of ``flwr-multilevel run``,
through the run core: :class:`CombinedRun` claims the folder and writes the
run files, :class:`Combiner` hands every round all hubs reached to
:meth:`~flwr_multilevel.run.recorder.RunRecorder.on_round` (u = sum_d b_d y_d
scored from the hubs' models), and :meth:`CombinedRun.finish` writes the
summary and the plots.

``deploy`` combines while its hubs run (:mod:`flwr_multilevel.deploy.runner`);
:func:`collect` combines the folders of hubs that ran on other machines, once
they are copied into one folder.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from flwr.app import ArrayRecord
from omegaconf import DictConfig, OmegaConf

from flwr_multilevel.errors import ConfigError
from flwr_multilevel.experiment.config import validate
from flwr_multilevel.experiment.prepare import Experiment, initial_model, prepare
from flwr_multilevel.run.core import log_network, write_run_files
from flwr_multilevel.run.evaluate import Evaluator
from flwr_multilevel.run.recorder import Progress, RunRecorder
from flwr_multilevel.run.reports import merge_reports, read_reports
from flwr_multilevel.run.results import ResultsFolder

HUB_FOLDER = re.compile(r"hub-(\d+)")
PER_SITE = ("output_dir", "overwrite", "data.root")  # keys each site may set its own way
UNFINISHED = "it did not finish (its folder has no summary.json)"


class HubFolder(Protocol):
    """A hub's results folder, and whether the hub may still add to it."""

    hub_id: int
    folder: Path

    @property
    def running(self) -> bool:
        """Whether the hub is neither done nor failed."""


@dataclass
class FinishedHub:
    """A hub that ran elsewhere: its folder, and why it did not finish (None: it did)."""

    hub_id: int
    folder: Path
    failed: str | None = None

    @property
    def running(self) -> bool:
        """Never: its folder is all there is."""
        return False


def checkpoints(folder: Path) -> dict[int, Path]:
    """Return the hub's saved models by round (``models/round-<r>.pt``)."""
    return {int(p.stem.split("-")[1]): p for p in (folder / "models").glob("round-*.pt")}


class Combiner:
    """The hubs' rounds, as they appear, recorded by the run core.

    Each round is recorded once every hub has reported it (a hub that failed
    counts as keeping its last model) and, at an evaluation round, saved its
    model: the merged round goes to :meth:`RunRecorder.on_round`, which
    scores u from the hubs' models and writes the same files as ``run``.
    """

    def __init__(self, recorder: RunRecorder, hubs: Sequence[HubFolder]) -> None:
        self.recorder, self.hubs = recorder, list(hubs)
        self.next_round = 1

    def _model(self, hub: HubFolder, server_round: int) -> ArrayRecord | None:
        found = checkpoints(hub.folder)
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

    def step(self) -> None:
        """Record every round that every hub has reached, in order."""
        plan = self.recorder.plan
        while self.next_round <= plan.num_rounds:
            server_round = self.next_round
            reports = {h.hub_id: read_reports(h.folder).get(server_round) for h in self.hubs}
            waiting = [h for h in self.hubs if reports[h.hub_id] is None and h.running]
            if waiting or not any(reports.values()):
                return
            models = None
            time_slot = self.recorder.counters.time_slot + max(
                r.slots for r in reports.values() if r is not None
            )
            if plan.evaluates_after(server_round, time_slot):
                found = [self._model(h, server_round) for h in self.hubs]
                if any(m is None for m in found):
                    return
                models = [m for m in found if m is not None]
            merged = merge_reports([r for r in reports.values() if r is not None])
            for d, report in reports.items():
                if report is None:
                    merged.failed_hubs[d] = "hub down"
            self.recorder.on_round(merged, models or [])
            self.next_round += 1


class CombinedRun:
    """The results folder of a run whose hubs ran apart, written through the run core.

    Creating it claims ``exp.output_dir`` and writes what a run knows before
    its first round (:func:`~flwr_multilevel.run.core.write_run_files`);
    :meth:`combiner` scores round 0 and follows the hubs; :meth:`finish`
    writes the summary (with ``failed_hubs``) and the plots.
    """

    def __init__(self, exp: Experiment) -> None:
        self.exp = exp
        self.folder = ResultsFolder(exp.output_dir, overwrite=bool(exp.cfg.overwrite))
        self.initial = initial_model(exp)
        write_run_files(self.folder, exp, self.initial)
        log_network(exp)
        self.recorder: RunRecorder | None = None

    def combiner(self, hubs: Sequence[HubFolder], progress: Progress | None = None) -> Combiner:
        """Score round 0 (the shared initial model); return the combiner of ``hubs``."""
        evaluator = Evaluator(self.exp)
        self.recorder = RunRecorder(self.folder, self.exp.plan, evaluator, progress=progress)
        self.recorder.begin([self.initial] * self.exp.hierarchy.num_hubs, None)
        return Combiner(self.recorder, hubs)

    def finish(self, failed: dict[int, str]) -> dict[str, Any]:
        """Write the summary (``failed_hubs``: who did not finish, and why) and the plots."""
        assert self.recorder is not None, "combiner() first"
        return self.recorder.finish(
            zeta=self.exp.spectrum.zeta, failed_hubs={str(d): why for d, why in failed.items()}
        )


def hub_folders(folder: Path) -> dict[int, Path]:
    """Return the ``hub-<d>/`` folders in ``folder`` by hub."""
    found = (HUB_FOLDER.fullmatch(p.name) for p in folder.iterdir() if p.is_dir())
    return {int(m.group(1)): folder / m.group(0) for m in found if m}


def _comparable(cfg: DictConfig) -> dict[Any, Any]:
    """Return the config as a dict, without the keys each site sets its own way."""
    data = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(data, dict)
    for key in PER_SITE:
        *path, last = key.split(".")
        node = data
        for part in path:
            node = node.get(part, {})
        node.pop(last, None)
    return data


def shared_config(hubs: dict[int, Path]) -> DictConfig:
    """Return the experiment every hub ran (their ``config.yaml``, the same but for ``PER_SITE``).

    Raises
    ------
    ConfigError
        A hub folder without ``config.yaml``, or hubs that ran different experiments.
    """
    configs = {}
    for d, path in sorted(hubs.items()):
        if not (path / "config.yaml").is_file():
            raise ConfigError("FOLDER", f"expected {path}/config.yaml (written by the hub's app)")
        cfg = OmegaConf.load(path / "config.yaml")
        assert isinstance(cfg, DictConfig)
        configs[d] = cfg
    first, cfg = next(iter(configs.items()))
    plain = _comparable(cfg)
    for d, other in configs.items():
        theirs = _comparable(other)
        if theirs != plain:
            key = next(k for k in {*plain, *theirs} if plain.get(k) != theirs.get(k))
            raise ConfigError(
                "FOLDER",
                f"expected every hub to run one experiment, hub-{d} has another {key!r} than "
                f"hub-{first}",
            )
    return cfg


def collect(
    folder: str | Path,
    *,
    overwrite: bool = False,
    data_root: str | None = None,
    progress: Progress | None = None,
) -> tuple[Experiment, dict[str, Any], dict[int, str]]:
    """Combine the ``hub-<d>/`` folders in ``folder`` into the results folder of a run there.

    Every hub 0..D-1 of the experiment must have its folder (as its app
    wrote it, copied from its machine); a hub without ``summary.json``
    counts as failed, and u is scored with its last model, as ``deploy`` does.
    u is scored on this machine: ``data_root`` is where its copy of the data
    set lives (default: the first hub's ``data.root``).

    Returns
    -------
    tuple[Experiment, dict[str, Any], dict[int, str]]
        The experiment, the summary (also ``summary.json``) and the hubs that
        did not finish, with why.

    Raises
    ------
    ConfigError
        ``FOLDER``: no hub folders, a hub missing, hubs of different
        experiments, or the folder already holds a run (without ``overwrite``).
    """
    root = Path(folder).expanduser().absolute()
    hubs = hub_folders(root) if root.is_dir() else {}
    if not hubs:
        raise ConfigError(
            "FOLDER", f"expected hub-<d>/ folders of a deployed run in {str(folder)!r}"
        )
    cfg = shared_config(hubs)
    cfg.output_dir, cfg.overwrite = str(root), overwrite
    if data_root is not None:
        cfg.data.root = data_root
    exp = prepare(validate(cfg))
    missing = [d for d in range(exp.hierarchy.num_hubs) if d not in hubs]
    if missing or max(hubs) >= exp.hierarchy.num_hubs:
        raise ConfigError(
            "FOLDER",
            f"expected hub-0 to hub-{exp.hierarchy.num_hubs - 1}, got "
            f"{', '.join(f'hub-{d}' for d in sorted(hubs))}",
        )
    done = [
        FinishedHub(d, hubs[d], None if (hubs[d] / "summary.json").is_file() else UNFINISHED)
        for d in range(exp.hierarchy.num_hubs)
    ]
    run = CombinedRun(exp)
    run.combiner(done, progress).step()
    failed = {h.hub_id: h.failed for h in done if h.failed}
    return exp, run.finish(failed), failed
