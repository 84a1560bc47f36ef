"""The message protocol between hubs and workers: record keys and the array codec."""
