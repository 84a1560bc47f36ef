"""Wall time per round: Flower's simulation engine (Ray) against the in-process grid.

Every backend runs the same config (``--hubs`` x ``--workers``, digits,
logreg by default) in this one script; the first ``--warmup`` rounds are left
out. ``ray`` waits ``flwr_multilevel.engines.simulation.POLL_INTERVAL`` (0.01 s) between
the engine's polls (the grid's for replies, the node feeder's for messages);
``ray-poll-0.1`` is the same run with Flower's 0.1 s waits, i.e. Flower as it
ships (``--no-default-poll`` skips it). Prints the mean per round of each and the
ratios to ``inprocess``.

    python bench/round_time.py [--rounds 40] [--warmup 5] [--hubs 3] [--workers 4] [key=value ...]
"""

import argparse
import csv
import statistics
import sys
import tempfile
from pathlib import Path

import flwr_multilevel.engines.simulation as simulation
from flwr_multilevel.cli.main import main


def per_round(folder: Path, warmup: int) -> list[float]:
    with (folder / "rounds.csv").open() as file:
        rows = list(csv.DictReader(file))
    return [float(r["seconds"]) for r in rows[warmup:]]


def bench(args: argparse.Namespace, overrides: list[str]) -> None:
    common = [
        f"rounds={args.rounds}",
        f"hubs.count={args.hubs}",
        f"hubs.workers={args.workers}",
        "eval.hubs=false",
        *overrides,
    ]
    runs = [("ray", "ray", 0.01), ("inprocess", "inprocess", None)]
    if args.default_poll:
        runs.insert(1, ("ray-poll-0.1", "ray", 0.1))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, backend, poll in runs:
            if poll is not None:
                simulation.POLL_INTERVAL = poll
            out = Path(tmp) / name
            status = main(["run", *common, f"simulation.backend={backend}", f"output_dir={out}"])
            if status:
                sys.exit(status)
            results[name] = per_round(out, args.warmup)
    workers = args.hubs * args.workers
    print(
        f"\n{args.hubs} hubs x {args.workers} workers ({workers}), "
        f"rounds {args.warmup + 1}..{args.rounds} (after warm-up), seconds per round:"
    )
    for name, times in results.items():
        print(
            f"  {name:13s} mean {statistics.mean(times):.4f}"
            f"  median {statistics.median(times):.4f}"
            f"  min {min(times):.4f}  max {max(times):.4f}"
        )
    base = statistics.mean(results["inprocess"])
    for name in results:
        if name != "inprocess":
            print(f"  ratio {name} / inprocess: {statistics.mean(results[name]) / base:.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--hubs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=4, help="workers per hub")
    parser.add_argument("--no-default-poll", dest="default_poll", action="store_false")
    args, rest = parser.parse_known_args()
    bench(args, rest)
