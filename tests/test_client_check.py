"""A simulated App's ClientApp without multilevel_mod is refused before any message is sent.

``check_client_app`` looks at the ClientApp that the App's ``pyproject.toml``
names (the App folder is on ``sys.path``, as Flower's runtime puts it) and
follows its train handler's wrappers to ``multilevel_mod``. These tests build
such App folders, check the ways a mod can be attached (app mods, function
mods, ``client_fn``, wrappers) and that a missing one fails ``MLLSGD.start``
in one line before the grid is asked anything.
"""

import functools
import logging
import sys
import textwrap
import time
from pathlib import Path

import pytest
from flwr.app import ArrayRecord, Context, Message, MessageType
from flwr.clientapp import ClientApp
from flwr.serverapp.strategy import FedAvg

from flwr_multilevel import flower_compat
from flwr_multilevel.clients import multilevel_mod
from flwr_multilevel.engines.local_grid import LocalGrid
from flwr_multilevel.errors import WorkerDiscoveryError
from flwr_multilevel.strategies import MLLSGD
from flwr_multilevel.strategies.client_check import check_client_app, reaches


def _train(msg: Message, context: Context) -> Message:
    raise AssertionError("the check must not run the app's code")


def _handler(app: ClientApp) -> object:
    return flower_compat.message_handler(app, MessageType.TRAIN)


def _registered(mods: list, function_mods: list | None = None) -> ClientApp:
    app = ClientApp(mods=mods)
    app.train(mods=function_mods)(_train)
    return app


def _own_mod(msg: Message, context: Context, call_next):  # type: ignore[no-untyped-def]
    return call_next(msg, context)


def _wrapping_mod(msg: Message, context: Context, call_next):  # type: ignore[no-untyped-def]
    return multilevel_mod(msg, context, call_next)  # a user's wrapper, by name


class _ClassMod:
    def __call__(self, msg: Message, context: Context, call_next):  # type: ignore[no-untyped-def]
        return multilevel_mod(msg, context, call_next)


@pytest.mark.parametrize(
    ("app", "expected"),
    [
        (_registered([multilevel_mod]), True),
        (_registered([_own_mod, multilevel_mod]), True),
        (_registered([], [multilevel_mod]), True),  # a function mod also gets the discovery
        (_registered([_own_mod], [_own_mod, multilevel_mod]), True),
        (_registered([functools.partial(_wrapping_mod)]), True),
        (_registered([_ClassMod()]), True),
        (ClientApp(client_fn=lambda context: None, mods=[multilevel_mod]), True),  # type: ignore[arg-type, return-value]
        (_registered([]), False),
        (_registered([_own_mod], [_own_mod]), False),
        (ClientApp(client_fn=lambda context: None), False),  # type: ignore[arg-type, return-value]
    ],
)
def test_the_train_handler_reaches_the_mod_however_it_is_attached(
    app: ClientApp, expected: bool
) -> None:
    assert reaches(_handler(app)) is expected


def test_an_app_with_no_train_function_has_no_handler() -> None:
    assert _handler(ClientApp(mods=[multilevel_mod])) is None


SERVER = """
from flwr.serverapp import ServerApp
app = ServerApp()
"""
CLIENT = """
from flwr.app import Message
from flwr.clientapp import ClientApp
from flwr_multilevel.clients import multilevel_mod
app = ClientApp({mods})

@app.train()
def train(msg, context):
    return Message(msg.content, reply_to=msg)
"""


def _app_folder(tmp_path: Path, package: str, mods: str) -> Path:
    """Write a Flower App (pyproject.toml naming its ServerApp and ClientApp) under tmp_path."""
    folder = tmp_path / package
    (folder / package).mkdir(parents=True)
    (folder / package / "__init__.py").write_text("")
    (folder / package / "server_app.py").write_text(SERVER)
    (folder / package / "client_app.py").write_text(CLIENT.format(mods=mods))
    (folder / "pyproject.toml").write_text(
        textwrap.dedent(f"""
        [tool.flwr.app.components]
        serverapp = "{package}.server_app:app"
        clientapp = "{package}.client_app:app"
        """)
    )
    return folder


@pytest.fixture
def loaded_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Return a function that puts an App on sys.path and loads its ServerApp, as Flower does."""

    def load(package: str, mods: str) -> Path:
        folder = _app_folder(tmp_path, package, mods)
        monkeypatch.syspath_prepend(str(folder))
        __import__(f"{package}.server_app")
        return folder

    yield load
    for name in [n for n in sys.modules if n.startswith("app_check_")]:
        del sys.modules[name]


class InMemoryGrid(LocalGrid):
    """A LocalGrid named as Flower's simulation grid, counting what it is asked."""

    asked = 0

    def get_node_ids(self):  # type: ignore[no-untyped-def]
        self.asked += 1
        return super().get_node_ids()


def _no_mod_app() -> ClientApp:
    app = ClientApp()
    app.train()(_train)
    return app


def test_the_running_apps_client_app_is_found_through_sys_path(loaded_app) -> None:  # type: ignore[no-untyped-def]
    loaded_app("app_check_found", "mods=[multilevel_mod]")
    reference, app = flower_compat.running_client_app()  # type: ignore[misc]
    assert reference == "app_check_found.client_app:app"
    assert app is sys.modules["app_check_found.client_app"].app
    check_client_app(InMemoryGrid(_no_mod_app(), 4))  # the App's ClientApp, not the grid's


def test_a_simulated_app_without_the_mod_fails_start_at_once_in_one_line(  # type: ignore[no-untyped-def]
    loaded_app, caplog: pytest.LogCaptureFixture
) -> None:
    loaded_app("app_check_missing", "")
    grid = InMemoryGrid(_no_mod_app(), 4)
    began = time.perf_counter()
    with pytest.raises(WorkerDiscoveryError) as caught, caplog.at_level(logging.INFO):
        MLLSGD(FedAvg(), hubs=[2, 2], tau=4).start(grid, ArrayRecord(), num_rounds=1)
    assert time.perf_counter() - began < 5.0
    assert grid.asked == 0  # before the discovery
    assert str(caught.value) == (
        "the ClientApp app_check_missing.client_app:app does not use multilevel_mod, so its "
        "nodes cannot say which worker they are or time their steps: make it "
        "ClientApp(mods=[multilevel_mod]) (from flwr_multilevel.clients import multilevel_mod)"
    )
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [f"flwr-multilevel: error: {caught.value}"]


def test_a_client_app_that_cannot_load_here_is_left_to_the_discovery(loaded_app) -> None:  # type: ignore[no-untyped-def]
    folder = loaded_app("app_check_broken", "mods=[multilevel_mod]")
    (folder / "app_check_broken" / "client_app.py").write_text("import not_installed_here\n")
    sys.modules.pop("app_check_broken.client_app", None)
    assert flower_compat.running_client_app() is None
    check_client_app(InMemoryGrid(_no_mod_app(), 4))  # nothing to say: no error


def test_other_grids_are_not_checked(loaded_app) -> None:  # type: ignore[no-untyped-def]
    loaded_app("app_check_other", "")
    check_client_app(LocalGrid(_no_mod_app(), 4))  # a LocalGrid's app answers the discovery
