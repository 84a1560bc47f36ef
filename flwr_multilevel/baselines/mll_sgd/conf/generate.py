"""Write conf/<figure>/<run>.toml from the repository's baselines/paper/*.yaml.

Run from the repository root: ``python baselines/mll_sgd/conf/generate.py``.
``tests/test_flower_baseline.py`` fails when the two disagree.
"""

from pathlib import Path

import yaml

from flwr_multilevel.baselines.mll_sgd.mll_sgd.utils import (
    config_name,
    num_workers,
    paper_run_config,
    to_toml,
)

ROOT = Path(__file__).resolve().parents[2]  # baselines/

if __name__ == "__main__":
    for paper in sorted((ROOT / "paper").glob("*.yaml")):
        spec = yaml.safe_load(paper.read_text())
        folder = ROOT / "mll_sgd" / "conf" / paper.stem
        folder.mkdir(parents=True, exist_ok=True)
        for label, run in spec["runs"].items():
            cfg = paper_run_config(spec["common"], run)
            name = config_name(label)
            cfg["output_dir"] = f"outputs/{paper.stem}/{name}"
            workers = num_workers(cfg)
            header = (
                f"{spec['comparison']}: {label}\n"
                f"(generated from baselines/paper/{paper.stem}.yaml)\n"
                f"flwr run . local --stream --run-config conf/{paper.stem}/{name}.toml \\\n"
                f'    --federation-config "num-supernodes={workers}"'
            )
            (folder / f"{name}.toml").write_text(to_toml(cfg, header))
