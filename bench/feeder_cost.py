"""CPU the Ray engine's node feeder spends handing out one round, by number of workers.

The feeder (``flwr_multilevel/engines/dispatch.py``) runs a pass each time
the grid stores a message. This stores one message per node, as the grid
does at the start of a round (with ``--gap`` seconds between stores, the
time the grid takes to build the next message), and reports the feeder
thread's CPU seconds per stored message. Constant in N: linear per round.
With ``--before REF`` the ``dispatch.py`` of git ``REF`` is measured side by
side (loaded as a module from ``git show``).

    python bench/feeder_cost.py --sizes 1000,10000,50000 --before HEAD~1
"""

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from queue import Queue

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flwr.app import Message, RecordDict  # noqa: E402

from flwr_multilevel.client_app import app  # noqa: E402
from flwr_multilevel.engines import dispatch as current  # noqa: E402
from flwr_multilevel.engines.local_grid import LocalGrid  # noqa: E402


def dispatch_at(ref: str):
    text = subprocess.run(
        ["git", "show", f"{ref}:flwr_multilevel/engines/dispatch.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "dispatch_before.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("dispatch_before", path)
    assert spec is not None and spec.loader is not None  # a .py file has both
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class State:
    def store_message_ins(self, message):
        return message.metadata.message_id

    def get_message_ins(self, node_id, limit):
        return []


def cost(module, nodes: int, gap: float) -> float:
    grid = LocalGrid(app, 1)
    messages = [grid.create_message(RecordDict(), "train", n, "", ttl=600) for n in range(nodes)]
    queue: Queue[Message]
    dispatch, state, queue, stop = module.Dispatch(), State(), Queue(), threading.Event()
    feeder = threading.Thread(
        target=dispatch.feeder(0.1), args=(state, queue, {n: n for n in range(nodes)}, stop)
    )
    feeder.start()
    while not feeder.ident:
        time.sleep(0.001)
    time.sleep(0.3)  # the first pass
    clock = time.pthread_getcpuclockid(feeder.ident)
    began = time.clock_gettime(clock)
    for message in messages:
        state.store_message_ins(message)
        if gap:
            end = time.perf_counter() + gap
            while time.perf_counter() < end:  # busy, like building a message
                pass
    while queue.qsize() < nodes:
        time.sleep(0.01)
    spent = time.clock_gettime(clock) - began
    stop.set()
    feeder.join()
    return spent / nodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,50000")
    parser.add_argument("--gap", type=float, default=20e-6, help="seconds between two stores")
    parser.add_argument("--before", help="a git ref whose dispatch.py to measure too")
    args = parser.parse_args()
    versions = {"now": current}
    if args.before:
        versions[args.before] = dispatch_at(args.before)
    print("| workers | " + " | ".join(f"{v}: feeder CPU us/message" for v in versions) + " |")
    print("| --- |" + " --- |" * len(versions))
    for size in (int(s) for s in args.sizes.split(",")):
        figures = [cost(module, size, args.gap) * 1e6 for module in versions.values()]
        print(f"| {size:,} | " + " | ".join(f"{f:.1f}" for f in figures) + " |", flush=True)


if __name__ == "__main__":
    main()
