"""Wall time per round: Flower's simulation engine (Ray) against the in-process grid.

Both runs use the same config (3 hubs x 4 workers, digits, logreg) in this one
script; the first ``--warmup`` rounds are left out. Prints the mean per round of
each and their ratio.

    python bench/round_time.py [--rounds 40] [--warmup 5] [key=value ...]
"""

import argparse
import csv
import statistics
import sys
import tempfile
from pathlib import Path

from flwr_multilevel.cli import main


def per_round(folder: Path, warmup: int) -> list[float]:
    with (folder / "rounds.csv").open() as file:
        rows = list(csv.DictReader(file))
    return [float(r["seconds"]) for r in rows[warmup:]]


def bench(rounds: int, warmup: int, overrides: list[str]) -> None:
    common = [f"rounds={rounds}", "hubs.count=3", "hubs.workers=4", *overrides]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in ("ray", "inprocess"):
            out = Path(tmp) / backend
            status = main(["run", *common, f"simulation.backend={backend}", f"output_dir={out}"])
            if status:
                sys.exit(status)
            results[backend] = per_round(out, warmup)
    print(f"\nrounds {warmup + 1}..{rounds} (after warm-up), seconds per round:")
    for backend, times in results.items():
        print(
            f"  {backend:10s} mean {statistics.mean(times):.4f}"
            f"  median {statistics.median(times):.4f}"
            f"  min {min(times):.4f}  max {max(times):.4f}"
        )
    ratio = statistics.mean(results["ray"]) / statistics.mean(results["inprocess"])
    print(f"  ratio ray / inprocess: {ratio:.1f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    args, rest = parser.parse_known_args()
    bench(args.rounds, args.warmup, rest)
