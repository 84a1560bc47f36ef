"""The files and arguments Flower's commands read: run-config TOML, connections, node config."""

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any


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
