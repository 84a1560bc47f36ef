"""How long a hub waits for a neighbour's model: a slow neighbour is waited for, a gone one skipped.

Every answer a hub gets when it asks neighbour j for its model of a round is one
of these (:func:`answer_of` for the ``NOT_FOUND`` details, the peer layer for
the gRPC codes):

* ``model``: the model; mixed in (if it passes the checks);
* ``withheld``: j sits this round out (no valid reply from its workers), or left
  the run (its SuperLink is gone): skipped at once, with j's reason;
* ``alive``: j is connected and its round loop makes progress, but has not
  published this round yet (it is slower: machine load, a round that waits out
  a dead worker's heartbeat): waited for, up to ``peer_wait`` seconds;
* ``stalled``: j answers, but its round loop has made no progress for a while
  (its ServerApp cannot reach its SuperLink), and ``unreachable``: no connection,
  or no answer within a call's deadline: both mean *not alive*. A neighbour
  reached before in this run is skipped once it has not been alive for
  ``gossip_timeout`` seconds in a row; one never reached yet may still be
  starting (hubs start independently) and is waited for up to ``peer_wait``;
  one skipped as gone in an earlier round gets ``GONE_GRACE_S`` seconds to be
  back (so a dead neighbour does not cost every gossip a timeout);
* ``refused``: anything else (a certificate refused, a malformed answer):
  skipped at once.

So only a neighbour that is unreachable, withheld, refused or past ``peer_wait``
is ever skipped, and the reason says which (:class:`NeighbourWait`).
"""

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from flwr_multilevel.strategies.peer_wire import WITHHELD

ALIVE, STALLED, UNREACHABLE = "alive", "stalled", "unreachable"
NOT_ALIVE = (STALLED, UNREACHABLE)
LEFT = "left the run: "  # a withheld reason that holds for every later round too
GONE_GRACE_S = 2.0  # a neighbour gone earlier gets this long (a reconnect's back-off) to be back
_STALLED = re.compile(r"stalled (\d+(?:\.\d+)?) s")


def not_published(server_round: int, stalled_s: float | None) -> str:
    """Return the ``NOT_FOUND`` details of a round not published yet.

    ``stalled_s``: seconds the serving hub's round loop has made no progress
    (None: it makes progress).

    Examples
    --------
    >>> not_published(3, None), not_published(3, 42.0)
    ('round 3 not published; alive', 'round 3 not published; stalled 42 s')
    """
    state = ALIVE if stalled_s is None else f"{STALLED} {stalled_s:.0f} s"
    return f"round {server_round} not published; {state}"


def answer_of(details: str) -> str:
    """Return ``alive`` or ``stalled`` for the details of a ``NOT_FOUND`` answer.

    A peer that says nothing of its progress (an older version) answers, so it is alive.

    Examples
    --------
    >>> answer_of(not_published(3, None)), answer_of(not_published(3, 42.0)), answer_of("x")
    ('alive', 'stalled', 'alive')
    """
    return STALLED if _STALLED.search(details) else ALIVE


@dataclass(frozen=True)
class WaitBounds:
    """The two bounds of a wait for a neighbour (seconds).

    Attributes
    ----------
    gossip_timeout : float
        How long a neighbour reached before may be not alive before it is skipped.
    peer_wait : float
        The most a hub waits for any neighbour's model in one gossip.
    """

    gossip_timeout: float = 30.0
    peer_wait: float = 600.0


@dataclass
class NeighbourWait:
    """The wait for one neighbour's model of one round: ask again, or skip and why.

    Parameters
    ----------
    bounds : WaitBounds
        The bounds.
    start : float
        When the wait began (``time.monotonic()``).
    reached : bool
        Whether the neighbour answered before in this run.
    gone : str | None
        Why it was skipped as gone in an earlier round (None: it was not).

    Examples
    --------
    >>> wait = NeighbourWait(WaitBounds(10, 100), start=0.0, reached=True)
    >>> wait.after(ALIVE, "round 2 not published; alive", now=50.0) is None  # slow: waits
    True
    >>> wait.after(UNREACHABLE, "UNAVAILABLE: connection refused", now=55.0) is None
    True
    >>> wait.after(UNREACHABLE, "UNAVAILABLE: connection refused", now=65.0)
    'unreachable for 10 s (deploy.gossip_timeout): UNAVAILABLE: connection refused'
    >>> NeighbourWait(WaitBounds(10, 100), 0.0, True).after(ALIVE, "alive", now=100.0)
    'alive but no model within 100 s (deploy.peer_wait)'
    """

    bounds: WaitBounds
    start: float
    reached: bool = False
    gone: str | None = None
    not_alive_since: float | None = None

    def call_timeout(self, now: float) -> float:
        """Return the deadline of the next call, in seconds from ``now`` (at least 0.05)."""
        end = self.start + self.bounds.peer_wait
        if self.gone is not None:
            end = min(end, (self.not_alive_since or now) + GONE_GRACE_S)
        if self.reached and self.not_alive_since is not None:
            end = min(end, self.not_alive_since + self.bounds.gossip_timeout)
        return max(0.05, min(end - now, self.bounds.gossip_timeout))

    def after(
        self, answer: str, details: str, now: float, asked: float | None = None
    ) -> str | None:
        """Return None to ask again, or why the neighbour is skipped.

        Parameters
        ----------
        answer : str
            ``alive``, ``stalled`` or ``unreachable``.
        details : str
            What the answer said (it ends the reason).
        now : float
            When the answer came.
        asked : float | None (default: None)
            When the call was made: a call without any answer counts as not
            alive from then on.
        """
        waited = now - self.start
        if answer == ALIVE:
            self.reached, self.gone, self.not_alive_since = True, None, None
            if waited >= self.bounds.peer_wait:
                return f"alive but no model within {self.bounds.peer_wait:g} s (deploy.peer_wait)"
            return None
        since = now if asked is None else asked
        if self.not_alive_since is None or since < self.not_alive_since:
            self.not_alive_since = since
        bound = self.bounds.gossip_timeout
        if self.gone is not None and now - self.not_alive_since >= min(bound, GONE_GRACE_S):
            return f"still {answer} ({self.gone})"
        if self.reached and now - self.not_alive_since >= bound:
            return f"{answer} for {bound:g} s (deploy.gossip_timeout): {details}"
        if waited >= self.bounds.peer_wait:
            what = answer if self.reached else f"never reached, {answer}"
            return f"{what} after {self.bounds.peer_wait:g} s (deploy.peer_wait): {details}"
        return None


def ask_until(
    call: Callable[..., bytes], request: bytes, wait: NeighbourWait, poll_s: float
) -> tuple[bytes | None, str, str | None]:
    """Ask a neighbour for its model until it comes or ``wait`` says to skip it.

    Parameters
    ----------
    call : Callable
        The gRPC method (``channel.unary_unary(METHOD)``).
    request : bytes
        The request (round, asking hub).
    wait : NeighbourWait
        The wait; it also keeps whether the neighbour was reached.
    poll_s : float
        Pause between two questions.

    Returns
    -------
    tuple[bytes | None, str, str | None]
        The payload (None: skipped), how the neighbour ended (``model``,
        ``withheld``, ``left``, ``refused``, ``alive``, ``stalled``,
        ``unreachable``) and why it was skipped (None: it was not).
    """
    while True:
        asked = time.monotonic()
        try:
            return call(request, timeout=wait.call_timeout(asked)), "model", None
        except grpc.RpcError as err:
            code, details = err.code(), str(err.details())  # type: ignore[attr-defined]
        if code == grpc.StatusCode.FAILED_PRECONDITION and details.startswith(WITHHELD):
            said = details[len(WITHHELD) :]
            end = "left" if said.startswith(LEFT) else "withheld"
            return None, end, f"it sits this gossip out ({said})"
        if code == grpc.StatusCode.NOT_FOUND:
            answer = answer_of(details)
        elif code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            answer = UNREACHABLE
        else:
            return None, "refused", f"no usable answer ({code.name}: {details})"
        why = wait.after(answer, f"{code.name}: {details}", time.monotonic(), asked)
        if why is not None:
            return None, answer, why
        time.sleep(poll_s)
