"""pytorchexample: a Flower / PyTorch app (the shape of Flower's quickstart-pytorch)."""
