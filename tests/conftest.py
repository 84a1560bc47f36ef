"""Shared helpers: small experiments on the embedded digits data, run in-process."""

import os
from collections.abc import Sequence

import pytest
from omegaconf import DictConfig

for _var, _value in {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "HF_HUB_OFFLINE": "1",
}.items():
    os.environ.setdefault(_var, _value)

from flwr_multilevel.experiment.config import load_config, validate  # noqa: E402


def make_config(tmp_path, overrides: Sequence[str] = ()) -> DictConfig:
    """A validated config writing into ``tmp_path`` (in-process backend)."""
    base = ["simulation.backend=inprocess", f"output_dir={tmp_path / 'run'}"]
    return validate(load_config(None, [*base, *overrides]))


@pytest.fixture
def config(tmp_path):
    return lambda *overrides: make_config(tmp_path, overrides)
