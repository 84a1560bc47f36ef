"""The hub SuperLink launcher: which listener serves what, its arguments, its connection file.

The processes themselves (a stranger refused, the operator served) are tested in
tests/test_deploy_processes.py; here the parts, without starting a SuperLink.
"""

import asyncio

import pytest
import tomllib

from flwr_multilevel.deploy import superlink
from flwr_multilevel.deploy.superlink import FleetOnly, flower_arguments

CONTROL = ("127.0.0.1", 9093)


def call(gate: FleetOnly, server: tuple[str, int], path: str) -> tuple[int, bytes, bool]:
    """Send one HTTP request through ``gate``; return (status, body, whether the app saw it)."""
    seen: list[str] = []
    sent: list[dict] = []

    async def app(scope, receive, send):
        seen.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    gate.app = app
    scope = {"type": "http", "server": server, "path": path, "method": "POST"}
    asyncio.run(gate(scope, receive, send))
    return sent[0]["status"], sent[1]["body"], bool(seen)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/control/register-node",
        "/v1/control/start-run",
        "/v1/control/list-nodes",
        "/v1/runtime/pull-task-input",
        "/docs",
        "/openapi.json",
        "/v1/fleet",
    ],
)
def test_the_fleet_listener_refuses_everything_but_the_fleet_api(path):
    gate = FleetOnly(None, CONTROL)
    status, body, reached = call(gate, ("10.0.0.5", 9092), path)
    assert (status, reached) == (403, False)
    assert b"Fleet API only" in body
    # the same request from this machine, on the Fleet port, is refused just the same
    assert call(gate, ("127.0.0.1", 9092), path)[0] == 403


@pytest.mark.parametrize("path", ["/v1/fleet/activate-node", "/v1/fleet/pull-messages"])
def test_the_fleet_listener_serves_the_fleet_api(path):
    assert call(FleetOnly(None, CONTROL), ("10.0.0.5", 9092), path) == (200, b"ok", True)


def test_the_control_listener_serves_everything():
    gate = FleetOnly(None, CONTROL)
    for path in ("/v1/control/register-node", "/v1/runtime/pull-task-input", "/v1/fleet/x"):
        assert call(gate, CONTROL, path) == (200, b"ok", True)


def test_flower_arguments_close_registration_unless_insecure():
    ns = superlink._parser().parse_args(["--fleet", "10.0.0.5:9092", "--certs", "c", "--hub", "1"])
    args = flower_arguments(ns, ["--database", "state.db"])
    assert args[:2] == ["--database", "state.db"]
    assert "--enable-supernode-auth" in args
    assert "--disable-runtime-dependency-installation" in args
    assert args[args.index("--ssl-certfile") + 1] == "c/hub-1/superlink.pem"
    assert args[args.index("--ssl-ca-certfile") + 1] == "c/ca.pem"
    plain = superlink._parser().parse_args(["--fleet", "127.0.0.2:9092"])
    assert "--enable-supernode-auth" not in flower_arguments(plain, ["--insecure"])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--fleet", "10.0.0.5"], "--fleet: expected HOST:PORT, got '10.0.0.5'"),
        (["--fleet", "10.0.0.5:9092", "--control", "10.0.0.5:9093"], "expected a loopback"),
        (["--fleet", "127.0.0.2:9093"], "--fleet: expected another address than --control"),
        (["--fleet", "10.0.0.5:9092", "--certs", "c"], "--certs: expected --hub D beside it"),
        (["--fleet", "10.0.0.5:9092", "--port", "8000"], "--host/--port: use --fleet and"),
        (["--fleet", "192.0.2.1:9092", "--control", "19093"], "--fleet: cannot listen on"),
    ],
)
def test_bad_arguments_are_one_line_and_status_2(argv, message, capsys):
    assert superlink.main(argv) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("superlink: error: ") and message in err[0]


def test_a_grpc_control_api_on_its_own_address_is_refused(monkeypatch, capsys):
    monkeypatch.setenv("FLWR_INTERNAL_GRPC_CONTROL_API", "1")
    assert superlink.main(["--fleet", "127.0.0.2:19092"]) == 2
    assert "FLWR_INTERNAL_GRPC_CONTROL_API=1 serves a Control API" in capsys.readouterr().err


def test_the_connection_is_added_with_an_absolute_ca_path(tmp_path, monkeypatch):
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "config.toml").write_text(
        '[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = ":local:"\n'
    )
    path = superlink.write_connection("hub-1", "127.0.0.1:9093", "certs/ca.pem")
    data = tomllib.loads(path.read_text())
    assert data["superlink"]["default"] == "local"  # the operator's own stays
    assert data["superlink"]["local"] == {"address": ":local:"}
    assert data["superlink"]["hub-1"] == {
        "address": "127.0.0.1:9093",
        "root-certificates": str(tmp_path / "certs" / "ca.pem"),
    }
    superlink.write_connection("hub-1", "127.0.0.1:9094", None)  # replaced, not added twice
    assert tomllib.loads(path.read_text())["superlink"]["hub-1"] == {
        "address": "127.0.0.1:9094",
        "insecure": True,
    }
