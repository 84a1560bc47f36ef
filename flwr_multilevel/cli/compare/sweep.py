"""Run a comparison's runs in parallel, each a Ray task, on this machine or a Ray cluster.

``compare --parallel N`` starts a private Ray instance of this machine and keeps
up to N runs in flight; ``--ray-address ADDR`` attaches to a running cluster
instead (``auto`` or ``host:port``), and without ``--parallel`` leaves the
queueing to Ray's scheduler. Each run is one task that prepares its config and
runs it through :func:`flwr_multilevel.engines.launch.launch` (the run core),
so its results folder, files and numbers are those of the same run made alone.

* **Resources.** A task asks Ray for the torch threads its run uses
  (``simulation.threads``, or ``cpus_per_worker``), and a run that trains on a
  GPU (``simulation.device=cuda``, or ``auto`` on a cluster that has GPUs) for
  ``gpus_per_run`` of one.
* **Ray inside a task.** A ``simulation.backend=ray`` run would start Flower's
  engine, and Ray, inside a Ray task, whose connection Flower shuts down at
  the end of its run. A sweep runs it on the ``inprocess`` backend instead:
  the same message engine, bit-identical to Ray (``tests/test_runs.py``), one
  worker after the other inside its task. Its ``config.yaml`` says
  ``inprocess``.
* **Folders.** A task writes its run's folder in place when the comparison
  folder is visible at the same path on its node (this machine, or a shared
  file system); elsewhere it runs into a temporary folder and sends the
  finished folder back, which is written in place here.
* **Progress.** Tasks send their latest evaluation to a queue (an actor with
  no CPU); this process prints one line for the whole sweep.

Nothing is left on the cluster: the tasks and the queue belong to this
process's Ray job, which ends when it disconnects, and a cluster it attached
to is never stopped or changed.
"""

import copy
import io
import logging
import math
import os
import secrets
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from flwr_multilevel.cli.compare.load import RunSpec
from flwr_multilevel.errors import ConfigError, SimulationError

MARKER = ".sweep-here"  # written in the comparison folder: a task that sees it writes in place
MAX_SHIPPED = 2**30  # bytes of a run folder sent back from a node that cannot write in place
VIEW_EVERY = 2.0  # seconds between two progress lines
ENV_PREFIXES = ("FLWR_", "HF_", "RAY_", "OMP_", "PYTHON")


@dataclass
class SweepOptions:
    """How a sweep runs.

    Attributes
    ----------
    parallel : int
        Runs in flight at most; 0: as many as Ray schedules (with ``ray_address``).
    ray_address : str
        Empty: a private Ray instance of this machine; else the cluster to attach to.
    gpus_per_run : float | None
        GPU share of a run that trains on a GPU; None: ``1 / parallel`` (1 without it).
    """

    parallel: int = 0
    ray_address: str = ""
    gpus_per_run: float | None = None

    def check(self) -> None:
        """Raise ConfigError on a value out of range.

        Examples
        --------
        >>> SweepOptions(parallel=-1).check()
        Traceback (most recent call last):
        ...
        flwr_multilevel.errors.ConfigError: --parallel: expected an integer >= 1, got -1
        """
        # pylint: disable-next=import-outside-toplevel
        from flwr_multilevel.experiment.ranges import ray_address

        if self.parallel < 0 or (self.parallel == 0 and not self.ray_address):
            raise ConfigError("--parallel", f"expected an integer >= 1, got {self.parallel}")
        ray_address("--ray-address", self.ray_address)
        share = self.gpu_share()
        if not (math.isfinite(share) and 0 < share <= 1):
            raise ConfigError("--gpus-per-run", f"expected a number in (0, 1], got {share}")

    def gpu_share(self) -> float:
        """Return the GPU share of a run that trains on a GPU."""
        if self.gpus_per_run is not None:
            return float(self.gpus_per_run)
        return 1.0 / self.parallel if self.parallel else 1.0


def sweep_config(cfg: DictConfig) -> DictConfig:
    """Return the config a sweep task runs: ``ray`` runs on the ``inprocess`` backend.

    Examples
    --------
    >>> from flwr_multilevel.experiment.config import load_config
    >>> sweep_config(load_config(None, ["simulation.backend=ray"])).simulation.backend
    'inprocess'
    """
    cfg = copy.deepcopy(cfg)
    if cfg.simulation.backend == "ray":
        cfg.simulation.backend = "inprocess"
    return cfg


def task_resources(cfg: DictConfig, gpu_share: float, cluster_gpus: float) -> dict[str, float]:
    """Return what a run's task asks Ray for: its torch threads, and a GPU share if it uses one.

    Examples
    --------
    >>> from flwr_multilevel.experiment.config import load_config
    >>> task_resources(load_config(None, ["simulation.threads=2"]), 0.5, 0)
    {'num_cpus': 2, 'num_gpus': 0}
    >>> task_resources(load_config(None, ["simulation.device=auto"]), 0.5, 1)
    {'num_cpus': 1, 'num_gpus': 0.5}
    """
    # pylint: disable-next=import-outside-toplevel
    from flwr_multilevel.experiment.prepare import torch_threads

    device = str(cfg.simulation.device)
    gpu = device == "cuda" or (device == "auto" and cluster_gpus > 0)
    return {"num_cpus": torch_threads(cfg), "num_gpus": gpu_share if gpu else 0}


@dataclass
class Reporter:
    """A task's progress: its run's latest row, sent to the sweep's queue at most every second."""

    queue: Any
    index: int
    every: float = 1.0
    last: float = field(default=-math.inf)

    def __call__(self, row: Mapping[str, float]) -> None:
        """Send ``row`` unless one went less than ``every`` seconds ago."""
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            try:
                self.queue.put_nowait((self.index, dict(row)))
            except Exception:  # pylint: disable=broad-except  # progress never fails a run
                pass


def run_task(cfg: DictConfig, index: int, cwd: str, here: str, queue: Any) -> dict[str, Any]:
    """Run one config of a sweep (the body of its Ray task); return its summary.

    ``here``: the marker file whose presence says the comparison folder is
    this node's too. Else the run goes to a temporary folder, and the summary
    carries the finished folder as a tar archive (``shipped``).
    """
    # pylint: disable=import-outside-toplevel
    from flwr_multilevel.cli.console import quiet_flower
    from flwr_multilevel.engines.launch import launch
    from flwr_multilevel.experiment.prepare import prepare

    quiet_flower()
    if os.path.isdir(cwd):
        os.chdir(cwd)  # relative paths (data.root, graph files) as in the comparison's process
    cfg = sweep_config(cfg)
    in_place = os.path.isfile(here)
    temp = None if in_place else tempfile.TemporaryDirectory(prefix="flwr-multilevel-sweep-")
    if temp is not None:
        cfg.output_dir = str(Path(temp.name) / Path(str(cfg.output_dir)).name)
    try:
        summary = launch(prepare(cfg), progress=Reporter(queue, index))
        if temp is not None:
            summary["shipped"] = _pack(Path(str(cfg.output_dir)))
        return summary
    finally:
        if temp is not None:
            temp.cleanup()


def _pack(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(folder, arcname=".")
    if buffer.tell() > MAX_SHIPPED:
        raise SimulationError(
            f"the run folder {folder.name} is over {MAX_SHIPPED} bytes: "
            "put the comparison folder (--out) on a file system every node shares"
        )
    return buffer.getvalue()


def unpack(data: bytes, folder: Path) -> None:
    """Write a run folder sent back by a task into ``folder`` (regular files and folders only)."""
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        members = [m for m in tar.getmembers() if m.isfile() or m.isdir()]
        tar.extractall(folder, members=members, filter="data")


def _connect(options: SweepOptions) -> None:
    """Start a private Ray instance, or attach to ``options.ray_address``."""
    import ray  # pylint: disable=import-outside-toplevel

    if ray.is_initialized():
        raise SimulationError("Ray is already initialised in this process: a sweep starts its own")
    env = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}
    env["PYTHONPATH"] = os.pathsep.join([*sys.path, env.get("PYTHONPATH", "")]).strip(os.pathsep)
    args: dict[str, Any] = {"address": options.ray_address or "local"}  # local: never attach
    if not options.ray_address:
        import torch  # pylint: disable=import-outside-toplevel

        args |= {"num_cpus": os.cpu_count() or 1, "num_gpus": torch.cuda.device_count()}
    ray.init(
        **args,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
        runtime_env={"env_vars": env},
    )


def run_sweep(
    out: Path,
    runs: Sequence[RunSpec],
    options: SweepOptions,
    on_done: Callable[[RunSpec, dict[str, Any]], None],
) -> None:
    """Run ``runs`` (each ``cfg.output_dir`` set under ``out``) as Ray tasks.

    ``on_done(spec, summary)`` is called in this process as each run
    finishes. A run that fails stops the sweep (runs in flight are cancelled;
    finished runs stay, and a later ``compare`` skips them).
    """
    import ray  # pylint: disable=import-outside-toplevel

    _connect(options)
    here = out / MARKER
    here.write_text(secrets.token_hex(8) + "\n")
    try:
        _Sweep(runs, options, str(here)).run(on_done)
    finally:
        here.unlink(missing_ok=True)
        ray.shutdown()  # ends this job: its tasks and the queue; an attached cluster stays


class _Sweep:
    """The runs of a sweep in flight on a connected Ray: submitted, awaited, reported."""

    def __init__(self, runs: Sequence[RunSpec], options: SweepOptions, here: str) -> None:
        # pylint: disable=import-outside-toplevel
        import ray
        from ray.util.queue import Queue

        self.runs, self.options, self.here = runs, options, here
        self.queue = Queue(actor_options={"num_cpus": 0})
        self.task = ray.remote(run_task)
        self.gpus = float(ray.cluster_resources().get("GPU", 0))
        self.view = SweepView(runs)
        self.flight: dict[Any, int] = {}

    def submit(self, i: int) -> None:
        """Hand run ``i`` to Ray with its resources."""
        cfg = self.runs[i].cfg
        need = task_resources(sweep_config(cfg), self.options.gpu_share(), self.gpus)
        ref = self.task.options(**need, max_retries=0).remote(
            cfg, i, os.getcwd(), self.here, self.queue
        )
        self.flight[ref] = i
        self.view.started(i)

    def run(self, on_done: Callable[[RunSpec, dict[str, Any]], None]) -> None:
        """Keep up to ``parallel`` runs in flight until every run has finished."""
        import ray  # pylint: disable=import-outside-toplevel

        waiting = list(range(len(self.runs)))
        limit = self.options.parallel or len(self.runs)
        try:
            while waiting or self.flight:
                while waiting and len(self.flight) < limit:
                    self.submit(waiting.pop(0))
                done, _ = ray.wait(list(self.flight), num_returns=1, timeout=0.5)
                self.view.update(self.queue.get_nowait_batch(self.queue.qsize()))
                for ref in done:
                    i = self.flight.pop(ref)
                    summary = ray.get(ref)
                    if "shipped" in summary:
                        unpack(summary.pop("shipped"), Path(str(self.runs[i].cfg.output_dir)))
                    self.view.finished(i, summary)
                    on_done(self.runs[i], summary)
        finally:
            for ref in self.flight:
                ray.cancel(ref, force=True)


class SweepView:
    """One progress line for the whole sweep on stderr, at most every ``VIEW_EVERY`` seconds."""

    def __init__(self, runs: Sequence[RunSpec]) -> None:
        self.runs = runs
        self.rows: dict[int, dict[str, float]] = {}
        self.running: set[int] = set()
        self.done = 0
        self.start = time.monotonic()
        self.last = -math.inf

    def _name(self, i: int) -> str:
        return f"[{i + 1}/{len(self.runs)}] {self.runs[i].label}"

    def started(self, i: int) -> None:
        """Note that run ``i`` was handed to Ray."""
        self.running.add(i)

    def update(self, items: Sequence[tuple[int, dict[str, float]]]) -> None:
        """Take the rows the tasks sent; print the sweep's line when it is due."""
        for i, latest in items:
            self.rows[i] = latest
        now = time.monotonic()
        if not self.running or now - self.last < VIEW_EVERY:
            return
        self.last = now
        parts = []
        for i in sorted(self.running):
            row = self.rows.get(i)
            steps = int(self.runs[i].cfg.tau) * _rounds(self.runs[i].cfg)
            parts.append(
                f"{self.runs[i].label} {int(row['time_step'])}/{steps} acc {row['accuracy']:.3f}"
                if row
                else f"{self.runs[i].label} starting"
            )
        print(
            f"[sweep {self.done}/{len(self.runs)} done, {len(self.running)} running, "
            f"{now - self.start:.0f} s] " + " | ".join(parts),
            file=sys.stderr,
            flush=True,
        )

    def finished(self, i: int, summary: Mapping[str, Any]) -> None:
        """Print the line of a finished run."""
        self.running.discard(i)
        self.done += 1
        print(
            f"{self._name(i)}: time step {int(summary.get('time_step', 0))} done, accuracy "
            f"{summary.get('accuracy', math.nan):.4f}, loss {summary.get('loss', math.nan):.4f}, "
            f"{summary.get('wall_s', math.nan):.0f} s",
            file=sys.stderr,
            flush=True,
        )


def _rounds(cfg: DictConfig) -> int:
    from flwr_multilevel.experiment.config import num_rounds  # pylint: disable=C0415

    return num_rounds(cfg)


__all__ = ["SweepOptions", "run_sweep", "run_task", "sweep_config", "task_resources", "unpack"]
