"""Groups of messages per Ray actor call in Flower's simulation engine.

Flower's engine (``vce_api.worker``) makes one Ray actor call per message:
submitting it, pickling the ClientApp, the Message and the Context each way,
and waiting on it costs about 3 ms of CPU on top of the ClientApp's own work
(about 1 ms for logistic regression), and with only as many calls in flight
as actors, a round of small messages waits mostly on Ray.

Here each of the engine's worker threads (one per actor, a *lane*) takes a
group of queued messages and hands them to its actor in ONE call. The actor
runs the same ClientApp on every message with that node's Context, as
Flower's actor does, and streams the replies back in chunks (every
``YIELD_EVERY`` seconds), so a reply reaches the LinkState as soon as its
chunk is done, not when the whole group is. The ClientApp travels to each
actor once, not with every message. The LinkState, the contexts and the
error replies stay Flower's.

A group never holds messages hostage behind a slow one: when an actor sends
nothing for ``STALL`` seconds, the lane *cuts* the group: the actor finishes
the message it is running and starts no other, and the messages it has not
started go back to the queue for any free lane. So a worker that overruns
delays only its own reply, as with one call per message.
"""

import math
import threading
import time
import traceback
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from itertools import count
from logging import DEBUG, ERROR
from queue import Empty
from typing import Any

import ray
from flwr.app import Context, Error, Message
from flwr.common.logger import log

from flwr_multilevel import flower_compat
from flwr_multilevel.flower_compat import ErrorCode

YIELD_EVERY = 0.02  # seconds of work between two chunks of replies from an actor
STALL = 0.25  # seconds without a chunk after which a lane cuts its group
MAX_GROUP = 64  # messages per actor call, at most

# One message's outcome, as the actor sends it back: its index in the group, the
# reply (None if the ClientApp raised), the updated Context, the error text, seconds
Outcome = tuple[int, Message | None, Context, str, float]


def group_size(pending: int, lanes: int, limit: int = MAX_GROUP) -> int:
    """Return how many of ``pending`` queued messages one of ``lanes`` lanes takes.

    An even share, so that every actor gets work, capped at ``limit``.

    Examples
    --------
    >>> group_size(12, 2), group_size(1000, 2), group_size(1, 2), group_size(0, 2)
    (6, 64, 1, 1)
    """
    return max(1, min(limit, math.ceil(pending / max(1, lanes))))


class GroupActor:
    """A Ray actor that runs a Flower ClientApp on groups of messages.

    It takes the place of Flower's ``ClientAppActor`` in the engine's actor
    pool (same constructor). ``run_group`` runs a group and streams the
    outcomes; ``cut`` stops a group after the message it is running. Two
    calls may run at once (``cut`` while ``run_group`` works).
    """

    def __init__(self, on_actor_init_fn: Callable[[], None] | None = None) -> None:
        if on_actor_init_fn:
            on_actor_init_fn()
        self._lock = threading.Lock()
        self._cut: set[int] = set()  # groups told to start no more messages
        self._started: dict[int, int] = {}  # messages started so far, by running group
        self._finished: OrderedDict[int, int] = OrderedDict()  # recent groups that ran out
        self._done: dict[int, list[Outcome]] = {}  # outcomes not sent yet, by group
        self._apps: dict[str, Any] = {}  # the ClientApp this actor holds, by engine run

    # pylint: disable-next=too-many-arguments,too-many-positional-arguments
    def run_group(
        self,
        group_id: int,
        app_key: str,
        client_app_fn: Callable[[], Any] | None,
        messages: list[Message],
        contexts: list[Context],
        yield_every: float = YIELD_EVERY,
    ) -> Iterator[list[Outcome]]:
        """Run the group's messages in order; yield their outcomes in chunks.

        The ClientApp travels once per actor: ``client_app_fn`` is None when
        this actor already holds the app of ``app_key``.
        """
        if client_app_fn is not None:
            self._apps = {app_key: client_app_fn()}  # one engine run's app at a time
        app = self._apps[app_key]
        with self._lock:
            self._done[group_id], self._started[group_id] = [], 0
        last = time.perf_counter()
        try:
            for index, (message, context) in enumerate(zip(messages, contexts, strict=True)):
                with self._lock:
                    if group_id in self._cut:
                        break
                    self._started[group_id] = index + 1
                start = time.perf_counter()
                try:
                    reply, error = app(message=message, context=context), ""
                except Exception as err:  # pylint: disable=broad-except
                    reply, error = None, f"{type(err)}:<'{err}'>"
                    # the reason reaches the hub's one line per round; a traceback per
                    # failed message would flood the console (one per worker and round)
                    log(DEBUG, "ClientApp raised on node %s", message.metadata.dst_node_id)
                    log(DEBUG, traceback.format_exc())
                now = time.perf_counter()
                with self._lock:
                    self._done[group_id].append((index, reply, context, error, now - start))
                if now - last >= yield_every:
                    yield self._take(group_id)
                    last = time.perf_counter()
            if chunk := self._take(group_id):
                yield chunk
        finally:
            with self._lock:
                started = self._started.pop(group_id, 0)
                self._done.pop(group_id, None)
                if group_id in self._cut:
                    self._cut.discard(group_id)
                else:  # a cut may still come: it must learn that nothing is left
                    self._finished[group_id] = started
                    while len(self._finished) > 256:
                        self._finished.popitem(last=False)

    def _take(self, group_id: int) -> list[Outcome]:
        """Return (and forget) the group's outcomes not sent yet."""
        with self._lock:
            chunk, self._done[group_id] = self._done.get(group_id, []), []
        return chunk

    def cut(self, group_id: int) -> tuple[int, list[Outcome]]:
        """Start no more of the group's messages.

        Returns how many of them were started (the others never will be; a
        group not begun yet runs none) and the outcomes finished but not sent
        yet (they are not sent again).
        """
        with self._lock:
            if group_id in self._finished:
                return self._finished.pop(group_id), []
            self._cut.add(group_id)
            started = self._started.get(group_id, 0)
        return started, self._take(group_id) if group_id in self._done else []

    def terminate(self) -> None:
        """End this actor."""
        ray.actor.exit_actor()  # type: ignore[no-untyped-call]


RayGroupActor = ray.remote(max_concurrency=2)(GroupActor)  # type: ignore[call-overload]
_GROUP_IDS = count()


class Lanes:
    """One engine run's lanes: how many run a group, and which actors hold the ClientApp."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.busy = 0  # lanes running a group
        self.app_key = uuid.uuid4().hex  # names this run's ClientApp in the actors
        self.holders: set[int] = set()  # ids of the actor handles that hold it (the pool
        # keeps its actors alive, so an id stays theirs)


def grouped_worker(
    messages: Any,
    replies: Any,
    node_info_store: dict[int, Any],
    backend: Any,
    f_stop: threading.Event,
    metrics: Any,
    *,
    lanes: Lanes,
    settle: Callable[[], None] = lambda: None,
) -> None:
    """Run one of the engine's ``worker`` threads (a lane): groups of messages, one call each.

    Same positional arguments as Flower's ``vce_api.worker``; ``lanes`` is
    shared by the run's lanes, ``settle`` waits (briefly) for the node feeder
    to queue the rest of a round's messages.
    """
    actors = flower_compat.actor_count(backend)
    while not f_stop.is_set():
        try:
            first = messages.get(timeout=1.0)
        except Empty:
            continue
        settle()
        group = [first]
        with lanes.lock:  # share what is queued with the lanes not running a group
            want = group_size(messages.qsize() + 1, actors - lanes.busy)
            lanes.busy += 1
        try:
            while len(group) < want:
                try:
                    group.append(messages.get(block=False))
                except Empty:
                    break
            _run_group(group, messages, replies, node_info_store, backend, metrics, lanes)
        finally:
            with lanes.lock:
                lanes.busy -= 1


# pylint: disable-next=too-many-arguments,too-many-positional-arguments,too-many-locals
def _run_group(
    group: list[Message],
    messages: Any,
    replies: Any,
    node_info_store: dict[int, Any],
    backend: Any,
    metrics: Any,
    lanes: Lanes,
) -> None:
    """Run ``group`` on one actor; put every reply (or error reply) into ``replies``."""
    contexts = [flower_compat.node_context(node_info_store, m) for m in group]
    done: set[int] = set()
    group_id, actor = next(_GROUP_IDS), []

    def call(a: Any, app_fn: Any, msgs: Any, _cid: Any, ctxs: Any) -> Any:
        actor.append(a)
        with lanes.lock:
            known = id(a) in lanes.holders
            lanes.holders.add(id(a))
        return a.run_group.options(num_returns="streaming").remote(
            group_id, lanes.app_key, None if known else app_fn, msgs, ctxs
        )

    def deliver(chunk: list[Outcome]) -> None:
        for index, reply, context, error, seconds in chunk:
            done.add(index)
            flower_compat.add_clientapp_runtime(metrics, seconds)
            message = group[index]
            if reply is None:
                reply = Message(
                    Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=error),
                    reply_to=message,
                )
            else:
                flower_compat.keep_node_context(node_info_store, message, context)
            _put(replies, reply)

    stream = None
    try:
        stream = flower_compat.submit_to_actor(backend, call, group, contexts)
        cut = False
        while True:
            ready, _ = ray.wait([stream], timeout=STALL)
            if not ready and not cut:  # a slow message: the rest of the group goes elsewhere
                cut = True
                started, finished = ray.get(actor[0].cut.remote(group_id))
                deliver(finished)
                back = [i for i in range(started, len(group)) if i not in done]
                for i in back:
                    messages.put(group[i])
                done.update(back)
                log(DEBUG, "group %s: cut after %s, %s requeued", group_id, started, len(back))
                continue
            try:
                chunk = ray.get(next(stream))
            except StopIteration:
                break
            deliver(chunk)
    except Exception as err:  # pylint: disable=broad-except
        log(ERROR, "a group of %s messages failed: %s", len(group), err)
        for index, message in enumerate(group):
            if index not in done:
                error = Error(code=ErrorCode.UNKNOWN, reason=f"{type(err)}:<'{err}'>")
                _put(replies, Message(error, reply_to=message))
    finally:
        if stream is not None:
            flower_compat.release_actor(backend, stream)


def _put(replies: Any, reply: Message) -> None:
    """Give ``reply`` its id (as Flower's worker does) and queue it for the LinkState."""
    flower_compat.set_message_id(reply, str(uuid.uuid4()))
    replies.put(reply)
