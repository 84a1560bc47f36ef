"""The ``flwr-multilevel`` command line, with its console and comparison reports."""

from flwr_multilevel.cli.main import main

__all__ = ["main"]
