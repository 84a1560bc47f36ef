"""The arguments of ``flwr-multilevel``: its commands and their options."""

import argparse
from typing import Any, NoReturn

from flwr_multilevel.errors import ConfigError

USAGE = """examples:
  flwr-multilevel run                                   # the default experiment (digits)
  flwr-multilevel run hubs.count=5 hubs.graph=ring tau=8 q=4 output_dir=out/
  flwr-multilevel run my.yaml data.name=mnist data.root=../shared/data
  flwr-multilevel run local_sgd                         # a shipped baseline, by name
  flwr-multilevel compare distributed_sgd local_sgd hl_sgd mll_sgd --out cmp/
  flwr-multilevel compare baselines/paper/cpu_fig6_mnist.yaml data.root=../shared/data --out cmp6/
  flwr-multilevel compare distributed_sgd local_sgd hl_sgd mll_sgd --parallel 2 --out cmp/
  flwr-multilevel plot cmp/ runs/20260101-120000        # redraw plots of finished runs
  flwr-multilevel theory theory.L=1 theory.sigma2=1 theory.beta=0 theory.f_gap=2
  flwr-multilevel config                                # every key, with its default
  flwr-multilevel certs certs/ --hubs 3 --workers 4     # CA, hub and SuperNode keys (one machine)
  flwr-multilevel certs certs/ --workers 2 --host hub-0=10.0.0.5 --host hub-1=10.0.0.6
  flwr-multilevel deploy hubs.workers=2 rounds=8        # every hub its own Flower server, locally
  flwr-multilevel collect results/                      # hub-<d>/ folders of D sites -> one run
"""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one-line ConfigErrors."""

    def error(self, message: str) -> NoReturn:  # noqa: D102
        raise ConfigError(self.prog.replace("flwr-multilevel", "arguments").strip(), message)


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of ``flwr-multilevel`` and its commands."""
    parser = _Parser(
        prog="flwr-multilevel",
        description="Multi-Level Local SGD (MLL-SGD) on Flower.",
        epilog=USAGE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    _add_experiment_commands(commands)
    _add_report_commands(commands)
    _add_deployment_commands(commands)
    return parser


def _add_experiment_commands(commands: Any) -> None:
    """Add ``run``, ``config`` and ``theory``."""
    for name, text in (
        ("run", "run an experiment and write its results folder"),
        ("config", "print the resolved config without running"),
        ("theory", "print Theorem 1's quantities of a config, without training"),
    ):
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("args", nargs="*", metavar="[CONFIG.yaml|BASELINE] [key=value ...]")
        if name == "config":
            sub.add_argument(
                "--run-config",
                metavar="OVERRIDES",
                help='check `flwr run` overrides the way the ServerApp will (e.g. "tau=8 '
                'hubs.count=5" or a .toml file) against the app in --app; exit 2 if invalid',
            )
            sub.add_argument(
                "--app", default=".", help="the Flower App's folder for --run-config (default: .)"
            )
        if name == "run":
            sub.add_argument(
                "--verbose", action="store_true", help="show Flower's per-round log lines"
            )
            sub.add_argument(
                "--resume",
                metavar="FOLDER",
                help="continue the killed run in FOLDER from its last checkpoint",
            )


def _add_report_commands(commands: Any) -> None:
    """Add ``compare`` and ``plot``."""
    text = "run several configs on the same seed, data and clock; write a table and plots"
    sub = commands.add_parser("compare", help=text, description=text)
    sub.add_argument("args", nargs="+", metavar="CONFIG|BASELINE|COMPARISON.yaml|key=value")
    sub.add_argument("--out", help="folder of the comparison (default: runs/compare-<time>)")
    sub.add_argument("--target-accuracy", type=float, help="accuracy to reach (default: auto)")
    sub.add_argument("--target-loss", type=float, help="training loss to reach (default: auto)")
    sub.add_argument(
        "--seeds",
        help="repeat every run with these seeds, e.g. 0,1,2: the table adds mean rows and the "
        "plots draw the mean with a min-max band",
    )
    sub.add_argument("--verbose", action="store_true", help="keep Flower's per-round log lines")
    _add_sweep_options(sub)
    text = "redraw the plots of finished runs or comparisons"
    sub = commands.add_parser("plot", help=text, description=text)
    sub.add_argument("results", nargs="+", metavar="RESULTS", help="run or comparison folders")
    sub.add_argument("--out", help="folder for the PNGs (default: the one folder given, or plots/)")
    sub.add_argument("--title", help="title of the plots")


def _add_sweep_options(sub: argparse.ArgumentParser) -> None:
    """Add ``compare``'s options that run its runs as parallel Ray tasks (docs/scale.md)."""
    sub.add_argument(
        "--parallel",
        type=int,
        metavar="N",
        help="run up to N runs at once, each a Ray task (a private Ray instance of this "
        "machine, or the cluster of --ray-address); simulation.backend=ray runs run inprocess",
    )
    sub.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="run the runs as tasks on this running Ray cluster (auto or host:port); "
        "without --parallel, Ray's scheduler decides how many run at once",
    )
    sub.add_argument(
        "--gpus-per-run",
        type=float,
        metavar="F",
        help="GPU share of each run that trains on a GPU (default: 1/N, or 1)",
    )


def _add_deployment_commands(commands: Any) -> None:
    """Add ``certs``, ``collect`` and ``deploy``."""
    text = "make a federation CA, per-hub peer and SuperLink certificates, SuperNode keys"
    sub = commands.add_parser("certs", help=text, description=text)
    sub.add_argument("out_dir", metavar="OUT_DIR", help="folder to write (its parent must exist)")
    sub.add_argument(
        "--hubs", type=int, help="number of hubs, 1-1000 (default: as many as --host names, or 3)"
    )
    sub.add_argument(
        "--workers",
        default="4",
        help="workers per hub, one number or one per hub such as 2,3 (default: 4; 10000 in all)",
    )
    sub.add_argument(
        "--host",
        action="append",
        metavar="hub-<d>=HOST[,HOST]",
        help="the DNS names / IPs of hub d's site, e.g. hub-0=10.0.0.5 (repeatable, one per hub; "
        "default: every hub on this machine); every site also gets localhost and 127.0.0.1",
    )
    sub.add_argument(
        "--force",
        action="store_true",
        help="replace certificates already in OUT_DIR (moved to OUT_DIR/backup-<time>/ first)",
    )
    text = (
        "combine the hub-<d>/ folders of a deployment (copied into FOLDER) into the results "
        "folder of a run there: history.csv with u, rounds.csv, summary.json, plots"
    )
    sub = commands.add_parser("collect", help=text, description=text)
    sub.add_argument("folder", metavar="FOLDER", help="holds hub-0/ ... hub-<D-1>/")
    sub.add_argument(
        "--overwrite", action="store_true", help="replace the run files a collect wrote before"
    )
    sub.add_argument(
        "--data-root", help="the data set's folder on this machine (default: hub 0's data.root)"
    )
    text = "run an experiment with every hub its own Flower SuperLink on this machine"
    sub = commands.add_parser("deploy", help=text, description=text)
    sub.add_argument("args", nargs="*", metavar="[CONFIG.yaml|BASELINE] [key=value ...]")
    sub.add_argument("--insecure", action="store_true", help="no TLS, no SuperNode auth")
    sub.add_argument(
        "--gossip-timeout",
        type=float,
        default=None,
        help="seconds before a hub skips a neighbour it cannot reach (deploy.gossip_timeout)",
    )
