"""Flower's own SuperLink application, built the way ``flower-superlink`` builds it.

Flower 1.42 serves the Fleet, Control and Runtime APIs of a SuperLink as one
FastAPI application on one ``--host``/``--port``: whoever reaches the port a
SuperNode uses reaches ``flwr supernode register`` and ``flwr run`` too, and
the open-source Control API authenticates nobody. To serve them apart,
:mod:`flwr_multilevel.deploy.superlink` needs that application and the
settings ``flower-superlink`` parsed; this module builds both with Flower's
own parser, lifespan (which starts the SuperExec) and app factory, the
private names of ``flwr.superlink.cli.flower_superlink`` and
``flwr.superlink.main``.
"""

import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from flwr_multilevel.flower_compat.guard import check_version, compat_error, require

CLI = "flwr.superlink.cli.flower_superlink"
MAIN = "flwr.superlink.main"
HTTP_LOGGING = "flwr.supercore.http_logging"


@dataclass(frozen=True)
class SuperLinkServing:
    """What ``flower-superlink`` would hand uvicorn: its app, address, TLS files, log config.

    Attributes
    ----------
    app : Any
        Flower's SuperLink FastAPI application (its lifespan starts the SuperExec).
    host, port : str, int
        Its ``--host``/``--port``: where the SuperExec reaches the Runtime API.
    ssl_certfile, ssl_keyfile : str | None
        The server TLS files (None with ``--insecure``).
    log_config : dict[str, Any]
        Flower's uvicorn logging configuration.
    """

    app: Any
    host: str
    port: int
    ssl_certfile: str | None
    ssl_keyfile: str | None
    log_config: dict[str, Any]


def _module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise compat_error(name, "cannot be imported") from err


def superlink_serving(flower_args: Sequence[str]) -> SuperLinkServing:
    """Parse ``flower-superlink`` arguments and build its app, as ``flower-superlink`` does.

    Parameters
    ----------
    flower_args : Sequence[str]
        The arguments of ``flower-superlink`` (``--host``, ``--port``,
        ``--ssl-certfile``, ``--enable-supernode-auth``, ...).

    Raises
    ------
    FlowerCompatError
        Flower's parser, lifespan or app factory is missing or changed.
    SystemExit
        Flower's parser refused the arguments (it prints why).
    """
    check_version()
    cli, main = _module(CLI), _module(MAIN)
    parse = require(
        cli, "_parse_superlink_lifespan_config", f"{CLI}._parse_superlink_lifespan_config"
    )
    lifespan = require(cli, "SuperLinkLifespan", f"{CLI}.SuperLinkLifespan")
    create_app = require(
        main, "create_app", f"{MAIN}.create_app", ("config", "superlink_lifespan_class")
    )
    log_config = require(
        _module(HTTP_LOGGING), "get_uvicorn_log_config", f"{HTTP_LOGGING}.get_uvicorn_log_config"
    )
    saved, sys.argv = sys.argv, ["flower-superlink", *flower_args]
    try:
        config = parse()  # reads sys.argv, like flower-superlink
    finally:
        sys.argv = saved
    for field in ("host", "port", "ssl_certfile", "ssl_keyfile"):
        if not hasattr(config, field):
            raise compat_error(f"{CLI}.SuperLinkLifespanConfig.{field}", "is missing")
    from flwr.common.logger import console_handler  # pylint: disable=import-outside-toplevel

    return SuperLinkServing(
        app=create_app(config, lifespan),
        host=str(config.host),
        port=int(config.port),
        ssl_certfile=config.ssl_certfile,
        ssl_keyfile=config.ssl_keyfile,
        log_config=log_config(console_handler.level),
    )
