"""Flower ClientApp logic for MLL-SGD workers."""

from .worker import WorkerTask, config_number, local_sgd, make_worker_train, step_schedule

__all__ = ["WorkerTask", "config_number", "local_sgd", "make_worker_train", "step_schedule"]
