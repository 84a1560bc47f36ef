"""Start and stop a local multi-hub Flower federation: SuperLinks, SuperNodes, runs.

Process management only (no MLL-SGD logic): one SuperLink per hub on a free
port with its own ``FLWR_HOME``, one SuperNode per worker with its own port,
``FLWR_HOME``, node config and authentication key, and ``flwr run`` against
one hub's SuperLink. Every process is started in its own session and recorded
by PID; :class:`ProcessGroup` stops all of them, and what they spawned, on
success, on error and on SIGINT/SIGTERM.

Commands (Flower 1.42), for hub d with its Fleet API on port P and its
Control API on port C:

* ``python -m flwr_multilevel.deploy.superlink --fleet 127.0.0.1:P --control
  127.0.0.1:C --ssl-certfile hub-d/superlink.pem --ssl-keyfile
  hub-d/superlink.key --ssl-ca-certfile ca.pem --enable-supernode-auth
  --disable-runtime-dependency-installation`` (Flower's SuperLink with its
  Control and Runtime APIs apart from the Fleet API, see
  :mod:`flwr_multilevel.deploy.superlink`; ``--insecure`` instead of the TLS
  and auth flags to opt out);
* ``flwr supernode register hub-d/supernode-k.pub hub-d`` with a
  ``$FLWR_HOME/config.toml`` connection ``[superlink.hub-d] address =
  "127.0.0.1:C"`` and ``root-certificates = "/abs/ca.pem"``;
* ``flower-supernode --root-certificates ca.pem --superlink 127.0.0.1:P
  --port Q --auth-supernode-private-key hub-d/supernode-k --node-config
  "partition-id=i worker-id=i hub-id=d"``;
* ``flwr run APP hub-d --stream --run-config overrides.toml``.
"""

import os
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
from flwr_multilevel.deploy.flower_files import (
    node_config_arg,
    write_connections,
    write_run_config,
)
from flwr_multilevel.deploy.flower_processes import (
    FLOWER_ENV,
    SuperLinkHandle,
    SuperNodeHandle,
    register_supernode,
    start_superlink,
    start_supernode,
    submit_run,
    wait_for_superlink,
)
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
    ready_s: float = READY_S,
    env: Mapping[str, str] | None = None,
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
    ready_s : float (default: READY_S)
        Seconds each process gets to come up, and each key to register
        (``deploy.start_timeout``).
    env : Mapping[str, str] | None (default: None)
        Extra environment of every process (``FLWR_MULTILEVEL_CACHE``).

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
    group_env = {**FLOWER_ENV, **(env or {})}
    if superexec_poll_s is not None:
        group_env["FLWR_SUPEREXEC_TASK_POLL_INTERVAL"] = str(superexec_poll_s)
    with ProcessGroup(group_env) as group:
        fed = LocalFederation(root, group, None if insecure else files)
        fed.peer_addresses = {d: f"{host}:{free_port(host)}" for d in range(len(workers_per_hub))}
        # start everything of one kind at once, then wait: the processes' start-up overlaps
        for d in range(len(workers_per_hub)):
            fed.superlinks.append(start_superlink(group, root, d, fed.files, host=host, wait=False))
        for link in fed.superlinks:
            wait_for_superlink(link, ready_s)
        write_connections(
            fed.flwr_home,
            {s.connection: s.control for s in fed.superlinks},
            None if fed.files is None else fed.files.ca_cert,
        )
        workers = [(d, k) for d, count in enumerate(workers_per_hub) for k in range(count)]
        if fed.files is not None:
            keys = fed.files.supernode
            # one `flwr` process per key: as many at once as there are cores, so each
            # gets its share of the machine within ready_s
            with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
                list(
                    pool.map(
                        lambda dk: register_supernode(
                            fed.flwr_home,
                            fed.superlinks[dk[0]].connection,
                            keys[dk[0]][dk[1]][1],
                            timeout=ready_s,
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
            wait_for_log(node_log, "SuperNode ID", node.proc, ready_s)
        log(INFO, "federation up: %s SuperLinks, %s SuperNodes", len(fed.superlinks), len(workers))
        yield fed
