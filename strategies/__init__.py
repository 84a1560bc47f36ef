"""Flower strategies that run at an MLL-SGD hub."""

from .hub import HubStrategy, SubGrid, WorkerSpec, check_reply

__all__ = ["HubStrategy", "SubGrid", "WorkerSpec", "check_reply"]
