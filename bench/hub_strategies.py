"""Every strategy Flower exports, run at the hubs of the default network: what each does.

For each one (wrappers around FedAvg), 3 hubs x [1, 2, 3] workers on digits, tau=4, q=2,
20 rounds in-process; prints the test accuracy of u, the rounds a hub kept its model
(its strategy failed) and the replies left out.

    python bench/hub_strategies.py
"""

import sys
import tempfile

from flwr.app import ConfigRecord

sys.path.insert(0, ".")
from flwr_multilevel.client_app import app as client_app  # noqa: E402
from flwr_multilevel.engines.local_grid import LocalGrid  # noqa: E402
from flwr_multilevel.experiment.config import load_config, validate  # noqa: E402
from flwr_multilevel.experiment.prepare import (  # noqa: E402
    build_mllsgd,
    initial_model,
    prepare,
    train_config,
)
from flwr_multilevel.run.evaluate import Evaluator  # noqa: E402
from flwr_multilevel.strategies import RunAborted  # noqa: E402
from tests.test_hub_strategy import every_stock_strategy  # noqa: E402


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for strategy in every_stock_strategy():
            name = type(strategy).__name__
            cfg = validate(
                load_config(
                    None,
                    [
                        "simulation.backend=inprocess",
                        f"output_dir={tmp}/{name}",
                        "hubs.workers=[1,2,3]",
                        "rounds=20",
                    ],
                )
            )
            exp = prepare(cfg)
            exp.strategy = strategy
            failed = dropped = 0

            def on_round(report, _models):
                nonlocal failed, dropped
                failed += len(report.failed_hubs)
                dropped += len(report.dropped)

            try:
                mll = build_mllsgd(exp, on_round=on_round)
                mll.start(
                    LocalGrid(client_app, 6),
                    initial_model(exp),
                    20,
                    train_config=ConfigRecord(dict(train_config(exp))),  # type: ignore[arg-type]
                )
            except ValueError as err:
                rows.append((name, "refused", str(err).split(";")[0], "", ""))
                continue
            except RunAborted as err:
                rows.append((name, "stopped", str(err), str(failed), str(dropped)))
                continue
            accuracy = Evaluator(exp)([mll.models[d] for d in range(3)])["accuracy"]
            weighted = all(h.weighted for h in mll.hubs.values())
            rule = "weighted by v_i" if weighted else "unweighted rule"
            rows.append((name, f"{accuracy:.4f}", rule, str(failed), str(dropped)))
    print("| strategy at every hub | accuracy of u | note | hub-rounds kept | replies dropped |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
