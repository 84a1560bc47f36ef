"""A real Ray cluster of several nodes on this machine, started with Ray's own `ray start`.

Every node has its own ports (asked of the OS) and its own temp folder, so the
cluster never meets another Ray instance of this machine; it is stopped by the
PIDs of its own processes (those that name its temp folders, and their
children), never with `ray stop`, which stops every Ray process of the user.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RAY = Path(sys.executable).with_name("ray")
# the ports one node binds besides its workers' (random: --min/max-worker-port=0)
NODE_PORTS = (
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "runtime-env-agent-port",
    "metrics-export-port",
    "node-manager-port",
    "object-manager-port",
)
QUERY = """
import json, sys, ray
import ray._private.state as state  # the state API proper needs the dashboard (ray[default])
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
actors = [
    {"id": a["ActorID"], "class": a["ActorClassName"], "state": a["State"],
     "node": a["Address"]["NodeID"], "job": a["JobID"], "detached": a["IsDetached"]}
    for a in state.actors().values()
]
nodes = [{"id": n["NodeID"], "alive": n["Alive"], "cpus": n["Resources"].get("CPU", 0)}
         for n in ray.nodes()]
print("STATE " + json.dumps({"actors": actors, "nodes": nodes}))
"""


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct TCP ports free on 127.0.0.1 right now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def ray_env() -> dict[str, str]:
    return {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_DISABLE_DOCKER_CPU_WARNING": "1"}


class RayCluster:
    """A head and ``nodes - 1`` more nodes, each with ``cpus`` CPUs; a context manager."""

    def __init__(self, nodes: int = 2, cpus: int = 1, memory: int = 150_000_000) -> None:
        self.nodes, self.cpus, self.memory = nodes, cpus, memory
        self.root = Path(tempfile.mkdtemp(prefix="rayc-", dir="/tmp"))  # short: socket paths
        self.port = 0
        self.address = ""

    def _start(self, index: int, ports: list[int]) -> None:
        temp = self.root / f"n{index}"
        temp.mkdir()
        args = [str(RAY), "start", f"--temp-dir={temp}", f"--num-cpus={self.cpus}"]
        args += ["--num-gpus=0", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
        args += [f"--object-store-memory={self.memory}", "--min-worker-port=0"]
        args += [
            "--max-worker-port=0",
            *(f"--{n}={p}" for n, p in zip(NODE_PORTS, ports, strict=False)),
        ]
        if index == 0:
            args += ["--head", f"--port={self.port}", "--include-dashboard=false"]
            args += [f"--dashboard-port={ports[len(NODE_PORTS)]}"]
        else:
            args += [f"--address={self.address}"]
        subprocess.run(args, check=True, env=ray_env(), capture_output=True, timeout=180)

    def __enter__(self) -> "RayCluster":
        ports = free_ports(1 + self.nodes * (len(NODE_PORTS) + 1))
        self.port = ports.pop()
        self.address = f"127.0.0.1:{self.port}"
        try:
            for index in range(self.nodes):
                self._start(index, ports[index * 7 : index * 7 + 7])
            self.wait_for_nodes()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def state(self) -> dict:
        """The cluster's actors (every job's, dead ones too) and nodes, from a separate driver."""
        done = subprocess.run(
            [sys.executable, "-c", QUERY, self.address],
            env=ray_env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        line = next(x for x in done.stdout.splitlines() if x.startswith("STATE "))
        return json.loads(line[len("STATE ") :])

    def wait_for_nodes(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while sum(n["alive"] for n in self.state()["nodes"]) < self.nodes:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the cluster at {self.address} has fewer than {self.nodes}")
            time.sleep(1)

    def pids(self) -> set[int]:
        """This cluster's processes: those naming its temp folder, and their children."""
        roots, parents = set(), {}
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
                stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                parents[int(proc.name)] = int(stat[1])
            except (OSError, ValueError, IndexError):
                continue
            if str(self.root).encode() in cmdline:
                roots.add(int(proc.name))
        found, grew = set(roots), True
        while grew:
            children = {pid for pid, ppid in parents.items() if ppid in found} - found
            found |= children
            grew = bool(children)
        return found

    def stop(self, grace: float = 15) -> None:
        """Stop this cluster's processes (SIGTERM, then SIGKILL after ``grace`` seconds)."""
        pids = self.pids()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and any(_running(pid) for pid in pids):
                time.sleep(0.2)
        shutil.rmtree(self.root, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
