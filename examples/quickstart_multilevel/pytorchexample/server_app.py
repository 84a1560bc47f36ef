"""pytorchexample: A Flower / PyTorch app."""

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr_multilevel.strategies import MLLSGD

from pytorchexample.task import Net, load_data
from pytorchexample.task import test as test_fn

# Create ServerApp
app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Main entry point for the ServerApp."""
    fraction_evaluate: float = context.run_config["fraction-evaluate"]
    num_rounds: int = context.run_config["num-server-rounds"]
    lr: float = context.run_config["lr"]

    global_model = Net()
    arrays = ArrayRecord(global_model.state_dict())

    strategy = MLLSGD.from_run_config(FedAvg(fraction_evaluate=fraction_evaluate), context.run_config)

    result = strategy.start(
        grid=grid,
        initial_arrays=arrays,
        train_config=ConfigRecord({"lr": lr}),
        num_rounds=num_rounds,
        evaluate_fn=global_evaluate,
    )

    print("\nSaving final model to disk...")
    state_dict = result.arrays.to_torch_state_dict()
    torch.save(state_dict, context.run_config["model-path"])


def global_evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
    """Evaluate the model on a central test set."""
    model = Net()
    model.load_state_dict(arrays.to_torch_state_dict())
    _, testloader = load_data(0, 1, 128)
    test_loss, test_acc = test_fn(model, testloader, torch.device("cpu"))
    return MetricRecord({"accuracy": test_acc, "loss": test_loss})
