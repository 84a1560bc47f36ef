"""A hub's SuperLink with registration closed: Flower's SuperLink, its APIs served apart.

Flower 1.42 serves a SuperLink's Fleet API (what SuperNodes use), Control API
(``flwr supernode register``, ``flwr run``, ``flwr ls``) and Runtime API
(its SuperExec and ServerApps) on one ``--host``/``--port``, and the
open-source Control API authenticates nobody: whoever can reach the port a
SuperNode uses can register a key of their own and join the hub, or submit a
ServerApp that then runs on the hub's machine. ``--control-api-address`` is
deprecated and no longer separates anything.

This launcher runs Flower's own SuperLink application (its parser, lifespan,
SuperExec and routes, unchanged) on two listeners:

* ``--fleet HOST:PORT``, the address SuperNodes reach: it answers the Fleet
  API only (``/v1/fleet/...``) and refuses every other request with 403. With
  ``--enable-supernode-auth`` (always on unless ``--insecure``) the Fleet API
  itself registers nobody, so a SuperNode whose key the operator did not
  register can neither register it nor come online;
* ``--control`` (default ``127.0.0.1:9093``; the fleet host when that is a
  loopback address), bound to a loopback address only: the Control and
  Runtime APIs, so registration and run submission work from the hub's own
  machine only (its SuperExec connects there too).

Usage (``--certs CERTS --hub D`` is short for the three ``--ssl-*`` files of
hub D made by ``flwr-multilevel certs``; other arguments go to Flower's
``flower-superlink`` parser unchanged)::

    python -m flwr_multilevel.deploy.superlink --certs certs --hub 0 --fleet 10.0.0.5:9092

With ``--hub`` it writes the connection ``hub-<d>`` (the Control API
address, the CA certificate's absolute path) into ``$FLWR_HOME/config.toml``
for ``flwr supernode register ... hub-<d>`` and ``flwr run ... hub-<d>`` on
this machine, and logs ``SuperLink ready`` once both listeners accept.
"""

import argparse
import ipaddress
import os
import socket
import sys
from collections.abc import Sequence
from logging import INFO
from pathlib import Path
from typing import Any

import tomli_w
import tomllib
import uvicorn
from flwr.common.logger import log

FLEET_PREFIX = "/v1/fleet/"
CONTROL_PORT = 9093  # Flower's Control API port before 1.42
GRPC_CONTROL = "FLWR_INTERNAL_GRPC_CONTROL_API"  # Flower's switch for a gRPC Control API
DENIED = b"this address serves the Fleet API only; use the Control API on the hub's machine\n"


class FleetOnly:
    """ASGI wrapper: requests that did not arrive on ``control`` may use the Fleet API only.

    Which listener a request came in on is the ASGI scope's ``server``
    (the local address of its connection), so the decision needs no trust
    in anything the client sends.

    Parameters
    ----------
    app : Any
        The ASGI application (Flower's SuperLink).
    control : tuple[str, int]
        The local address of the Control/Runtime listener.
    """

    def __init__(self, app: Any, control: tuple[str, int]) -> None:
        self.app, self.control = app, (control[0], int(control[1]))

    def allows(self, scope: dict[str, Any]) -> bool:
        """Return whether the request (an ASGI scope) may reach the app.

        Examples
        --------
        >>> gate = FleetOnly(None, ("127.0.0.1", 9093))
        >>> http = lambda server, path: {"type": "http", "server": server, "path": path}
        >>> gate.allows(http(("10.0.0.5", 9092), "/v1/fleet/pull-messages"))
        True
        >>> gate.allows(http(("10.0.0.5", 9092), "/v1/control/register-node"))
        False
        >>> gate.allows(http(("127.0.0.1", 9092), "/v1/runtime/pull-task-input"))
        False
        >>> gate.allows(http(("127.0.0.1", 9093), "/v1/control/register-node"))
        True
        """
        if scope["type"] not in ("http", "websocket"):
            return True  # lifespan: the SuperLink's own start-up and shut-down
        server = scope.get("server") or ("", -1)
        if (str(server[0]), int(server[1])) == self.control:
            return True
        return str(scope.get("path", "")).startswith(FLEET_PREFIX)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Pass an allowed request on; answer any other with 403."""
        if self.allows(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(DENIED))]
        await send({"type": "http.response.start", "status": 403, "headers": headers})
        await send({"type": "http.response.body", "body": DENIED})


def split_address(text: str, what: str, default_port: int | None = None) -> tuple[str, int]:
    """Return ``(host, port)`` of ``HOST:PORT`` (``[v6]:PORT``); raise ValueError naming ``what``.

    Examples
    --------
    >>> split_address("10.0.0.5:9092", "--fleet")
    ('10.0.0.5', 9092)
    >>> split_address("127.0.0.2", "--control", 9093)
    ('127.0.0.2', 9093)
    """
    host, sep, port = text.rpartition(":")
    if not sep or "]" in port:
        host, port = text, "" if default_port is None else str(default_port)
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{what}: expected HOST:PORT, got {text!r}")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """Return whether ``host`` is a loopback IP address (names do not count).

    Examples
    --------
    >>> is_loopback("127.0.0.2"), is_loopback("::1"), is_loopback("0.0.0.0"), is_loopback("x")
    (True, True, False, False)
    """
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def control_address(fleet_host: str, text: str | None) -> tuple[str, int]:
    """Return the Control/Runtime listener: ``text`` if given, else a loopback default.

    The default is the fleet host when that is a loopback address (several
    sites on one machine, each its own 127.x address), else ``127.0.0.1``;
    port 9093.

    Raises
    ------
    ValueError
        ``text`` is not a loopback address.

    Examples
    --------
    >>> control_address("10.0.0.5", None), control_address("127.0.0.2", None)
    (('127.0.0.1', 9093), ('127.0.0.2', 9093))
    >>> control_address("10.0.0.5", "19093"), control_address("10.0.0.5", "127.0.0.3")
    (('127.0.0.1', 19093), ('127.0.0.3', 9093))
    >>> control_address("10.0.0.5", "10.0.0.5:9093")
    Traceback (most recent call last):
    ...
    ValueError: --control: expected a loopback address (this machine only), got '10.0.0.5:9093'
    """
    default = fleet_host if is_loopback(fleet_host) else "127.0.0.1"
    if text is None:
        return default, CONTROL_PORT
    host, port = split_address(
        f"{default}:{text}" if text.isdigit() else text, "--control", CONTROL_PORT
    )
    if not is_loopback(host):
        raise ValueError(
            f"--control: expected a loopback address (this machine only), got {text!r}"
        )
    return host, port


def bind(host: str, port: int, what: str) -> socket.socket:
    """Return a TCP socket bound to ``host:port`` (not yet listening).

    Raises
    ------
    ValueError
        The address cannot be bound (in use, not this machine's).
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as err:
        raise ValueError(
            f"{what}: cannot listen on {host}:{port} ({err.strerror or err})"
        ) from None
    sock.set_inheritable(False)
    return sock


def flwr_home() -> Path:
    """Return ``$FLWR_HOME``, or ``~/.flwr`` as Flower's own default."""
    return Path(os.environ.get("FLWR_HOME") or Path.home() / ".flwr")


def write_connection(name: str, address: str, ca_cert: str | None) -> Path:
    """Add (or replace) the SuperLink connection ``name`` in ``$FLWR_HOME/config.toml``.

    Other connections and settings in the file stay; a file without a
    default connection gets ``name`` as default. ``ca_cert`` None writes
    ``insecure = true``.
    """
    path = flwr_home() / "config.toml"
    data: dict[str, Any] = tomllib.loads(path.read_text()) if path.is_file() else {}
    links = data.setdefault("superlink", {})
    entry: dict[str, Any] = {"address": address}
    if ca_cert is None:
        entry["insecure"] = True
    else:
        entry["root-certificates"] = str(Path(ca_cert).expanduser().absolute())
    links[name] = entry
    links.setdefault("default", name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps(data))
    return path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m flwr_multilevel.deploy.superlink",
        description="Flower's SuperLink with the Fleet API on --fleet and the Control and "
        "Runtime APIs on a loopback address only. Other arguments go to flower-superlink.",
    )
    parser.add_argument("--fleet", required=True, metavar="HOST:PORT", help="for SuperNodes")
    parser.add_argument(
        "--control",
        metavar="[HOST:]PORT",
        help="loopback address of the Control and Runtime APIs (default: 127.0.0.1:9093, "
        "or the fleet host:9093 when that is a loopback address)",
    )
    parser.add_argument("--certs", help="a folder of `flwr-multilevel certs` (with --hub)")
    parser.add_argument("--hub", type=int, help="the hub d this SuperLink serves")
    return parser


def flower_arguments(ns: argparse.Namespace, rest: Sequence[str]) -> list[str]:
    """Return the arguments for Flower's parser: ``rest`` plus TLS files, auth and no installs.

    Raises
    ------
    ValueError
        ``--host``/``--port`` given (this launcher sets them), or ``--certs`` without ``--hub``.
    """
    given = {arg.split("=")[0] for arg in rest if arg.startswith("--")}
    if given & {"--host", "--port"}:
        raise ValueError("--host/--port: use --fleet and --control instead")
    args = list(rest)
    if ns.certs is not None:
        if ns.hub is None:
            raise ValueError("--certs: expected --hub D beside it")
        hub = Path(ns.certs) / f"hub-{ns.hub}"
        args += ["--ssl-certfile", str(hub / "superlink.pem")]
        args += ["--ssl-keyfile", str(hub / "superlink.key")]
        args += ["--ssl-ca-certfile", str(Path(ns.certs) / "ca.pem")]
    if "--insecure" not in given and "--enable-supernode-auth" not in given:
        args.append("--enable-supernode-auth")
    if "--disable-runtime-dependency-installation" not in given:
        args.append("--disable-runtime-dependency-installation")
    return args


class _Server(uvicorn.Server):
    """uvicorn's server, logging one line once every listener accepts."""

    ready_line = ""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            log(INFO, "%s", self.ready_line)


def _ca_of(args: Sequence[str]) -> str | None:
    for i, arg in enumerate(args):
        if arg.startswith("--ssl-ca-certfile="):
            return arg.split("=", 1)[1]
        if arg == "--ssl-ca-certfile" and i + 1 < len(args):
            return args[i + 1]
    return None


def serve(argv: Sequence[str]) -> None:
    """Run the SuperLink of ``argv`` (see the module's docstring) until SIGINT/SIGTERM.

    Raises
    ------
    ValueError
        A bad or unusable ``--fleet``/``--control``, or Flower arguments this launcher sets.
    """
    from flwr_multilevel.flower_compat import superlink_serving  # pylint: disable=C0415

    ns, rest = _parser().parse_known_args(argv)
    if os.environ.get(GRPC_CONTROL) == "1":  # Flower would serve it on --control-api-address
        raise ValueError(f"{GRPC_CONTROL}=1 serves a Control API on another address; unset it")
    fleet = split_address(ns.fleet, "--fleet")
    control = control_address(fleet[0], ns.control)
    if fleet == control:
        raise ValueError("--fleet: expected another address than --control")
    args = flower_arguments(ns, rest)
    sockets = [bind(*control, "--control")]
    try:
        sockets.append(bind(*fleet, "--fleet"))
    except ValueError:
        sockets[0].close()
        raise
    serving = superlink_serving([*args, "--host", control[0], "--port", str(control[1])])
    config = uvicorn.Config(
        app=FleetOnly(serving.app, sockets[0].getsockname()[:2]),  # as connections report it
        ssl_certfile=serving.ssl_certfile,
        ssl_keyfile=serving.ssl_keyfile,
        log_config=serving.log_config,
        access_log=True,
        workers=1,
    )
    server = _Server(config)
    control_text = f"{control[0]}:{control[1]}"
    server.ready_line = (
        f"SuperLink ready: Fleet API on {ns.fleet} (SuperNodes), Control and Runtime APIs "
        f"on {control_text} (this machine only)"
    )
    if ns.hub is not None:
        path = write_connection(f"hub-{ns.hub}", control_text, _ca_of(args))
        server.ready_line += f"; connection hub-{ns.hub} in {path}"
    server.run(sockets=sockets)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; one line ``superlink: error: ...`` and status 2 on a bad argument."""
    try:
        serve(sys.argv[1:] if argv is None else argv)
    except ValueError as err:
        print(f"superlink: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
