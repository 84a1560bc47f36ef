"""Where a Ray round's time goes: timers around each stage of Flower's simulation engine.

Runs one config on ``simulation.backend=ray`` and on ``inprocess`` in this
process and prints, per stage, the calls and the mean/total milliseconds:

* ``app`` - the ClientApp itself (inside the Ray actor, or in-process),
* ``actor call`` - the engine's ``RayBackend.process_message`` (submit, Ray's
  serialisation of Message + Context both ways, the app, fetch),
* ``get_message_ins`` - the node feeder's look-ups in the LinkState (one per node per pass),
* ``grid poll`` - one ``pull_messages`` of the ServerApp's grid,
* ``store reply`` - ``LinkState.store_message_res``.

Timers wrap the engine's functions from outside (this script only); the
project's code runs unchanged. The ClientApp travels to the actors pickled
with every message (Flower's way), so the ``app`` timer runs inside them;
``--app-by-value`` forces that for a ClientApp that would travel by name.

It profiles Flower's own path, one actor call per message
(``simulation.ray_groups=false``); the default grouped path is timed by
``bench/ray_vs_inprocess.py``.

    python bench/ray_profile.py [--hubs 3] [--workers 4] [--rounds 12] [key=value ...]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from flwr.server.superlink.fleet.vce.backend import raybackend
from flwr.server.superlink.linkstate import in_memory_linkstate
from flwr.superlink.grid import inmemory_grid

import flwr_multilevel.engines.launch as launch
import flwr_multilevel.engines.simulation as simulation
from flwr_multilevel.cli.main import main

TIMES: dict[str, list[tuple[float, float]]] = defaultdict(list)  # stage -> (start, seconds)


CPU: list[tuple[float, float, float]] = []  # round start: (time, driver CPU s, actors' CPU s)
MAIN_PID = os.getpid()
APPS = tempfile.mkdtemp()  # the ClientApp's timings, and the pids of the processes that ran it


def _actor_cpu() -> float:
    """Return the CPU seconds of the processes that ran the ClientApp so far (``ACTORS``)."""
    total, pids = 0.0, Path(APPS, "pids.txt")
    for pid in set(pids.read_text().split()) if pids.exists() else ():
        try:
            with open(f"/proc/{pid}/stat") as file:
                fields = file.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            pass
    return total


def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Return ``fn`` recording its wall time under ``name``."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start, clock = time.time(), time.perf_counter()
        if name == "round":
            CPU.append((start, time.process_time(), _actor_cpu()))
        try:
            return fn(*args, **kwargs)
        finally:
            TIMES[name].append((start, time.perf_counter() - clock))

    return wrapper


def app_timer(folder: str) -> Callable[..., Any]:
    """Return a wrapper that appends each ClientApp call's seconds to a per-process file."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(message: Any, context: Any) -> Any:
            start, clock = time.time(), time.perf_counter()
            reply = fn(message, context)
            with open(os.path.join(folder, f"app-{os.getpid()}.txt"), "a") as file:
                file.write(f"{start} {time.perf_counter() - clock}\n")
            if os.getpid() != MAIN_PID:
                with open(os.path.join(folder, "pids.txt"), "a") as file:
                    file.write(f"{os.getpid()}\n")
            return reply

        return call

    return wrap


def report(name: str, times: dict[str, list[tuple[float, float]]], cpu: list, warmup: int) -> None:
    """Print each stage's calls and time per round, over the rounds after ``warmup``."""
    rounds = sorted(times["round"])[warmup + 1 :]  # the first exchange is the discovery
    begin, end = rounds[0][0], rounds[-1][0] + rounds[-1][1]
    n = len(rounds)
    first, last = cpu[warmup + 1], cpu[-1]
    per = max(1, len(cpu) - warmup - 2)
    print(
        f"\n{name}: {n} rounds, mean {statistics.mean(d for _, d in rounds) * 1e3:.1f} ms,"
        f" median {statistics.median(d for _, d in rounds) * 1e3:.1f} ms;"
        f" from round start to round start: {(last[0] - first[0]) / per * 1e3:.1f} ms wall,"
        f" CPU {(last[1] - first[1]) / per * 1e3:.1f} ms driver"
        f" + {(last[2] - first[2]) / per * 1e3:.1f} ms ClientApp processes"
    )
    for stage, events in times.items():
        values = [d for start, d in events if begin <= start <= end]
        if values and stage != "round":
            print(
                f"  {stage:16s} {len(values) / n:7.1f}/round"
                f"  median {statistics.median(values) * 1e3:7.3f} ms"
                f"  mean {statistics.mean(values) * 1e3:7.3f} ms"
                f"  sum {sum(values) / n * 1e3:7.1f} ms/round"
            )


def run(args: argparse.Namespace, overrides: list[str]) -> None:
    common = [
        f"rounds={args.rounds}",
        f"hubs.count={args.hubs}",
        f"hubs.workers={args.workers}",
        "eval.hubs=false",
        "batch_size=32",
        "simulation.ray_groups=false",  # the stages below are those of one call per message
        *overrides,
    ]
    apps = APPS
    if args.app_by_value and hasattr(simulation, "ImportableClientApp"):  # a by-name ClientApp
        del simulation.ImportableClientApp.__reduce__  # back to Flower's pickling per message
    registered = launch.client_app._registered_funcs  # pylint: disable=protected-access
    originals = dict(registered)
    for key, fn in originals.items():
        registered[key] = app_timer(apps)(fn)
    # engine stages, timed from outside
    backend_cls = raybackend.RayBackend
    backend_cls.process_message = timed("actor call", backend_cls.process_message)  # type: ignore
    grid_cls = inmemory_grid.InMemoryGrid
    grid_cls.pull_messages = timed("grid poll", grid_cls.pull_messages)  # type: ignore
    state_cls = in_memory_linkstate.InMemoryLinkState
    state_cls.store_message_res = timed("store reply", state_cls.store_message_res)  # type: ignore
    state_cls.get_message_ins = timed("get_message_ins", state_cls.get_message_ins)  # type: ignore
    grid_cls.send_and_receive = timed("round", grid_cls.send_and_receive)  # type: ignore
    hook = getattr(simulation, "_hook", None)
    if hook is not None:  # the hooked grid's own send_and_receive

        def timed_hook(grid: Any, handoff: Any) -> None:
            hook(grid, handoff)
            grid.send_and_receive = timed("round", grid.send_and_receive)

        cast(Any, simulation)._hook = timed_hook  # pylint: disable=protected-access
    local = launch.LocalGrid
    local.send_and_receive = timed("round", local.send_and_receive)  # type: ignore
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in ("ray", "inprocess"):
            TIMES.clear()
            CPU.clear()
            for old in Path(apps).glob("*.txt"):
                old.unlink()
            out = Path(tmp) / backend
            if main(["run", *common, f"simulation.backend={backend}", f"output_dir={out}"]):
                sys.exit(1)
            files = list(Path(apps).glob("app-*.txt"))
            app_times = [
                (float(a), float(b))
                for f in files
                for a, b in (line.split() for line in f.read_text().splitlines())
            ]
            times = {
                f"app ({len(files)} proc)": app_times,
                **{k: list(v) for k, v in TIMES.items()},
            }
            results[backend] = (times, list(CPU))
    workers = args.hubs * args.workers
    print(f"\n{args.hubs} hubs x {args.workers} workers ({workers}), {args.rounds} rounds")
    for backend, (times, cpu) in results.items():
        report(backend, times, cpu, args.warmup)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--app-by-value",
        action="store_true",
        help="send the ClientApp by value (as Flower does by default): times it inside the actors",
    )
    parser.add_argument("--hubs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=4, help="workers per hub")
    args, rest = parser.parse_known_args()
    run(args, rest)
