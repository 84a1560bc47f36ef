"""A round's deadline on its messages, and one reply per message when it has passed.

Every message of a round carries the round's timeout as its ``ttl``: the
SuperLink (and the simulation engine, see :mod:`flwr_multilevel.engines.dispatch`)
then drops work that can no longer make the round instead of running it late.
After ``send_and_receive``, every message without a reply from its worker
gets a one-line error reply in its place, so each timed-out worker is
counted and explained like any other failed worker.
"""

import math
from collections.abc import Iterable, Sequence

from flwr.app import Error, Message
from flwr.common import now

from flwr_multilevel.flower_compat import ErrorCode

from .replies import short

TIMED_OUT = ErrorCode.MESSAGE_UNAVAILABLE  # the code of a "timed out" stand-in reply


def set_deadline(messages: Iterable[Message], timeout: float | None) -> list[Message]:
    """Return ``messages``, each now expiring ``timeout`` seconds from now (its ``ttl``).

    A ``timeout`` of None, 0 or infinity leaves the messages' own ttl.

    Examples
    --------
    >>> from flwr.app import RecordDict
    >>> from flwr_multilevel.client_app import app
    >>> from flwr_multilevel.engines.local_grid import LocalGrid
    >>> sent = LocalGrid(app, 1).create_message(RecordDict(), "train", 1000, "")
    >>> [msg] = set_deadline([sent], 2.5)
    >>> msg.metadata.ttl
    2.5
    """
    messages = list(messages)
    if timeout is None or not math.isfinite(timeout) or timeout <= 0:
        return messages
    created = now().timestamp()
    for message in messages:
        message.metadata.created_at = created
        message.metadata.ttl = float(timeout)
    return messages


def timed_out_reason(timeout: float | None) -> str:
    """Return the one-line reason of a worker that missed the deadline.

    Examples
    --------
    >>> timed_out_reason(2.0)
    'timed out: no reply within 2 s'
    """
    return "timed out" if timeout is None else f"timed out: no reply within {timeout:g} s"


def one_reply_each(
    sent: Sequence[Message], replies: Iterable[Message], timeout: float | None
) -> list[Message]:
    """Return ``replies`` with a stand-in error reply for every sent message left unanswered.

    A reply the grid made itself for a sent message (an expired message, an
    unavailable node: its sender is not the worker) is replaced by an error
    reply from that worker; a sent message without any reply gets one that
    says it timed out. Replies to anything else pass through unchanged.

    Examples
    --------
    >>> from flwr.app import RecordDict
    >>> from flwr_multilevel.client_app import app
    >>> from flwr_multilevel.engines.local_grid import LocalGrid
    >>> msg = LocalGrid(app, 1).create_message(RecordDict(), "train", 1000, "")
    >>> [stand_in] = one_reply_each([msg], [], timeout=2.0)
    >>> stand_in.metadata.src_node_id, stand_in.error.reason
    (1000, 'timed out: no reply within 2 s')
    """
    by_id = {m.metadata.message_id: m for m in sent if m.metadata.message_id}
    answered: set[int] = set()
    out: list[Message] = []
    for reply in replies:
        asked = by_id.get(reply.metadata.reply_to_message_id)
        if asked is not None and reply.metadata.src_node_id != asked.metadata.dst_node_id:
            if reply.has_error() and reply.error.code != ErrorCode.MESSAGE_UNAVAILABLE:
                why = short(reply.error.reason)  # e.g. the node is offline
                out.append(Message(Error(reply.error.code, why), reply_to=asked))
                answered.add(asked.metadata.dst_node_id)
            continue  # the grid's "expired" stand-in: replaced below
        answered.add(reply.metadata.src_node_id)
        out.append(reply)
    for message in sent:
        if message.metadata.dst_node_id not in answered:
            out.append(Message(Error(TIMED_OUT, timed_out_reason(timeout)), reply_to=message))
    return out
