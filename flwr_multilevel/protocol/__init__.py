"""The message protocol between hubs and workers: record keys and the array codec.

:mod:`~flwr_multilevel.protocol.keys` owns every key of the messages and records,
:mod:`~flwr_multilevel.protocol.codec` the exact ``.npy`` encoding of their arrays, and
:mod:`~flwr_multilevel.protocol.arrays` stacks hub models into one matrix and back.
"""
