"""The ``flwr-multilevel`` command line."""

import argparse
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from flwr_multilevel.cli.parser import build_parser
from flwr_multilevel.deploy.federation import DeploymentError
from flwr_multilevel.errors import (
    ConfigError,
    FlowerCompatError,
    RunAborted,
    SimulationError,
    WorkerDiscoveryError,
)
from flwr_multilevel.experiment.config import from_run_config, load_config, validate
from flwr_multilevel.strategies.one_line import CallerReports


def _split(args: Sequence[str]) -> tuple[str | None, list[str]]:
    """Return (config file or shipped baseline, overrides)."""
    from flwr_multilevel.cli.compare import baseline_path  # pylint: disable=import-outside-toplevel

    path = None
    overrides = list(args)
    if overrides and "=" not in overrides[0]:
        path = overrides.pop(0)
        baseline = baseline_path(path)
        if baseline is not None and not Path(path).is_file():
            path = str(baseline)
    return path, overrides


def _print_summary(summary: dict[str, Any], exp: Any) -> None:
    cfg, h = exp.cfg, exp.hierarchy
    waits = ", waits for the slowest" if cfg.wait_for_slowest else ""
    print(
        f"MLL-SGD on {cfg.data.name} ({cfg.model.name}): "
        f"{h.num_hubs} hubs x {list(h.sizes)} workers, "
        f"{cfg.hubs.graph} graph (zeta {exp.spectrum.zeta:.3f}), tau={cfg.tau}, q={cfg.q}, "
        f"{summary['round']} rounds, mean rate P={h.mean_rate:.3f}, "
        f"hub strategy {cfg.strategy.name}{waits}"
    )
    accuracies = [
        summary[f"hub{d}_accuracy"] for d in range(h.num_hubs) if f"hub{d}_accuracy" in summary
    ]
    hubs = (
        ""
        if not accuracies
        else "; hub accuracies " + " ".join(f"{a:.4f}" for a in accuracies)
        if len(accuracies) <= 10
        else f"; hub accuracies min {min(accuracies):.4f}, max {max(accuracies):.4f}"
    )
    print(
        f"final: accuracy {summary['accuracy']:.4f}, train loss {summary['loss']:.4f}, "
        f"test loss {summary['test_loss']:.4f}, consensus {summary['consensus']:.3g}{hubs}"
    )
    possible = int(summary["time_step"]) * h.num_workers
    print(
        f"{summary['time_step']} time steps, {summary['time_slot']} time slots; "
        f"gradient steps {summary['steps_taken']} of {possible} worker-time-steps; "
        f"wall time {summary['wall_s']:.1f} s (evaluation {summary['eval_s']:.1f} s)"
    )
    print(f"results: {summary['output_dir']}")


def _config(ns: argparse.Namespace) -> Any:
    """Return the validated config of ``config [args]`` or of ``config --run-config``.

    With ``--run-config``, a user's app (one without every key of
    ``default.yaml``) gets its MLL-SGD settings, checked as its ServerApp's
    ``MLLSGD.from_run_config`` will check them; its own keys are left to it.
    """
    if ns.run_config is None:
        return validate(load_config(*_split(ns.args)))
    if ns.args:
        raise ConfigError("--run-config", "takes no config file or key=value arguments beside it")
    # pylint: disable-next=import-outside-toplevel
    from flwr_multilevel.cli.app_check import app_settings, is_this_repositorys_app
    from flwr_multilevel.experiment.config import flwr_run_config  # pylint: disable=C0415

    run_config = flwr_run_config(ns.app, ns.run_config)
    if not is_this_repositorys_app(run_config):  # a user's app: its MLL-SGD keys only
        return OmegaConf.create(app_settings(run_config))
    return validate(from_run_config(run_config))


def _prepare_new(args: Sequence[str], extra: Sequence[str] = ()) -> Any:
    """Return the experiment of a new run: config checked, results folder claimed, then built.

    The folder is checked (``output_dir``, and ``extra`` names in it that a
    run would replace) before any data are loaded or process started, and
    released again if preparing stops.
    """
    # pylint: disable=import-outside-toplevel
    from flwr_multilevel.experiment.prepare import prepare
    from flwr_multilevel.run.results import plan_output_dir, release_output_dir, reserve_output_dir

    cfg = validate(load_config(*_split(args)))
    output = plan_output_dir(cfg.output_dir, bool(cfg.overwrite))
    taken = [p.name for name in extra if output.is_dir() for p in sorted(output.glob(name))]
    if taken and not cfg.overwrite:
        raise ConfigError(
            "output_dir",
            f"expected a new folder, {str(output)!r} already holds {taken[0]}/; "
            "pass overwrite=true to replace it",
        )
    made = reserve_output_dir(output)
    cfg.output_dir = str(output)
    try:
        return prepare(cfg)
    except BaseException:
        release_output_dir(made)  # stopped before writing: leave nothing behind
        raise


def run(args: Sequence[str], verbose: bool = False, resume: str | None = None) -> int:
    """Run an experiment; return the exit status."""
    if resume is not None:
        return _resume(resume, args, verbose)
    return _launch(_prepare_new(args), verbose)


def _launch(exp: Any, verbose: bool, resume: bool = False) -> int:
    """Run a prepared experiment with a progress bar; print its summary."""
    # pylint: disable=import-outside-toplevel
    from flwr_multilevel.cli.console import ProgressBar, quiet_flower
    from flwr_multilevel.engines.launch import launch
    from flwr_multilevel.experiment.config import num_rounds

    quiet_flower(verbose)
    bar = ProgressBar(num_rounds(exp.cfg), int(exp.cfg.tau))
    try:
        summary = launch(exp, progress=bar, resume=resume)
    finally:
        bar.close()
    _print_summary(summary, exp)
    return 0


def _resume(folder: str, args: Sequence[str], verbose: bool) -> int:
    """Continue the run in ``folder`` with the config it was started with."""
    import json  # pylint: disable=import-outside-toplevel

    from flwr_multilevel.experiment.prepare import prepare  # pylint: disable=C0415
    from flwr_multilevel.run.checkpoint import load_checkpoint  # pylint: disable=C0415
    from flwr_multilevel.run.resume import check_config  # pylint: disable=C0415

    if args:
        raise ConfigError("--resume", "takes no config or overrides: the run keeps its own")
    path = Path(folder).expanduser().absolute()
    if not (path / "config.yaml").is_file() or not (path / "checkpoint.pt").is_file():
        raise ConfigError("--resume", f"{folder!r} holds no checkpointed run")
    if (path / "summary.json").is_file():
        try:
            last = json.loads((path / "summary.json").read_text()).get("round", "?")
        except (ValueError, UnicodeDecodeError, AttributeError):
            last = "?"
        print(f"the run in {folder} is finished (round {last}): nothing to resume, nothing changed")
        return 0
    cfg = validate(load_config(path / "config.yaml"))
    if cfg.simulation.backend == "batched":
        raise ConfigError("--resume", "runs of the batched backend cannot be resumed")
    cfg.output_dir = str(path)
    # the checkpoint and the config, read-only, before the data and the model are prepared
    # (the run core checks the whole folder again before it changes anything)
    state = load_checkpoint(path)
    last = state["round"]
    if not isinstance(last, int) or isinstance(last, bool) or last < 1:
        raise ConfigError("--resume", f"checkpoint.pt in {folder!r}: {last!r} is not a round")
    check_config(str(state["config"]), cfg, last)
    return _launch(prepare(cfg), verbose, resume=True)


def deploy(ns: argparse.Namespace) -> int:
    """Deploy an experiment on local SuperLinks; return the exit status.

    0: MLL-SGD ran as the algorithm has it; 1: a hub failed, or ``deploy.strict``
    and a gossip was skipped; 3: the run finished, but some hubs mixed without
    a neighbour (each skip is in ``rounds.csv`` and ``summary.json``).
    """
    # pylint: disable=import-outside-toplevel
    from flwr_multilevel.deploy.runner import FOLDERS, progress_line
    from flwr_multilevel.deploy.runner import deploy as deploy_experiment

    args = list(ns.args)
    if ns.gossip_timeout is not None:
        if not ns.gossip_timeout > 0:
            raise ConfigError("--gossip-timeout", f"expected seconds > 0, got {ns.gossip_timeout}")
        args.append(f"deploy.gossip_timeout={ns.gossip_timeout}")  # the same as the key
    exp = _prepare_new(args, FOLDERS)

    def progress(row: dict[str, float]) -> None:
        if row["evaluated"]:  # one line per evaluation of u
            print(progress_line(row, exp.num_rounds), flush=True)

    outcome = deploy_experiment(exp, insecure=ns.insecure, progress=progress)
    if outcome.summary.get("round") is not None:
        _print_summary(outcome.summary, exp)
    for hub, why in outcome.failed.items():
        print(f"flwr-multilevel: error: hub {hub} failed: {why}", file=sys.stderr)
    skipped = int(outcome.summary.get("skipped_gossip") or 0)
    if outcome.strict:
        print(f"flwr-multilevel: error: deploy.strict: {outcome.strict}", file=sys.stderr)
    elif skipped:
        print(
            f"flwr-multilevel: warning: the gossip differed from MLL-SGD's: {skipped} "
            "neighbour models skipped (rounds.csv: skipped_peers; hub-<d>/hub.log: why)",
            file=sys.stderr,
        )
    if outcome.failed or outcome.strict:
        return 1
    return 3 if skipped else 0


def theory(args: Sequence[str]) -> int:
    """Print the theory report of a config; return the exit status."""
    # pylint: disable=import-outside-toplevel
    from flwr_multilevel.experiment.prepare import prepare
    from flwr_multilevel.model.theory import format_report

    exp = prepare(validate(load_config(*_split(args))))
    print(format_report(exp.theory))
    return 0


def compare(ns: argparse.Namespace) -> int:
    """Run a comparison; return the exit status."""
    # pylint: disable=import-outside-toplevel
    from flwr_multilevel.cli.compare import (
        SweepOptions,
        check_comparison_dir,
        load_comparison,
        run_comparison,
        with_seeds,
    )
    from flwr_multilevel.cli.console import quiet_flower

    sources = [a for a in ns.args if "=" not in a]
    overrides = [a for a in ns.args if "=" in a]
    for key, value in (
        ("--target-accuracy", ns.target_accuracy),
        ("--target-loss", ns.target_loss),
    ):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise ConfigError(key, f"expected a finite number >= 0, got {value!r}")
    comparison = load_comparison(sources, overrides)
    comparison.target_accuracy = ns.target_accuracy or comparison.target_accuracy
    comparison.target_loss = ns.target_loss or comparison.target_loss
    if ns.seeds is not None:
        try:
            seeds = [int(s) for s in ns.seeds.split(",") if s.strip()]
        except ValueError:
            raise ConfigError(
                "--seeds", f"expected integers such as 0,1,2, got {ns.seeds!r}"
            ) from None
        comparison = with_seeds(comparison, seeds)
    check_comparison_dir(comparison, ns.out)
    sweep = None
    if ns.parallel is not None or ns.ray_address is not None or ns.gpus_per_run is not None:
        sweep = SweepOptions(ns.parallel or 0, ns.ray_address or "", ns.gpus_per_run)
        sweep.check()
    if not ns.verbose:
        quiet_flower()
    out = run_comparison(comparison, ns.out, sweep=sweep)
    print((out / "comparison.md").read_text(), end="")
    print(f"results: {out}")
    return 0


def plot(ns: argparse.Namespace) -> int:
    """Redraw plots of finished runs; return the exit status."""
    # pylint: disable=import-outside-toplevel
    from flwr_multilevel.cli.compare import load_finished, read_index
    from flwr_multilevel.run.plots import check_plot_dir, plot_histories

    histories = load_finished(ns.results)
    out = ns.out or (ns.results[0] if len(ns.results) == 1 else "plots")
    check_plot_dir(out)
    title = ns.title
    index = Path(ns.results[0]) / "comparison.json"
    if title is None and len(ns.results) == 1 and index.is_file():
        title = read_index(Path(ns.results[0]))[0]
    for path in plot_histories(histories, out, title):
        print(path)
    return 0


def certs(ns: argparse.Namespace) -> int:
    """Write a federation's certificates and keys; return the exit status."""
    # pylint: disable=import-outside-toplevel
    from flwr_multilevel.deploy.cert_inputs import parse_hub_hosts
    from flwr_multilevel.deploy.certs import make_federation

    try:
        workers = [int(w) for w in str(ns.workers).split(",")]
    except ValueError:
        raise ConfigError(
            "--workers", f"expected integers such as 4 or 2,3, got {ns.workers!r}"
        ) from None
    hosts = parse_hub_hosts(ns.host) if ns.host else None
    hubs = ns.hubs
    if hubs is None:  # as many as --host names, or as --workers counts, else 3
        hubs = len(hosts) if hosts else len(workers) if len(workers) > 1 else 3
    files = make_federation(
        ns.out_dir, hubs, workers[0] if len(workers) == 1 else workers, hosts, force=ns.force
    )
    if files.backup is not None:
        print(f"the previous certificates are in {files.backup}")
    print(f"CA: {files.ca_cert} (its key {files.ca_key}: keep it off the hubs)")
    for d, names in enumerate(files.hosts[:10]):
        print(f"hub-{d}: {', '.join(names)} -> {files.peer[d][0].parent}/ ", end="")
        print(f"(superlink, peer, supernode-0..{len(files.supernode[d]) - 1})")
    if len(files.hosts) > 10:
        print(f"... and hub-10 to hub-{len(files.hosts) - 1} alike")
    return 0


def collect(ns: argparse.Namespace) -> int:
    """Combine a deployment's hub folders into a run's results folder (1: a hub did not finish)."""
    # pylint: disable=import-outside-toplevel
    from flwr_multilevel.cli.console import quiet_flower
    from flwr_multilevel.deploy.collect import collect as collect_hubs

    quiet_flower()
    exp, summary, failed = collect_hubs(ns.folder, overwrite=ns.overwrite, data_root=ns.data_root)
    if summary.get("round") is not None:
        _print_summary(summary, exp)
    for hub, why in failed.items():
        print(f"flwr-multilevel: error: hub {hub} failed: {why}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``flwr-multilevel``; returns the exit status.

    Invalid input ends with one line on stderr and status 2. The command
    prints each error itself, so the strategy's own one-line log of it
    (:mod:`~flwr_multilevel.strategies.one_line`) stays off the console.
    """
    flower, caller = logging.getLogger("flwr"), CallerReports()
    flower.addFilter(caller)
    try:
        return _main(argv)
    finally:
        flower.removeFilter(caller)


def _main(argv: Sequence[str] | None) -> int:
    """Run the command of ``argv``; return its exit status."""
    try:
        ns = build_parser().parse_args(argv)
        if ns.command == "config":
            print(OmegaConf.to_yaml(_config(ns)), end="")
            return 0
        if ns.command == "compare":
            return compare(ns)
        if ns.command == "plot":
            return plot(ns)
        if ns.command == "certs":
            return certs(ns)
        if ns.command == "deploy":
            return deploy(ns)
        if ns.command == "collect":
            return collect(ns)
        if ns.command == "theory":
            return theory(ns.args)
        return run(ns.args, ns.verbose, ns.resume)
    except ConfigError as err:
        print(f"flwr-multilevel: error: {err}", file=sys.stderr)
        return 2
    except (
        SimulationError,
        RunAborted,
        DeploymentError,
        WorkerDiscoveryError,
        FlowerCompatError,
    ) as err:
        print(f"flwr-multilevel: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "flwr-multilevel: interrupted; the results folder holds every finished round",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
