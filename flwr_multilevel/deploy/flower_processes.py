"""One Flower process each: a hub's SuperLink, a SuperNode (registered first), ``flwr run``.

Every process starts in ``group`` (:class:`flwr_multilevel.deploy.processes.ProcessGroup`)
with its own ``FLWR_HOME`` and log; see :mod:`flwr_multilevel.deploy.federation`
for the commands.
"""

import os
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr_multilevel.deploy.certs import FederationFiles
from flwr_multilevel.deploy.flower_files import node_config_arg, write_run_config
from flwr_multilevel.deploy.processes import (
    READY_S,
    DeploymentError,
    ProcessGroup,
    executable,
    free_port,
    wait_for_log,
    wait_for_port,
)
from flwr_multilevel.deploy.superlink import is_loopback

FLOWER_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
}


def _env(group: ProcessGroup, home: Path | str) -> dict[str, str]:
    """Flower's quiet defaults, then the group's own environment, then ``FLWR_HOME``."""
    return {**FLOWER_ENV, **group.env, "FLWR_HOME": str(home)}


@dataclass
class SuperLinkHandle:
    """A started SuperLink: its hub, addresses, connection name and process.

    ``address`` is its Fleet API (what SuperNodes reach), ``control`` its
    Control and Runtime APIs on a loopback address (``flwr supernode
    register``, ``flwr run``), see :mod:`flwr_multilevel.deploy.superlink`.
    """

    hub_id: int
    address: str
    connection: str
    proc: "subprocess.Popen[bytes]"
    control: str = ""


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

    It runs through :mod:`flwr_multilevel.deploy.superlink`: the Fleet API
    on ``host:port`` and the Control and Runtime APIs on a free port of a
    loopback address (``host`` itself when that is one). With ``files`` it
    uses TLS (the hub's SuperLink certificate) and ``--enable-supernode-auth``;
    ``files=None`` starts it ``--insecure``. Its ``FLWR_HOME`` and log are
    ``folder/superlink-<d>/``.

    Raises
    ------
    DeploymentError
        If it exits or does not listen within ``READY_S`` seconds.
    """
    port = port or free_port(host)
    control_host = host if is_loopback(host) else "127.0.0.1"
    control_port = free_port(control_host)
    home = Path(folder) / f"superlink-{hub_id}"
    home.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "flwr_multilevel.deploy.superlink", "--fleet", f"{host}:{port}"]
    argv += ["--control", f"{control_host}:{control_port}"]
    if files is None:
        argv.append("--insecure")
    else:
        cert, key = files.superlink[hub_id]
        argv += ["--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]
        argv += ["--ssl-ca-certfile", str(files.ca_cert), "--enable-supernode-auth"]
    argv.append("--disable-runtime-dependency-installation")
    name = f"superlink-{hub_id}"
    proc = group.start(name, argv, env=_env(group, home), log_path=home / "superlink.log")
    handle = SuperLinkHandle(
        hub_id, f"{host}:{port}", f"hub-{hub_id}", proc, f"{control_host}:{control_port}"
    )
    if wait:
        wait_for_superlink(handle)
    return handle


def wait_for_superlink(link: SuperLinkHandle, ready_s: float = READY_S) -> None:
    """Return once both of ``link``'s listeners accept connections.

    Raises
    ------
    DeploymentError
        If it exits or does not listen within ``ready_s`` seconds.
    """
    for address in (link.address, link.control):
        host, port = address.rsplit(":", 1)
        wait_for_port(host, int(port), link.proc, ready_s)


def register_supernode(
    flwr_home: str | Path, connection: str, public_key: str | Path, *, timeout: float = READY_S
) -> int:
    """Register a SuperNode public key with a SuperLink; return the node id it got.

    Runs ``flwr supernode register PUBLIC_KEY CONNECTION`` with ``FLWR_HOME``
    holding the connection (see :func:`write_connections`).

    Raises
    ------
    DeploymentError
        If the registration fails, or takes more than ``timeout`` seconds.
    """
    env = {**os.environ, **FLOWER_ENV, "FLWR_HOME": str(flwr_home)}
    argv = [executable("flwr"), "supernode", "register", str(public_key), connection]
    argv += ["--format", "json"]
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise DeploymentError(
            f"registering {public_key} with {connection} took more than {timeout:g} s "
            "(deploy.start_timeout)"
        ) from None
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
