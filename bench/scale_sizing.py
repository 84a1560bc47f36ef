"""How far one machine goes: seconds per round and peak memory by model, workers and backend.

Each case runs in its own child process (``--case NAME``), which prepares the
config, runs it through ``launch`` (the run core) into a temporary folder and
prints its ``rounds.csv`` seconds; the parent samples the child's whole
process tree (for Ray: the driver, GCS, raylet and every actor) from
``/proc`` every 0.5 s for the peak of its summed PSS. The seconds of a round
exclude the evaluation of u (``rounds.csv``); the first round (imports, Ray's
actors, lazily built buffers) is left out when there are more.

Data: MNIST from ``--data-root`` (60,000 examples: 60 per worker at 1,000
workers, 6 at 10,000); the 100,000-worker batched case serves MNIST-shaped
synthetic data (``bench/batched_speed.py``'s, 200,000 examples, 2 per
worker), which only in-process paths can be served. Every case: tau 4, q 2,
batch 16, one evaluation at the end on 1,000 training examples.

    python bench/scale_sizing.py                        # every case (about 30 min on 2 cores)
    python bench/scale_sizing.py --only logreg-12,logreg-1000 --data-root ../shared/data
    python bench/scale_sizing.py --list

Prints a markdown table: case, workers, hubs, backend, rounds timed, s/round, peak PSS, wall.
Linux only (``/proc``).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ray_vs_inprocess import TreeSampler  # noqa: E402  (this folder's helper)

ROOT = Path(__file__).resolve().parent.parent
COMMON = [
    "tau=4",
    "q=2",
    "batch_size=16",
    "lr=0.05",
    "eval.every=1000000",
    "eval.train_examples=1000",
    "eval.hubs=false",
    "rates.distribution=uniform",
    "simulation.cpus_per_worker=1",
    "simulation.threads=1",
    "overwrite=true",
]
LAYOUT = {12: (3, 4, "path"), 1000: (20, 50, "ring"), 10_000: (100, 100, "ring")}
LAYOUT[100_000] = (100, 1000, "ring")
# name -> (model, workers, backend, rounds)
CASES = {
    f"{model}-{n}-{backend}": (model, n, backend, rounds)
    for model, n, backend, rounds in [
        ("logreg", 12, "inprocess", 6),
        ("logreg", 12, "ray", 6),
        ("logreg", 12, "batched", 6),
        ("logreg", 1000, "inprocess", 3),
        ("logreg", 1000, "ray", 3),
        ("logreg", 1000, "batched", 3),
        ("logreg", 10_000, "inprocess", 2),
        ("logreg", 10_000, "ray", 2),
        ("logreg", 10_000, "batched", 3),
        ("logreg", 100_000, "batched", 2),
        ("cnn", 12, "inprocess", 4),
        ("cnn", 12, "ray", 4),
        ("cnn", 12, "batched", 4),
        ("cnn", 1000, "inprocess", 2),
        ("cnn", 1000, "ray", 2),
        ("cnn", 1000, "batched", 2),
        ("cnn", 10_000, "batched", 2),
        ("cnn", 10_000, "inprocess", 1),
    ]
}
SYNTHETIC = 200_000  # examples of the synthetic data set served above 60,000 workers


def overrides(name: str, out: Path, data_root: str) -> list[str]:
    model, workers, backend, rounds = CASES[name]
    hubs, per_hub, graph = LAYOUT[workers]
    return [
        *COMMON,
        f"model.name={model}",
        f"hubs.count={hubs}",
        f"hubs.workers={per_hub}",
        f"hubs.graph={graph}",
        f"simulation.backend={backend}",
        f"rounds={rounds}",
        "data.name=mnist",
        f"data.root={data_root}",
        f"output_dir={out}",
    ]


def child(name: str, out: Path, data_root: str) -> None:
    """Run one case in this process; print its round seconds as JSON."""
    from flwr_multilevel.cli.console import quiet_flower
    from flwr_multilevel.engines.launch import launch
    from flwr_multilevel.experiment.config import load_config, validate
    from flwr_multilevel.experiment.prepare import prepare

    quiet_flower()
    if CASES[name][1] > 60_000:  # more workers than MNIST has examples
        from batched_speed import serve_synthetic, synthetic_mnist

        serve_synthetic(synthetic_mnist(SYNTHETIC))
    began = time.perf_counter()
    exp = prepare(validate(load_config(None, overrides(name, out, data_root))))
    prepared = time.perf_counter() - began
    summary = launch(exp)
    with (out / "rounds.csv").open() as file:
        import csv

        seconds = [float(row["seconds"]) for row in csv.DictReader(file)]
    print(
        "RESULT "
        + json.dumps({"seconds": seconds, "prepare_s": prepared, "eval_s": summary["eval_s"]})
    )


def run_case(name: str, data_root: str) -> dict:
    """Run ``name`` in a child process, its tree sampled; return its figures."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            __file__,
            "--case",
            name,
            "--out",
            str(Path(tmp) / "run"),
            "--data-root",
            data_root,
        ]
        started = time.perf_counter()
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
        )
        sampler = TreeSampler(proc.pid, every=0.5, pss=True)
        sampler.start()
        stdout, stderr = proc.communicate()
        sampler.stop.set()
        sampler.join()
    wall = time.perf_counter() - started
    if proc.returncode:
        return {
            "name": name,
            "error": (stderr.strip().splitlines() or ["?"])[-1][:160],
            "wall": wall,
            "pss": sampler.peak_pss,
        }
    result = json.loads(next(x for x in stdout.splitlines() if x.startswith("RESULT "))[7:])
    seconds = result["seconds"]
    timed = seconds[1:] if len(seconds) > 1 else seconds
    return {
        "name": name,
        "s_round": statistics.mean(timed),
        "rounds": len(timed),
        "pss": sampler.peak_pss,
        "wall": wall,
        **result,
    }


def row(r: dict) -> str:
    model, workers, backend, _ = CASES[r["name"]]
    hubs = LAYOUT[workers][0]
    gib = r["pss"] / 2**30
    if "error" in r:
        failed = f"failed: {r['error']}"
        return f"| {model} | {workers:,} | {hubs} | {backend} | {failed} | | {gib:.2f} GiB | {r['wall']:.0f} s |"  # noqa: E501
    return (
        f"| {model} | {workers:,} | {hubs} | {backend} | {r['rounds']} | {r['s_round']:.3g} | "
        f"{gib:.2f} GiB | {r['wall']:.0f} s |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated case names (default: all)")
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--list", action="store_true", help="print the case names")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--json", help="also append every result as a JSON line to this file")
    args = parser.parse_args()
    if args.case:
        child(args.case, Path(args.out), args.data_root)
        return
    if args.list:
        print("\n".join(CASES))
        return
    names = args.only.split(",") if args.only else list(CASES)
    print(f"load average before: {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs", flush=True)
    print("| model | workers | hubs | backend | rounds timed | s/round | peak PSS | run wall |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |", flush=True)
    for name in names:
        result = run_case(name, args.data_root)
        print(row(result), flush=True)
        if args.json:
            with open(args.json, "a") as file:
                file.write(json.dumps({**result, "load": os.getloadavg()[0]}) + "\n")


if __name__ == "__main__":
    main()
