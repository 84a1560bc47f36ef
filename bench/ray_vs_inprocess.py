"""Ray backend against in-process: seconds per round and peak memory, side by side.

Each config runs as its own ``flwr-multilevel run`` process, Ray and
in-process alternately (``--repeats`` pairs), logistic regression on digits,
batch 32. Rounds after ``--warmup`` count. While a run lasts, its whole
process tree (the driver, and for Ray the raylet, GCS and every actor) is
sampled from ``/proc``: the CPU seconds of each kind of process. Memory comes
from one more run of each backend, sampled every 0.1 s: the peak of the
tree's summed PSS (shared pages split between the processes that map them,
so Ray's shared memory is counted once) and of its summed RSS. Reading the
PSS (``smaps_rollup``) stalls a busy process, and Ray has 8 or more of them,
so the timed runs do not read it.

    python bench/ray_vs_inprocess.py                       # 12, 200 and 1,000 workers
    python bench/ray_vs_inprocess.py --sizes 3x4 --repeats 3 simulation.cpus_per_worker=0.5

Prints one table: mean seconds per round of each backend, their ratio, the
peak memory of each tree and where the CPU time went. Linux only (``/proc``).
"""

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")
SIZES = {"3x4": "path", "20x10": "ring", "20x50": "ring"}  # hubs x workers -> hub graph
ROUNDS = {"3x4": 40, "20x10": 12, "20x50": 5}


def _children() -> dict[int, list[int]]:
    """Return every process's children (pid -> child pids), from ``/proc/*/stat``."""
    tree: dict[int, list[int]] = defaultdict(list)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as file:
                fields = file.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        tree[int(fields[1])].append(int(entry))
    return tree


def _tree(root: int) -> list[int]:
    children, found, todo = _children(), [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _sample(pid: int, pss_too: bool = True) -> tuple[str, float, int, int] | None:
    """Return (name, CPU seconds, PSS bytes, RSS bytes) of one process, None if it is gone.

    Without ``pss_too`` the PSS is the RSS: reading ``smaps_rollup`` walks the
    process's page tables under its memory lock, which slows a busy process.
    """
    try:
        with open(f"/proc/{pid}/stat") as file:
            head, tail = file.read().rsplit(")", 1)
        fields = tail.split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        rss = int(fields[21]) * PAGE
        pss = rss
        if pss_too:
            with open(f"/proc/{pid}/smaps_rollup") as file:
                for line in file:
                    if line.startswith("Pss:"):
                        pss = int(line.split()[1]) * 1024
                        break
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            args = file.read().decode(errors="replace").split("\0")
        script = next((Path(a).name for a in args[1:3] if a.endswith(".py")), None)
    except (OSError, IndexError, ValueError):
        return None
    name = head.split("(", 1)[1]
    if name.startswith("ray::ClientApp"):
        name = "Ray actors"
    elif name.startswith("ray::"):
        name = "Ray " + name[5:]
    elif pid == _ROOT[0]:
        name = "driver"
    elif script is not None:
        name = f"Ray {script}"  # Ray's helper processes (log monitor, dashboard agent, ...)
    return name, cpu, pss, rss


_ROOT = [0]


class TreeSampler(threading.Thread):
    """Sample a process tree until stopped: peak summed PSS/RSS, CPU seconds per kind."""

    def __init__(self, root: int, every: float = 0.1, pss: bool = True) -> None:
        super().__init__(daemon=True)
        self.root, self.every, self.pss = root, every, pss
        self.peak_pss = self.peak_rss = 0
        self.cpu: dict[int, tuple[str, float]] = {}
        self.peak_kinds: dict[str, int] = {}  # PSS per kind of process at the peak
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            pss = rss = 0
            kinds: dict[str, int] = defaultdict(int)
            for pid in _tree(self.root):
                sample = _sample(pid, self.pss)
                if sample is None:
                    continue
                name, cpu, p, r = sample
                pss, rss = pss + p, rss + r
                kinds[name] += p
                self.cpu[pid] = (name, cpu)
            if pss > self.peak_pss:
                self.peak_pss, self.peak_kinds = pss, dict(kinds)
            self.peak_rss = max(self.peak_rss, rss)
            self.stop.wait(self.every)

    def cpu_by_kind(self) -> dict[str, float]:
        kinds: dict[str, float] = defaultdict(float)
        for name, cpu in self.cpu.values():
            kinds[name] += cpu
        return dict(kinds)


# pylint: disable-next=too-many-arguments,too-many-positional-arguments
def run_once(
    backend: str,
    size: str,
    rounds: int,
    folder: Path,
    extra: list[str],
    code: str | None = None,
    memory: bool = False,
) -> dict:
    """Run one config in a child process; return its round times, peak memory and CPU.

    ``code``: a folder whose ``flwr_multilevel`` the child imports instead (a
    checkout of an earlier commit, for before/after). ``memory``: sample the
    PSS every 0.1 s (a run for the memory columns; its round times are not
    used); otherwise only CPU times and RSS, every 0.5 s.
    """
    hubs, workers = size.split("x")
    out = folder / f"{backend}-{size}-{time.monotonic_ns()}"
    cmd = [
        sys.executable,
        "-m",
        "flwr_multilevel.cli.main",
        "run",
        f"rounds={rounds}",
        f"hubs.count={hubs}",
        f"hubs.workers={workers}",
        f"hubs.graph={SIZES.get(size, 'ring')}",
        "batch_size=32",
        "eval.hubs=false",
        f"simulation.backend={backend}",
        f"output_dir={out}",
        *extra,
    ]
    started = time.perf_counter()
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = os.pathsep.join([code, *env.get("PYTHONPATH", "").split(os.pathsep)])
    child = subprocess.Popen(  # python -m puts its working folder first on sys.path
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=code if code is not None else Path(__file__).resolve().parent.parent,
    )
    _ROOT[0] = child.pid
    sampler = TreeSampler(child.pid, 0.1 if memory else 0.5, pss=memory)
    sampler.start()
    _, err = child.communicate()
    sampler.stop.set()
    sampler.join()
    if child.returncode:
        sys.exit(f"{backend} {size} failed ({child.returncode}):\n{err[-3000:]}")
    with (out / "rounds.csv").open() as file:
        seconds = [float(row["seconds"]) for row in csv.DictReader(file)]
    return {
        "seconds": seconds,
        "wall": time.perf_counter() - started,
        "pss": sampler.peak_pss,
        "rss": sampler.peak_rss,
        "cpu": sampler.cpu_by_kind(),
        "kinds": sampler.peak_kinds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default="3x4,20x10,20x50", help="hubs x workers, comma-separated"
    )
    parser.add_argument("--rounds", type=int, default=0, help="0 = 40 / 12 / 5 by size")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="Ray / in-process pairs per size")
    parser.add_argument(
        "--baseline",
        action="append",
        default=[],
        help="also run Ray with the flwr_multilevel of this folder (an earlier commit); repeatable",
    )
    args, extra = parser.parse_known_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes.split(","):
            rounds = args.rounds or ROUNDS.get(size, 10)
            runs: dict[str, list[dict]] = {"ray": [], "inprocess": []}
            codes = {f"ray@{Path(code).name}": code for code in args.baseline}
            runs.update({name: [] for name in codes})
            for _ in range(args.repeats):
                for name in runs:
                    backend = name.split("@")[0]
                    result = run_once(backend, size, rounds, Path(tmp), extra, codes.get(name))
                    runs[name].append(result)
            for name in runs:  # memory: one more run each, sampled closely (slows it down)
                memory = run_once(
                    name.split("@")[0], size, rounds, Path(tmp), extra, codes.get(name), True
                )
                for result in runs[name]:
                    result.update({k: memory[k] for k in ("pss", "rss", "kinds")})
            rows.append((size, runs))
            print_table(rows, args.warmup)


def _mean_round(results: list[dict], warmup: int) -> float:
    return statistics.mean(s for r in results for s in r["seconds"][warmup:])


def print_table(rows: list, warmup: int) -> None:
    """Print, per size and Ray variant: s/round, ratio to in-process, peak memory, wall, CPU."""
    gib = 1024**3
    print(
        "\n| workers | backend | s/round | / in-process | peak PSS (tree) | peak RSS sum (tree) "
        "| run wall |\n| --- | --- | --- | --- | --- | --- | --- |"
    )
    for size, runs in rows:
        hubs, workers = (int(v) for v in size.split("x"))
        local = runs["inprocess"]
        for name, results in runs.items():
            ratio = ""
            if name != "inprocess":
                ratios = [
                    statistics.mean(r["seconds"][warmup:]) / statistics.mean(i["seconds"][warmup:])
                    for r, i in zip(results, local, strict=True)
                ]
                spread = f" ({min(ratios):.2f}-{max(ratios):.2f})" if len(ratios) > 1 else ""
                ratio = f"{_mean_round(results, warmup) / _mean_round(local, warmup):.2f}{spread}"
            print(
                f"| {hubs * workers} ({size}) | {name} | {_mean_round(results, warmup):.4f} "
                f"| {ratio} | {max(r['pss'] for r in results) / gib:.2f} GiB "
                f"| {max(r['rss'] for r in results) / gib:.2f} GiB "
                f"| {statistics.mean(r['wall'] for r in results):.1f} s |"
            )
    for size, runs in rows:
        for name, results in runs.items():
            cpu = results[-1]["cpu"]
            split = ", ".join(f"{k} {v:.1f}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1]))
            print(f"  CPU seconds, last {name} run, {size}: {split}")
            kinds = results[-1]["kinds"]
            mib = ", ".join(
                f"{k} {v / 2**20:.0f}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])
            )
            print(f"  PSS MiB at the peak, last {name} run, {size}: {mib}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
