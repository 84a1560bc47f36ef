"""Per-message cost of a deployed worker against its floor: a fresh ClientApp process each time.

In a deployment Flower 1.42 starts a new ``flwr-clientapp`` process for every
message a SuperNode receives, so a worker's round costs a Python start, the
ClientApp's imports, its data and its training, every round. This script runs
one SuperLink with one SuperNode on loopback (insecure: TLS costs the same for
all) and sends it ``--messages`` rounds of train messages (the hub's model and
config), one message of each kind per round, interleaved so that every kind
sees the same machine load:

* ``floor``: a ClientApp that imports torch and Flower and replies at once:
  what any torch worker pays per message under Flower's deployment;
* ``worker``: the same process then imports and runs the project's worker
  (``flwr_multilevel.client_app``'s ``load_task`` and train function, under
  ``multilevel_mod``) with the partition cache on (``FLWR_MULTILEVEL_CACHE``),
  as ``flwr-multilevel deploy`` runs it;
* ``worker-nocache`` (unless ``--no-nocache``): the same without the cache.

Two times per message: ``process``, from the ClientApp process's start
(``/proc``) to its reply (Python, imports, data, training: what the worker
adds shows here), and ``round trip``, the ServerApp's push to reply (adds the
SuperExec's start-up poll and the SuperNode's fetch, up to 3 s in Flower 1.42,
the same for every kind). The first round is left out (cold caches). Prints
the medians and their ratios to the floor.

    python bench/deploy_worker_overhead.py [--messages 6] [--tau 4] [key=value ...]

``key=value`` are experiment overrides (``model.name=cnn``, ``data.name=mnist
data.root=/abs/path``). Run against another checkout with ``PYTHONPATH=/that/checkout``.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from omegaconf import OmegaConf

from flwr_multilevel.deploy.federation import local_federation
from flwr_multilevel.experiment.config import load_config, validate

CACHE_ENV = "FLWR_MULTILEVEL_CACHE"

CLIENT = '''
import os
import time

import torch  # noqa: F401 (what any torch worker imports)
from flwr.app import Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp


def process_age() -> float:
    """Seconds since this process started (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    with open("/proc/self/stat") as file:
        start = int(file.read().rsplit(")", 1)[1].split()[19]) / ticks
    with open("/proc/stat") as file:
        boot = next(float(line.split()[1]) for line in file if line.startswith("btime"))
    return time.time() - (boot + start)


def age_mod(msg, context, call_next):
    reply = call_next(msg, context)
    if not reply.has_error():
        metrics = dict(reply.content["metrics"].items())
        reply.content["metrics"] = MetricRecord({**metrics, "process-s": process_age()})
    return reply


app = ClientApp(mods=[age_mod])


@app.train()
def train(msg, context):
    """The floor replies at once; the worker imports and runs the project's worker."""
    kind = msg.content["config"]["bench-kind"]
    if kind == "floor":
        return Message(RecordDict({"metrics": MetricRecord({"steps": 0})}), reply_to=msg)
    if kind == "worker-nocache":
        os.environ.pop("FLWR_MULTILEVEL_CACHE", None)  # this process only: one per message
    from flwr_multilevel.client_app import load_task
    from flwr_multilevel.clients import make_worker_train, multilevel_mod

    return multilevel_mod(msg, context, make_worker_train(load_task))
'''

SERVER = '''
import json
import time

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp
from omegaconf import OmegaConf

from flwr_multilevel.experiment.config import validate
from flwr_multilevel.experiment.prepare import initial_model, prepare, train_config

app = ServerApp()


def one(grid, node, content):
    """Send one message; return (seconds to its reply, the reply or None)."""
    msg = Message(content, dst_node_id=node, message_type="train")
    start = time.monotonic()
    [pushed] = grid.push_messages([msg])
    replies = []
    while not replies and time.monotonic() < start + 300:
        replies = list(grid.pull_messages([pushed]))
        time.sleep(0.01)
    return time.monotonic() - start, (replies[0] if replies else None)


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    exp = prepare(validate(OmegaConf.create(str(cfg["experiment"]))))
    model = initial_model(exp)
    base = {**train_config(exp), "time-steps": int(exp.cfg.tau), "worker-id": 0, "hub-id": 0}
    deadline = time.monotonic() + 300
    while not (nodes := list(grid.get_node_ids())) and time.monotonic() < deadline:
        time.sleep(0.1)
    rows = []
    for server_round in range(1, int(cfg["messages"]) + 1):
        for kind in str(cfg["kinds"]).split(","):
            config = {**base, "server-round": server_round, "operating-rate": 1.0}
            config["bench-kind"] = kind
            content = RecordDict({"arrays": model, "config": ConfigRecord(config)})
            took, reply = one(grid, nodes[0], content)
            ok = reply is not None and not reply.has_error()
            error = "" if ok else (str(reply.error.reason) if reply else "no reply")
            process = float(reply.content["metrics"]["process-s"]) if ok else float("nan")
            rows.append({"kind": kind, "round": server_round, "round_trip_s": took,
                         "process_s": process, "error": error[:300]})
    with open(str(cfg["out"]), "w") as file:
        json.dump(rows, file)
'''

PYPROJECT = """
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "overhead"
version = "0.1.0"
license = "Apache-2.0"
dependencies = ["flwr>=1.42"]

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "flwr-multilevel"

[tool.flwr.app.components]
serverapp = "overhead_server:app"
clientapp = "overhead_client:app"

[tool.flwr.app.config]
messages = 1
kinds = "floor"
out = ""
experiment = ""
"""


def run_bench(folder: Path, experiment: str, messages: int, kinds: list[str]) -> list[dict]:
    """Return one row per message: ``messages`` rounds of one message of each kind."""
    app = folder / "app"
    app.mkdir(parents=True)
    (app / "pyproject.toml").write_text(PYPROJECT)
    (app / "overhead_server.py").write_text(textwrap.dedent(SERVER))
    (app / "overhead_client.py").write_text(textwrap.dedent(CLIENT))
    out = folder / "rows.json"
    os.environ[CACHE_ENV] = str(folder / "cache")  # the SuperNode's, as deploy sets it
    config = {"messages": messages, "kinds": ",".join(kinds), "out": str(out)}
    with local_federation(folder / "fed", [1], insecure=True, superexec_poll_s=0.1) as fed:
        proc = fed.submit(0, app, {**config, "experiment": experiment})
        proc.wait(timeout=120 + 120 * messages * len(kinds))
    if not out.is_file():
        log = (folder / "fed" / "run-0.log").read_text(errors="replace")
        sys.exit(f"no result; flwr run said:\n{log[-3000:]}")
    rows = json.loads(out.read_text())
    if errors := sorted({r["error"] for r in rows if r["error"]}):
        sys.exit(f"the ClientApp failed: {errors[0]}")
    return rows


def report(rows: list[dict], kinds: list[str], title: str) -> None:
    """Print the medians of the warm rounds and their ratios to the floor."""
    warm = [r for r in rows if r["round"] > 1]  # the first round: cold caches

    def med(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in warm if r["kind"] == kind)

    print(f"\n{title}, medians of rounds 2..{max(r['round'] for r in rows)}")
    print(f"{'ClientApp':<16}{'process s':>10}{'x floor':>9}{'round trip s':>14}{'x floor':>9}")
    floor_p, floor_t = med("floor", "process_s"), med("floor", "round_trip_s")
    for kind in kinds:
        p, t = med(kind, "process_s"), med(kind, "round_trip_s")
        print(f"{kind:<16}{p:>10.2f}{p / floor_p:>9.2f}{t:>14.2f}{t / floor_t:>9.2f}")
    cold = {r["kind"]: r["process_s"] for r in rows if r["round"] == 1}
    print("first round (cold): " + ", ".join(f"{k} {v:.2f} s" for k, v in cold.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=6, help="rounds of messages (6)")
    parser.add_argument("--tau", type=int, default=4, help="time steps per message (4)")
    parser.add_argument("--no-nocache", dest="nocache", action="store_false")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args()
    overrides = ["hubs.count=1", "hubs.workers=1", "rates.distribution=fixed"]
    cfg = validate(load_config(None, [f"tau={args.tau}", *overrides, *args.overrides]))
    kinds = ["floor", "worker", *(["worker-nocache"] if args.nocache else [])]
    begin = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="overhead-") as tmp:
        rows = run_bench(Path(tmp), OmegaConf.to_yaml(cfg, resolve=True), args.messages, kinds)
    print(f"{len(rows)} messages in {time.monotonic() - begin:.0f} s")
    report(rows, kinds, f"{cfg.data.name}/{cfg.model.name}, tau={args.tau}")


if __name__ == "__main__":
    main()
