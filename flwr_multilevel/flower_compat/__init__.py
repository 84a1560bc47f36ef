"""Flower's internals behind one door: every touch of a private Flower name is here.

What counts as public (everything else is private and goes through here):
the names in ``__all__`` of ``flwr.app``, ``flwr.clientapp``,
``flwr.clientapp.mod``, ``flwr.serverapp``, ``flwr.serverapp.strategy``,
``flwr.simulation`` and ``flwr.common``, plus ``flwr.common.logger``
(Flower's documented logging entry point, with its own ``__all__``), used
through their public attributes and methods. So ``flwr.common.constant``,
``flwr.common.config``, ``flwr.common.serde``, ``flwr.proto``,
``flwr.clientapp.typing``, ``flwr.serverapp.strategy.strategy_utils``,
``flwr.server``, ``flwr.superlink``, ``flwr.supercore``, the submodules of
``flwr.simulation``, underscored attributes (``Metadata._message_id``,
``ConfigRecord._data``), the ``__dict__`` of Flower's objects, and every
swap into Flower's engine are private. ``tests/test_flower_compat.py`` fails
on such a touch anywhere else in ``flwr_multilevel``.

Version guard: :data:`TESTED` is the Flower range every touch was checked
against; outside it, the first use logs one warning through Flower's logger
(:func:`check_version`). Each touch checks what it relies on when first
used: where running without it would change results or behaviour it raises
:class:`~flwr_multilevel.errors.FlowerCompatError`; where it only makes a run
faster, one warning names the missing name and the public path runs.
"""

from flwr_multilevel.errors import FlowerCompatError
from flwr_multilevel.flower_compat.apps import message_handler, running_client_app
from flwr_multilevel.flower_compat.engine import (
    actor_count,
    add_clientapp_runtime,
    engine_actor,
    engine_feeder,
    engine_worker,
    grid_pull_interval,
    is_simulation_grid,
    keep_node_context,
    next_message_ins,
    node_context,
    quiet_engine_errors,
    release_actor,
    set_grid_pull_interval,
    submit_to_actor,
    tap_stored_messages,
    undelivered_messages_ins,
)
from flwr_multilevel.flower_compat.guard import TESTED, check_version, installed_flower
from flwr_multilevel.flower_compat.records import (
    ClientAppCallable,
    ErrorCode,
    Run,
    SType,
    act_as_superlink,
    array_record_from_bytes,
    array_record_to_bytes,
    clone_array,
    config_with_entries,
    is_flower_metric_aggregation,
    new_array,
    set_message_id,
)
from flwr_multilevel.flower_compat.run_config import (
    flatten_dict,
    fuse_dicts,
    parse_config_args,
    unflatten_dict,
)
from flwr_multilevel.flower_compat.superlink import SuperLinkServing, superlink_serving

__all__ = [
    "TESTED",
    "ClientAppCallable",
    "ErrorCode",
    "FlowerCompatError",
    "Run",
    "SType",
    "SuperLinkServing",
    "act_as_superlink",
    "actor_count",
    "add_clientapp_runtime",
    "array_record_from_bytes",
    "array_record_to_bytes",
    "check_version",
    "clone_array",
    "config_with_entries",
    "engine_actor",
    "engine_feeder",
    "engine_worker",
    "flatten_dict",
    "fuse_dicts",
    "installed_flower",
    "is_flower_metric_aggregation",
    "is_simulation_grid",
    "keep_node_context",
    "message_handler",
    "new_array",
    "next_message_ins",
    "node_context",
    "quiet_engine_errors",
    "parse_config_args",
    "release_actor",
    "running_client_app",
    "grid_pull_interval",
    "set_grid_pull_interval",
    "set_message_id",
    "submit_to_actor",
    "superlink_serving",
    "tap_stored_messages",
    "undelivered_messages_ins",
    "unflatten_dict",
]
