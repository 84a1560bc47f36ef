"""One import identity: installed, ``flwr_multilevel`` is the only importable name.

The repository shows ``strategies/``, ``clients/`` and ``baselines/`` at its
top (links into the package); outside the repository, in the README's
install, they (and ``tests``) are not importable, and every class has one
identity on every path.
"""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

IDENTITY = """
import importlib
for name in ("strategies", "clients", "baselines", "tests"):
    try:
        importlib.import_module(name)
    except ImportError:
        pass
    else:
        raise SystemExit(f"{name} is importable outside the repository")
import flwr_multilevel.strategies as s
from flwr_multilevel.baselines.mll_sgd.mll_sgd import strategy as baseline
from flwr_multilevel.deploy import hub_app
from flwr_multilevel.engines import engine
from flwr_multilevel.experiment import prepare
from flwr_multilevel.strategies.mllsgd import MLLSGD
assert s.MLLSGD is MLLSGD is prepare.MLLSGD is baseline.MLLSGD
assert engine.build_mllsgd is prepare.build_mllsgd is hub_app.build_mllsgd
print(s.MLLSGD.__module__, s.__file__)
"""


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def test_only_flwr_multilevel_is_importable_outside_the_repository(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", IDENTITY],
        cwd=tmp_path,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    module, path = proc.stdout.split()
    assert module == "flwr_multilevel.strategies.mllsgd"
    assert Path(path).parent.parent.name == "flwr_multilevel"


def test_the_top_level_folders_are_the_packages_own():
    for name in ("strategies", "clients", "baselines"):
        link = ROOT / name
        assert link.is_symlink(), name
        assert link.resolve() == (ROOT / "flwr_multilevel" / name).resolve()
    assert (ROOT / "tests").is_dir() and not (ROOT / "tests").is_symlink()


@pytest.mark.deployment  # builds a wheel with pip (hatchling from the package index)
def test_the_wheel_holds_one_package_with_its_data(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"flwr_multilevel"}
    for needed in (
        "flwr_multilevel/strategies/mllsgd.py",
        "flwr_multilevel/clients/worker.py",
        "flwr_multilevel/baselines/local_sgd.yaml",
        "flwr_multilevel/default.yaml",
        "flwr_multilevel/deploy/app/pyproject.toml",
    ):
        assert needed in names, needed
