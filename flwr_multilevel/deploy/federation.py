"""Start and stop a local multi-hub Flower federation: SuperLinks, SuperNodes, runs.

Process management only (no MLL-SGD logic): one SuperLink per hub on a free
port with its own ``FLWR_HOME``, one SuperNode per worker with its own port,
``FLWR_HOME``, node config and authentication key, and ``flwr run`` against
one hub's SuperLink. Every process is started in its own session and recorded
by PID; :class:`ProcessGroup` stops all of them, and what they spawned, on
success, on error and on SIGINT/SIGTERM.

Commands (Flower 1.42), for hub d on port P:

* ``flower-superlink --ssl-certfile hub-d/superlink.pem --ssl-keyfile
  hub-d/superlink.key --ssl-ca-certfile ca.pem --enable-supernode-auth
  --host 127.0.0.1 --port P --disable-runtime-dependency-installation``
  (``--insecure`` instead of the TLS and auth flags to opt out);
* ``flwr supernode register hub-d/supernode-k.pub hub-d`` with a
  ``$FLWR_HOME/config.toml`` connection ``[superlink.hub-d] address =
  "127.0.0.1:P"`` and ``root-certificates = "ca.pem"``;
* ``flower-supernode --root-certificates ca.pem --superlink 127.0.0.1:P
  --port Q --auth-supernode-private-key hub-d/supernode-k --node-config
  "partition-id=i worker-id=i hub-id=d"``;
* ``flwr run APP hub-d --stream --run-config overrides.toml``.
"""

import json
import os
import re
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from logging import INFO
from pathlib import Path
from typing import Any

from flwr.common.logger import log

from flwr_multilevel.deploy.certs import FederationFiles, make_federation
from flwr_multilevel.deploy.processes import (
    READY_S,
    STOP_GRACE_S,
    DeploymentError,
    ProcessGroup,
    descendants,
    executable,
    free_port,
    pid_alive,
    wait_for_log,
    wait_for_port,
)

__all__ = [
    "READY_S",
    "STOP_GRACE_S",
    "DeploymentError",
    "LocalFederation",
    "ProcessGroup",
    "SuperLinkHandle",
    "SuperNodeHandle",
    "descendants",
    "executable",
    "free_port",
    "local_federation",
    "node_config_arg",
    "pid_alive",
    "register_supernode",
    "start_superlink",
    "start_supernode",
    "submit_run",
    "wait_for_log",
    "wait_for_port",
    "write_connections",
    "write_run_config",
]

FLOWER_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
}


def _env(group: ProcessGroup, home: Path | str) -> dict[str, str]:
    """Flower's quiet defaults, then the group's own environment, then ``FLWR_HOME``."""
    return {**FLOWER_ENV, **group.env, "FLWR_HOME": str(home)}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    raise ValueError(f"run config: expected bool, int, float or str, got {value!r}")


def write_run_config(path: str | Path, config: Mapping[str, Any]) -> Path:
    """Write flat run-config overrides as a TOML file ``flwr run --run-config`` reads.

    Examples
    --------
    >>> import tempfile
    >>> p = write_run_config(Path(tempfile.mkdtemp()) / "c.toml", {"hubs.count": 3, "x": "a"})
    >>> p.read_text().splitlines()
    ['"hubs.count" = 3', '"x" = "a"']
    """
    lines = [f"{json.dumps(k)} = {_toml_value(v)}\n" for k, v in config.items()]
    Path(path).write_text("".join(lines))
    return Path(path)


def write_connections(
    flwr_home: str | Path, addresses: Mapping[str, str], root_certificates: str | Path | None
) -> Path:
    """Write ``$FLWR_HOME/config.toml`` with one SuperLink connection per name; return it.

    ``root_certificates`` None means insecure connections.
    """
    home = Path(flwr_home)
    home.mkdir(parents=True, exist_ok=True)
    lines = ["[superlink]\n", f"default = {json.dumps(next(iter(addresses)))}\n"]
    for name, address in addresses.items():
        lines += [f"\n[superlink.{name}]\n", f"address = {json.dumps(address)}\n"]
        if root_certificates is None:
            lines.append("insecure = true\n")
        else:
            lines.append(f"root-certificates = {json.dumps(str(Path(root_certificates)))}\n")
    path = home / "config.toml"
    path.write_text("".join(lines))
    return path


def node_config_arg(config: Mapping[str, Any]) -> str:
    """Return ``--node-config``'s value for ``config``.

    Examples
    --------
    >>> node_config_arg({"partition-id": 3, "worker-id": 3, "hub-id": 1})
    'partition-id=3 worker-id=3 hub-id=1'
    """
    return " ".join(f"{k}={_toml_value(v)}" for k, v in config.items())


@dataclass
class SuperLinkHandle:
    """A started SuperLink: its hub, address, connection name and process."""

    hub_id: int
    address: str
    connection: str
    proc: "subprocess.Popen[bytes]"


@dataclass
class SuperNodeHandle:
    """A started SuperNode: its hub, worker id, node config and process."""

    hub_id: int
    worker_id: int
    node_config: dict[str, Any]
    proc: "subprocess.Popen[bytes]"


def start_superlink(
    group: ProcessGroup,
    folder: str | Path,
    hub_id: int,
    files: FederationFiles | None,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    wait: bool = True,
) -> SuperLinkHandle:
    """Start hub ``hub_id``'s SuperLink; with ``wait``, return once it listens.

    With ``files`` it uses TLS (the hub's SuperLink certificate) and
    ``--enable-supernode-auth``; ``files=None`` starts it ``--insecure``. Its
    ``FLWR_HOME`` and log are ``folder/superlink-<d>/``.

    Raises
    ------
    DeploymentError
        If it exits or does not listen within ``READY_S`` seconds.
    """
    port = port or free_port(host)
    home = Path(folder) / f"superlink-{hub_id}"
    home.mkdir(parents=True, exist_ok=True)
    argv = [executable("flower-superlink"), "--host", host, "--port", str(port)]
    if files is None:
        argv.append("--insecure")
    else:
        cert, key = files.superlink[hub_id]
        argv += ["--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]
        argv += ["--ssl-ca-certfile", str(files.ca_cert), "--enable-supernode-auth"]
    argv.append("--disable-runtime-dependency-installation")
    name = f"superlink-{hub_id}"
    proc = group.start(name, argv, env=_env(group, home), log_path=home / "superlink.log")
    if wait:
        wait_for_port(host, port, proc)
    return SuperLinkHandle(hub_id, f"{host}:{port}", f"hub-{hub_id}", proc)


def register_supernode(
    flwr_home: str | Path, connection: str, public_key: str | Path, *, timeout: float = READY_S
) -> int:
    """Register a SuperNode public key with a SuperLink; return the node id it got.

    Runs ``flwr supernode register PUBLIC_KEY CONNECTION`` with ``FLWR_HOME``
    holding the connection (see :func:`write_connections`).

    Raises
    ------
    DeploymentError
        If the registration fails.
    """
    env = {**os.environ, **FLOWER_ENV, "FLWR_HOME": str(flwr_home)}
    argv = [executable("flwr"), "supernode", "register", str(public_key), connection]
    argv += ["--format", "json"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    match = re.search(r'"node-id":\s*(\d+)', done.stdout)
    if done.returncode != 0 or match is None:
        text = " | ".join((done.stdout + done.stderr).strip().splitlines()[-3:])
        raise DeploymentError(f"registering {public_key} with {connection} failed: {text}")
    return int(match.group(1))


def start_supernode(
    group: ProcessGroup,
    folder: str | Path,
    superlink: SuperLinkHandle,
    worker_id: int,
    node_config: Mapping[str, Any],
    *,
    root_certificates: str | Path | None,
    private_key: str | Path | None,
    host: str = "127.0.0.1",
    wait: bool = True,
) -> SuperNodeHandle:
    """Start one SuperNode connected to ``superlink``.

    ``root_certificates`` None connects ``--insecure``; ``private_key`` (an
    OpenSSH EC key, see :func:`flwr_multilevel.deploy.certs.make_supernode_keys`)
    authenticates it. Its ``FLWR_HOME`` and log are ``folder/supernode-<i>/``.
    With ``wait`` it returns once the SuperNode logged its ``SuperNode ID``.

    Raises
    ------
    DeploymentError
        If it exits (a refused key: exit code 305) or is not up within ``READY_S``.
    """
    home = Path(folder) / f"supernode-{worker_id}"
    home.mkdir(parents=True, exist_ok=True)
    argv = [executable("flower-supernode"), "--superlink", superlink.address]
    argv += ["--host", host, "--port", str(free_port(host))]
    if root_certificates is None:
        argv.append("--insecure")
    else:
        argv += ["--root-certificates", str(root_certificates)]
    if private_key is not None:
        argv += ["--auth-supernode-private-key", str(private_key)]
    argv += ["--node-config", node_config_arg(node_config)]
    log_path = home / "supernode.log"
    proc = group.start(f"supernode-{worker_id}", argv, env=_env(group, home), log_path=log_path)
    if wait:
        wait_for_log(log_path, r"SuperNode ID", proc)
    return SuperNodeHandle(superlink.hub_id, worker_id, dict(node_config), proc)


def submit_run(
    group: ProcessGroup,
    app_dir: str | Path,
    flwr_home: str | Path,
    connection: str,
    run_config: Mapping[str, Any],
    log_path: str | Path,
) -> "subprocess.Popen[bytes]":
    """Submit the Flower App in ``app_dir`` to one SuperLink; stream its log to a file.

    Runs ``flwr run APP_DIR CONNECTION --stream --run-config overrides.toml``
    with ``FLWR_HOME=flwr_home`` (its ``config.toml`` names the connection).
    The process ends when the run ends; its exit status is the run's.

    Returns
    -------
    subprocess.Popen
        The ``flwr run`` process, recorded in ``group``.
    """
    overrides = write_run_config(Path(log_path).with_suffix(".run_config.toml"), run_config)
    argv = [executable("flwr"), "run", str(app_dir), connection, "--stream"]
    if run_config:
        argv += ["--run-config", str(overrides)]
    return group.start(
        f"flwr-run-{connection}", argv, env=_env(group, flwr_home), log_path=log_path
    )


@dataclass
class LocalFederation:
    """D SuperLinks with their SuperNodes on this machine.

    Use :func:`local_federation` to start one; it stops every process on exit.

    Attributes
    ----------
    folder : Path
        Its folder: ``certs/``, ``cli/`` (the ``FLWR_HOME`` of ``flwr``, with
        one connection ``hub-<d>`` per SuperLink), ``superlink-<d>/``,
        ``supernode-<i>/`` (each a ``FLWR_HOME`` with its log).
    group : ProcessGroup
        Every process started.
    files : FederationFiles | None
        Certificates and keys (None: insecure).
    superlinks : list[SuperLinkHandle]
        One per hub.
    peer_addresses : dict[int, str]
        A free ``host:port`` per hub for its peer layer (nothing listens there
        yet: the hub's ServerApp binds it).
    supernodes : list[SuperNodeHandle]
        One per worker, numbered across hubs.
    """

    folder: Path
    group: ProcessGroup
    files: FederationFiles | None
    superlinks: list[SuperLinkHandle] = field(default_factory=list)
    supernodes: list[SuperNodeHandle] = field(default_factory=list)
    peer_addresses: dict[int, str] = field(default_factory=dict)

    def peer_tls_files(self, hub_id: int) -> dict[str, str]:
        """Return hub ``hub_id``'s peer TLS paths (``ca``, ``cert``, ``key``); {} if insecure."""
        if self.files is None:
            return {}
        cert, key = self.files.peer[hub_id]
        return {"ca": str(self.files.ca_cert), "cert": str(cert), "key": str(key)}

    @property
    def flwr_home(self) -> Path:
        """``FLWR_HOME`` of the ``flwr`` CLI (connections ``hub-<d>``)."""
        return self.folder / "cli"

    def submit(
        self, hub_id: int, app_dir: str | Path, run_config: Mapping[str, Any]
    ) -> "subprocess.Popen[bytes]":
        """Submit ``app_dir`` to hub ``hub_id``'s SuperLink; log to ``folder/run-<d>.log``."""
        return submit_run(
            self.group,
            app_dir,
            self.flwr_home,
            self.superlinks[hub_id].connection,
            run_config,
            self.folder / f"run-{hub_id}.log",
        )


@contextmanager
def local_federation(
    folder: str | Path,
    workers_per_hub: Sequence[int],
    *,
    insecure: bool = False,
    files: FederationFiles | None = None,
    host: str = "127.0.0.1",
    superexec_poll_s: float | None = None,
) -> Iterator[LocalFederation]:
    """Start one SuperLink per hub and one SuperNode per worker; stop them all on exit.

    Secure by default: TLS everywhere, ``--enable-supernode-auth`` on every
    SuperLink, each SuperNode's public key registered before it starts.
    Worker i (numbered across hubs) gets node config ``partition-id=i
    worker-id=i hub-id=d``.

    Parameters
    ----------
    folder : str | Path
        Where homes, logs and (unless ``files``) certificates go.
    workers_per_hub : Sequence[int]
        Workers of each hub.
    insecure : bool (default: False)
        Explicit opt-out: no TLS, no SuperNode authentication.
    files : FederationFiles | None (default: None)
        Certificates to use; made under ``folder/certs`` if None.
    host : str (default: "127.0.0.1")
        Address every process binds to.
    superexec_poll_s : float | None (default: None)
        How often the SuperExecs look for work to start (ServerApp and ClientApp
        processes), via ``FLWR_SUPEREXEC_TASK_POLL_INTERVAL`` (0.01 to 60); None
        keeps Flower's 1 s.

    Yields
    ------
    LocalFederation
        The started federation.

    Raises
    ------
    DeploymentError
        If a process does not come up (every process started is stopped first).
    """
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    if not insecure and files is None:
        files = make_federation(root / "certs", len(workers_per_hub), list(workers_per_hub))
    env = dict(FLOWER_ENV)
    if superexec_poll_s is not None:
        env["FLWR_SUPEREXEC_TASK_POLL_INTERVAL"] = str(superexec_poll_s)
    with ProcessGroup(env) as group:
        fed = LocalFederation(root, group, None if insecure else files)
        fed.peer_addresses = {d: f"{host}:{free_port(host)}" for d in range(len(workers_per_hub))}
        # start everything of one kind at once, then wait: the processes' start-up overlaps
        for d in range(len(workers_per_hub)):
            fed.superlinks.append(start_superlink(group, root, d, fed.files, host=host, wait=False))
        for link in fed.superlinks:
            link_host, port = link.address.rsplit(":", 1)
            wait_for_port(link_host, int(port), link.proc)
        write_connections(
            fed.flwr_home,
            {s.connection: s.address for s in fed.superlinks},
            None if fed.files is None else fed.files.ca_cert,
        )
        workers = [(d, k) for d, count in enumerate(workers_per_hub) for k in range(count)]
        if fed.files is not None:
            keys = fed.files.supernode
            with ThreadPoolExecutor(max_workers=8) as pool:
                list(
                    pool.map(
                        lambda dk: register_supernode(
                            fed.flwr_home, fed.superlinks[dk[0]].connection, keys[dk[0]][dk[1]][1]
                        ),
                        workers,
                    )
                )
        for worker, (d, k) in enumerate(workers):
            config = {"partition-id": worker, "worker-id": worker, "hub-id": d}
            fed.supernodes.append(
                start_supernode(
                    group,
                    root,
                    fed.superlinks[d],
                    worker,
                    config,
                    root_certificates=None if fed.files is None else fed.files.ca_cert,
                    private_key=None if fed.files is None else fed.files.supernode[d][k][0],
                    host=host,
                    wait=False,
                )
            )
        for node in fed.supernodes:
            node_log = root / f"supernode-{node.worker_id}" / "supernode.log"
            wait_for_log(node_log, "SuperNode ID", node.proc)
        log(INFO, "federation up: %s SuperLinks, %s SuperNodes", len(fed.superlinks), len(workers))
        yield fed
