"""`compare --parallel 2` against the same comparison one run after the other, side by side.

Both run the same four-run comparison as ``flwr-multilevel compare`` child
processes into fresh folders, alternately (``--repeats`` pairs). Prints the
wall time of each, their ratio, and whether the two comparison tables agree
(every column but ``wall_s``). The parallel wall time includes starting Ray.

    python bench/compare_parallel.py                       # CPU Fig. 1 (MNIST), 512 time steps
    python bench/compare_parallel.py --parallel 2 --repeats 2 time_steps=128

Extra ``key=value`` arguments go to both comparisons.
"""

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMPARISON = "baselines/paper/cpu_fig1_mnist.yaml"


def compare(out: Path, extra: list[str], parallel: int) -> float:
    cmd = [sys.executable, "-m", "flwr_multilevel", "compare", COMPARISON, *extra]
    cmd += ["--out", str(out), *(["--parallel", str(parallel)] if parallel else [])]
    started = time.perf_counter()
    done = subprocess.run(
        cmd,
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
    )
    if done.returncode:
        sys.exit(f"compare failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def table(out: Path) -> list[dict[str, str]]:
    with (out / "comparison.csv").open() as file:
        return [{k: v for k, v in row.items() if k != "wall_s"} for row in csv.DictReader(file)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    args, extra = parser.parse_known_args()
    extra = [f"data.root={args.data_root}", *(extra or ["time_steps=512"])]
    walls: dict[str, list[float]] = {"one by one": [], f"--parallel {args.parallel}": []}
    same = True
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            seq = compare(Path(tmp) / f"seq{i}", extra, 0)
            par = compare(Path(tmp) / f"par{i}", extra, args.parallel)
            walls["one by one"].append(seq)
            walls[f"--parallel {args.parallel}"].append(par)
            same = same and table(Path(tmp) / f"seq{i}") == table(Path(tmp) / f"par{i}")
    seq, par = (statistics.mean(v) for v in walls.values())
    print(
        f"{COMPARISON} {' '.join(extra)}; {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f} at the end"
    )
    print("| comparison | wall (mean) | runs | / one by one | same table (but wall_s) |")
    print("| --- | --- | --- | --- | --- |")
    for name, values in walls.items():
        ratio = statistics.mean(values) / seq
        each = ", ".join(f"{v:.0f}" for v in values)
        print(
            f"| {name} | {statistics.mean(values):.1f} s | {each} s | {ratio:.2f} | "
            f"{'yes' if same else 'NO'} |"
        )
    print(f"speed-up: {seq / par:.2f}x")


if __name__ == "__main__":
    main()
