"""The ``flwr-multilevel`` command line."""

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from omegaconf import OmegaConf

from .config import load_config, validate
from .errors import ConfigError

USAGE = """examples:
  flwr-multilevel run                                   # the default experiment (digits)
  flwr-multilevel run hubs.count=5 hubs.graph=ring tau=8 q=4 output_dir=out/
  flwr-multilevel run my.yaml data.name=mnist data.root=../shared/data
  flwr-multilevel config                                # every key, with its default
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flwr-multilevel",
        description="Multi-Level Local SGD (MLL-SGD) on Flower.",
        epilog=USAGE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("run", "run an experiment and write its results folder"),
        ("config", "print the resolved config without running"),
    ):
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("args", nargs="*", metavar="[CONFIG.yaml] [key=value ...]")
    return parser


def _split(args: Sequence[str]) -> tuple[str | None, list[str]]:
    path = None
    overrides = list(args)
    if overrides and "=" not in overrides[0]:
        path = overrides.pop(0)
    return path, overrides


def _print_summary(summary: dict[str, Any], exp: Any) -> None:
    cfg, h = exp.cfg, exp.hierarchy
    print(
        f"MLL-SGD on {cfg.data.name} ({cfg.model.name}): "
        f"{h.num_hubs} hubs x {list(h.sizes)} workers, "
        f"{cfg.hubs.graph} graph (zeta {exp.spectrum.zeta:.3f}), tau={cfg.tau}, q={cfg.q}, "
        f"{cfg.rounds} rounds, mean rate P={h.mean_rate:.3f}, hub strategy {cfg.strategy.name}"
    )
    hubs = " ".join(f"{summary[f'hub{d}_accuracy']:.4f}" for d in range(h.num_hubs))
    print(
        f"final: accuracy {summary['accuracy']:.4f}, train loss {summary['loss']:.4f}, "
        f"test loss {summary['test_loss']:.4f}, consensus {summary['consensus']:.3g}; "
        f"hub accuracies {hubs}"
    )
    possible = int(cfg.rounds) * int(cfg.tau) * h.num_workers
    print(
        f"gradient steps {summary['steps_taken']} of {possible} time-step slots; "
        f"wall time {summary['wall_s']:.1f} s"
    )
    print(f"results: {summary['output_dir']}")


def run(args: Sequence[str]) -> int:
    """Run an experiment; return the exit status."""
    # pylint: disable=import-outside-toplevel
    from . import experiment
    from .client_app import app as client_app
    from .local_grid import LocalGrid
    from .server_app import make_server_app
    from .simulation import run_in_simulation

    cfg = validate(load_config(*_split(args)))
    exp = experiment.prepare(cfg)
    num_workers = exp.hierarchy.num_workers
    if cfg.simulation.backend == "inprocess":
        summary = experiment.run(exp, LocalGrid(client_app, num_workers))
    else:
        outcome: dict[str, Any] = {}
        run_in_simulation(
            make_server_app(exp, outcome),
            client_app,
            num_workers,
            float(cfg.simulation.cpus_per_worker),
        )
        if "error" in outcome:
            raise outcome["error"]
        if "summary" not in outcome:
            print("flwr-multilevel: error: the simulation ended without a result", file=sys.stderr)
            return 1
        summary = outcome["summary"]
    _print_summary(summary, exp)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``flwr-multilevel``; returns the exit status.

    Invalid input ends with one line on stderr and status 2.
    """
    ns = _parser().parse_args(argv)
    try:
        if ns.command == "config":
            print(OmegaConf.to_yaml(validate(load_config(*_split(ns.args)))), end="")
            return 0
        return run(ns.args)
    except ConfigError as err:
        print(f"flwr-multilevel: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "flwr-multilevel: interrupted; the results folder holds every finished round",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
