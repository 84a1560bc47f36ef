"""The worker's ClientApp stays lean: Flower starts it once per message in a deployment."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import flwr_multilevel.experiment.local_data as local_data
from flwr_multilevel.experiment.local_data import CACHE_ENV, Split, cache_dir, worker_part

ROOT = Path(__file__).parent.parent
NOT_FOR_WORKERS = ("networkx", "omegaconf", "sklearn", "matplotlib", "flwr_datasets", "datasets")


def test_the_client_app_imports_only_what_a_worker_needs():
    code = (
        "import json, sys\n"
        "import flwr_multilevel.client_app\n"
        f"print(json.dumps(sorted(m for m in {list(NOT_FOR_WORKERS)!r} if m in sys.modules)))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_the_package_still_offers_the_network_model_on_first_use():
    import flwr_multilevel

    assert flwr_multilevel.spectrum.__module__ == "flwr_multilevel.model.mixing"
    assert "hub_graph" in dir(flwr_multilevel)
    with pytest.raises(AttributeError):
        flwr_multilevel.no_such_name  # noqa: B018


def test_a_worker_partition_is_cached_on_disk_and_read_back_alike(tmp_path, monkeypatch):
    split = Split("digits", "data", "iid", 4, 7)
    monkeypatch.delenv(CACHE_ENV, raising=False)
    plain = worker_part(split, 2)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    path = cache_dir(split, 2)
    assert path is not None and not path.exists()
    first = worker_part(split, 2)
    assert sorted(p.name for p in path.iterdir()) == ["meta.json", "x.npy", "y.npy"]
    assert [p.name for p in path.parent.iterdir()] == ["worker-2"]  # no temporary left

    def no_load(*args, **kwargs):
        raise AssertionError("the cached slice must not load the data set")

    monkeypatch.setattr(local_data, "load_dataset", no_load)
    cached = worker_part(split, 2)
    for part in (first, cached):
        np.testing.assert_array_equal(part.x, plain.x)
        np.testing.assert_array_equal(part.y, plain.y)
        assert part.x.dtype == plain.x.dtype and part.y.dtype == plain.y.dtype
        assert (part.input_shape, part.num_classes) == (plain.input_shape, plain.num_classes)
    # another split (seed) is another folder; a damaged one is computed and written again
    assert cache_dir(Split("digits", "data", "iid", 4, 8), 2) != path
    (path / "x.npy").write_bytes(b"not an npy")
    monkeypatch.undo()
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    np.testing.assert_array_equal(worker_part(split, 2).x, plain.x)
    np.testing.assert_array_equal(np.load(path / "x.npy"), plain.x)
