"""The wire form of hub-to-hub gossip: the gRPC method, the payload and what a model must pass.

Models travel as Flower's own serialized ``ArrayRecord`` protos (never pickle),
behind a 16-byte header ``(hub id, round)`` so that a model is only ever mixed
into the round it was published for; a request is ``(round, requesting hub id)``.
"""

import struct

import numpy as np
from flwr.app import ArrayRecord

from flwr_multilevel.flower_compat import array_record_from_bytes, array_record_to_bytes

SERVICE = "flwr_multilevel.Peer"
METHOD = f"/{SERVICE}/Fetch"
HEADER = struct.Struct(">qq")  # (sender hub id, round)
REQUEST = struct.Struct(">qq")  # (round, requesting hub id)
WITHHELD = "withheld: "  # details of the answer for a round this hub sits out


def encode(hub_id: int, server_round: int, model: ArrayRecord) -> bytes:
    """Return the wire form of a published model: header + ArrayRecord proto."""
    return HEADER.pack(hub_id, server_round) + array_record_to_bytes(model)


def decode(payload: bytes) -> tuple[int, int, ArrayRecord]:
    """Return ``(sender, round, model)`` of a wire payload; raise ValueError if malformed."""
    if len(payload) < HEADER.size:
        raise ValueError(f"payload of {len(payload)} bytes is shorter than its header")
    sender, server_round = HEADER.unpack_from(payload)
    try:
        model = array_record_from_bytes(payload[HEADER.size :])
    except Exception as err:  # protobuf's DecodeError and Array's own checks
        raise ValueError(f"payload is not a serialized ArrayRecord ({err})") from err
    return sender, server_round, model


def refusal(own: ArrayRecord, received: ArrayRecord) -> str | None:
    """Return why ``received`` must not be mixed into ``own`` (layout, non-finite), or None.

    Examples
    --------
    >>> from flwr.app import Array
    >>> own = ArrayRecord({"w": Array(np.zeros(2, np.float32))})
    >>> refusal(own, ArrayRecord({"w": Array(np.full(2, np.nan, np.float32))}))
    "array 'w' has non-finite values"
    """
    if list(received.keys()) != list(own.keys()):
        return f"keys {list(received.keys())}, expected {list(own.keys())}"
    for key in own.keys():
        mine, theirs = own[key].numpy(), received[key].numpy()
        if theirs.shape != mine.shape or theirs.dtype != mine.dtype:
            return (
                f"array {key!r} is {theirs.dtype}{list(theirs.shape)}, "
                f"expected {mine.dtype}{list(mine.shape)}"
            )
        if np.issubdtype(theirs.dtype, np.inexact) and not np.all(np.isfinite(theirs)):
            return f"array {key!r} has non-finite values"
    return None


def check_payload(
    payload: bytes, sender: int, server_round: int, own: ArrayRecord, max_model_bytes: int
) -> tuple[ArrayRecord | None, str | None]:
    """Return ``(model, None)`` if ``payload`` may be mixed into ``own``, else ``(None, why)``.

    It may if it holds at most ``max_model_bytes`` of model, decodes, is hub
    ``sender``'s model of ``server_round``, and has ``own``'s layout and finite values.

    Examples
    --------
    >>> from flwr.app import Array
    >>> own = ArrayRecord({"w": Array(np.zeros(2, np.float32))})
    >>> check_payload(encode(1, 3, own), 1, 4, own, 2**20)
    (None, "it is hub 1's model of round 3")
    """
    why = None
    if len(payload) - HEADER.size > max_model_bytes:
        why = f"{len(payload) - HEADER.size} bytes > max_model_bytes {max_model_bytes}"
    else:
        try:
            got_sender, got_round, model = decode(payload)
        except ValueError as err:
            why = str(err)
        else:
            if (got_sender, got_round) != (sender, server_round):
                why = f"it is hub {got_sender}'s model of round {got_round}"
            else:
                why = refusal(own, model)
    return (None, why) if why is not None else (model, None)
