"""Hub-to-hub gossip over the network: one hub per process, gRPC with mutual TLS.

Each hub runs a small gRPC server that hands out the models it published for
the last few rounds, and fetches the model of the current round from each of
its in-neighbours. Models travel as Flower's own serialized ``ArrayRecord``
protos, tagged with their sender and round (:mod:`flwr_multilevel.strategies.peer_wire`).

Security: with :class:`PeerTls` the server accepts only clients whose
certificate the federation CA signed and whose identity (``hub-<d>``, see
:func:`flwr_multilevel.deploy.certs.hub_identity`) is one of its out-neighbours; the
client checks that the server is the ``hub-<j>`` it wanted.
"""

import struct
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from logging import INFO, WARNING

import grpc
import numpy as np
from flwr.app import ArrayRecord
from flwr.common.logger import log

from flwr_multilevel.strategies.peer import Gossip, PeerLayer, in_neighbours, mix_one
from flwr_multilevel.strategies.peer_config import PeerTls, peer_identity
from flwr_multilevel.strategies.peer_config import format_peers as format_peers  # re-exported
from flwr_multilevel.strategies.peer_config import parse_peers as parse_peers  # re-exported
from flwr_multilevel.strategies.peer_wait import (
    LEFT,
    NOT_ALIVE,
    NeighbourWait,
    WaitBounds,
    ask_until,
    not_published,
)
from flwr_multilevel.strategies.peer_wire import (
    HEADER,
    METHOD,
    REQUEST,
    SERVICE,
    WITHHELD,
    check_payload,
    encode,
)
from flwr_multilevel.strategies.peer_wire import decode as decode  # re-exported
from flwr_multilevel.strategies.peer_wire import refusal as refusal  # re-exported

POLL_S = 0.05  # pause between two fetches of a model not published yet
KEEP_ROUNDS = 4
TOLD_LEFT = -1  # the "round" under which the neighbours told that this hub left are kept
CLOSE_GRACE_S = 1.0  # seconds answers in flight may take to finish when the layer closes


class NetworkPeerLayer(PeerLayer):
    """The peer layer of ONE hub in its own process, over gRPC.

    Parameters
    ----------
    hub_id : int
        This hub, d.
    mixing : numpy.ndarray
        The ``D x D`` mixing matrix H, the same on every hub.
    listen_address : str
        ``host:port`` this hub serves its models on (port 0: a free one; see
        :attr:`port`).
    peers : Mapping[int, str]
        ``host:port`` of each in-neighbour j (``H[j, d] != 0``); more are fine.
    tls : PeerTls | None
        Mutual TLS material; None only together with ``insecure=True``.
    insecure : bool (default: False)
        Explicit opt-out of TLS (tests, trusted networks).
    timeout : float (default: 30.0)
        Seconds a neighbour reached before may be unreachable or stalled before
        :meth:`collect` skips it (:mod:`~flwr_multilevel.strategies.peer_wait`).
    peer_wait : float | None (default: None, 20 x ``timeout``)
        The most it waits for a neighbour alive but slower, or not reached yet.
    stall_after : float | None (default: None)
        Say this hub is stalled after this long without :meth:`beat` (None: never).
    max_model_bytes : int (default: 256 MiB)
        Larger received models are refused.
    keep_rounds : int (default: 4)
        Rounds of own models kept for slower neighbours.

    Raises
    ------
    ValueError
        If an in-neighbour has no address, or ``tls`` is None without ``insecure``.

    Examples
    --------
    >>> from flwr.app import Array
    >>> H = np.array([[1.0, 0.5], [0.0, 0.5]])  # hub 1 mixes in hub 0, not back
    >>> a = NetworkPeerLayer(0, H, "127.0.0.1:0", {}, insecure=True, timeout=1)
    >>> b = NetworkPeerLayer(1, H, "127.0.0.1:0", {0: f"127.0.0.1:{a.port}"},
    ...                      insecure=True, timeout=1)
    >>> a.publish(0, 1, ArrayRecord({"w": Array(np.zeros(1, np.float32))}))
    >>> gossip = b.exchange(1, 1, ArrayRecord({"w": Array(np.full(1, 2.0, np.float32))}))
    >>> gossip.model["w"].numpy().tolist(), gossip.skipped
    ([1.0], [])
    >>> a.close(); b.close()
    """

    def __init__(
        self,
        hub_id: int,
        mixing: np.ndarray,
        listen_address: str,
        peers: Mapping[int, str],
        *,
        tls: PeerTls | None = None,
        insecure: bool = False,
        timeout: float = 30.0,
        peer_wait: float | None = None,
        stall_after: float | None = None,
        max_model_bytes: int = 256 * 2**20,
        keep_rounds: int = KEEP_ROUNDS,
    ) -> None:
        self.hub_id = hub_id
        self.mixing = np.asarray(mixing, dtype=np.float64)
        size = len(self.mixing)
        if self.mixing.shape != (size, size) or not 0 <= hub_id < size:
            raise ValueError(
                f"mixing: expected a square D x D matrix with hub {hub_id} < D, "
                f"got shape {self.mixing.shape}"
            )
        if tls is None and not insecure:
            raise ValueError("tls: expected PeerTls, or insecure=True to opt out of TLS")
        self.tls = None if insecure else tls
        self._init_waiting(float(timeout), peer_wait, stall_after)
        self.max_model_bytes = int(max_model_bytes)
        self.keep_rounds = max(1, int(keep_rounds))
        self.neighbours = in_neighbours(self.mixing, hub_id)
        missing = [j for j in self.neighbours if j not in peers]
        if missing:
            raise ValueError(
                f"peers: expected an address for in-neighbours {missing} of hub {hub_id}"
            )
        # hubs allowed to fetch our model: our out-neighbours
        self.readers = {
            e for e in range(len(self.mixing)) if e != hub_id and self.mixing[hub_id, e]
        }
        self.wire_bytes_in = 0  # every payload received, refused ones included
        self._published: dict[int, bytes] = {}
        self._withheld: dict[int, str] = {}  # round -> why this hub sits it out
        self._models: dict[int, ArrayRecord] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._fetched: dict[int, set[int]] = {}  # round -> readers that fetched it
        self._server = grpc.server(
            ThreadPoolExecutor(max_workers=max(4, 2 * len(self.readers))),
            handlers=[
                grpc.method_handlers_generic_handler(
                    SERVICE, {"Fetch": grpc.unary_unary_rpc_method_handler(self._serve)}
                )
            ],
            options=[("grpc.max_send_message_length", -1), ("grpc.so_reuseport", 0)],
        )
        try:
            if self.tls is None:
                self.port = self._server.add_insecure_port(listen_address)
            else:
                credentials = grpc.ssl_server_credentials(
                    [(self.tls.key, self.tls.cert)],
                    root_certificates=self.tls.ca_cert,
                    require_client_auth=True,
                )
                self.port = self._server.add_secure_port(listen_address, credentials)
        except RuntimeError as err:
            raise ValueError(
                f"listen_address: expected a free host:port, could not bind {listen_address!r}"
            ) from err
        self._server.start()
        self._channels = {j: self._channel(j, peers[j]) for j in self.neighbours}
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(self.neighbours)))
        log(INFO, "hub %s: peer layer serves on port %s", hub_id, self.port)

    def _init_waiting(
        self, timeout: float, peer_wait: float | None, stall_after: float | None
    ) -> None:
        """Set the bounds of the waits for neighbours, and what this hub knows of them."""
        self.timeout = timeout
        wait = 20 * timeout if peer_wait is None else max(float(peer_wait), timeout)
        self.bounds = WaitBounds(timeout, wait)
        self.stall_after = stall_after
        self._beat = time.monotonic()
        self._collecting = False
        self._left: str | None = None  # why this hub left the run (it serves that to everyone)
        self._reached: set[int] = set()  # neighbours that answered in this run
        self._gone: dict[int, str] = {}  # neighbours skipped as gone, and why

    def _channel(self, j: int, address: str) -> grpc.Channel:
        options: list[tuple[str, int | str]] = [
            ("grpc.max_receive_message_length", self.max_model_bytes + HEADER.size + 2**16),
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ]
        if self.tls is None:
            return grpc.insecure_channel(address, options=options)
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.tls.ca_cert,
            private_key=self.tls.key,
            certificate_chain=self.tls.cert,
        )
        # the server must present the certificate of hub-<j>, whatever its address
        options.append(("grpc.ssl_target_name_override", f"hub-{j}"))
        return grpc.secure_channel(address, credentials, options=options)

    # ---- server side ----
    def _serve(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            server_round, claimed = REQUEST.unpack(request)
        except struct.error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "expected (round, hub id)")
        if self.tls is not None:
            peer = peer_identity(context.auth_context())  # one hub per certificate, or None
            if peer not in self.readers:
                log(WARNING, "hub %s: refused peer %s (not a neighbour)", self.hub_id, peer)
                context.abort(grpc.StatusCode.PERMISSION_DENIED, "not a neighbour of this hub")
            requester = int(peer)  # type: ignore[arg-type]  # who the certificate says
        else:
            requester = claimed
        with self._lock:
            payload = self._published.get(server_round)
            withheld = self._withheld.get(server_round)
            if payload is None and withheld is None and self._left is not None:
                withheld, server_round = f"{LEFT}{self._left}", TOLD_LEFT
            if payload is not None or withheld is not None:
                self._fetched.setdefault(server_round, set()).add(requester)
                self._changed.notify_all()
        if withheld is not None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"{WITHHELD}{withheld}")
        if payload is None:
            context.abort(grpc.StatusCode.NOT_FOUND, not_published(server_round, self._stalled()))
        return payload  # type: ignore[return-value]  # abort() raises

    def _stalled(self) -> float | None:
        """Return for how long this hub's round loop has made no progress, if too long."""
        idle = time.monotonic() - self._beat
        if self.stall_after is None or self._collecting or idle < self.stall_after:
            return None
        return idle

    def beat(self) -> None:
        """Note that this hub's round loop made progress (see ``stall_after``)."""
        self._beat = time.monotonic()

    def leave(self, reason: str, wait: float = 0.0) -> None:
        """Tell every neighbour asking for a round not published that this hub left the run.

        They skip it at once, in that round and later ones (its SuperLink is
        gone, say). Returns once every out-neighbour was told, or after
        ``wait`` seconds. ``reason`` is cut to one line of 200 characters.
        """
        deadline = time.monotonic() + wait
        with self._lock:
            self._left = " ".join(str(reason).split())[:200] or "no reason given"
            self._changed.notify_all()
            self._wait_for_readers(TOLD_LEFT, deadline)

    def _wait_for_readers(self, key: int, deadline: float) -> list[int]:
        """Wait (lock held) until every out-neighbour not gone fetched ``key``; return the rest."""
        readers = self.readers - set(self._gone)  # a gone neighbour will not ask
        while not readers <= self._fetched.get(key, set()):
            if not self._changed.wait(max(0.0, deadline - time.monotonic())):
                break
        return sorted(readers - self._fetched.get(key, set()))

    # ---- PeerLayer ----
    def _check_hub(self, hub_id: int) -> None:
        if hub_id != self.hub_id:
            raise ValueError(f"hub_id: this layer serves hub {self.hub_id}, got {hub_id}")

    def publish(self, hub_id: int, server_round: int, model: ArrayRecord) -> None:
        """Serve ``z_d`` of ``server_round`` to the out-neighbours (keeps the last few rounds)."""
        self._check_hub(hub_id)
        payload = encode(hub_id, server_round, model)
        with self._lock:
            self._published[server_round] = payload
            self._models[server_round] = model
            for old in sorted(self._published)[: -self.keep_rounds]:
                del self._published[old], self._models[old]
                self._fetched.pop(old, None)

    def withhold(self, hub_id: int, server_round: int, reason: str) -> None:
        """Tell the out-neighbours that this hub sits ``server_round`` out, and why.

        A neighbour asking for that round's model gets the reason at once
        (``FAILED_PRECONDITION``) instead of waiting for its timeout, and
        mixes without this hub. ``reason`` is cut to one line of 200 characters.
        """
        self._check_hub(hub_id)
        line = " ".join(str(reason).split())[:200] or "no reason given"
        with self._lock:
            self._withheld[server_round] = line
            for old in sorted(self._withheld)[: -self.keep_rounds]:
                del self._withheld[old]
                if old not in self._published:
                    self._fetched.pop(old, None)
            self._changed.notify_all()

    def collect(self, hub_id: int, server_round: int) -> Gossip:
        """Fetch the in-neighbours' models of ``server_round`` and return ``y_d``.

        A neighbour that is alive but slower is waited for up to ``peer_wait``
        seconds; one that is unreachable or stalled for ``timeout`` seconds,
        withheld or refused (other round or sender, layout, non-finite, too
        large) is skipped, with its reason logged: its weight goes to the own
        model (:mod:`~flwr_multilevel.strategies.peer_wait`).

        Raises
        ------
        RuntimeError
            If this hub has not published its own model of ``server_round``.
        """
        self._check_hub(hub_id)
        with self._lock:
            own = self._models.get(server_round)
        if own is None:
            raise RuntimeError(f"gossip round {server_round}: hub {hub_id} has not published")
        start = time.monotonic()
        self._collecting = True  # waiting for neighbours is progress too
        try:
            futures = {
                j: self._pool.submit(self._fetch, j, server_round, own, start)
                for j in self.neighbours
            }
            received = {j: m for j, f in futures.items() if (m := f.result()) is not None}
        finally:
            self._collecting = False
            self.beat()
        return mix_one(self.mixing, hub_id, own, received)  # each skip was logged with its reason

    def _fetch(
        self, j: int, server_round: int, own: ArrayRecord, start: float
    ) -> ArrayRecord | None:
        """Return neighbour j's model of ``server_round``, or None (the skip logged)."""
        wait = NeighbourWait(self.bounds, start, j in self._reached, self._gone.get(j))
        request = REQUEST.pack(server_round, self.hub_id)
        payload, end, why = ask_until(self._channels[j].unary_unary(METHOD), request, wait, POLL_S)
        if wait.reached or end in ("model", "withheld"):
            self._reached.add(j)
        if end in ("left", *NOT_ALIVE):  # gone: later gossips do not wait for it again
            self._gone[j] = f"{end} since round {server_round}"
        elif end != "refused":
            self._gone.pop(j, None)
        if payload is None:
            log(WARNING, "hub %s, round %s: skipped hub %s: %s", self.hub_id, server_round, j, why)
            return None
        with self._lock:
            self.wire_bytes_in += len(payload)
        return self._accept(j, server_round, own, payload)

    def _accept(
        self, j: int, server_round: int, own: ArrayRecord, payload: bytes
    ) -> ArrayRecord | None:
        """Return the model in ``payload`` if it may be mixed in, else None (logged)."""
        model, why = check_payload(payload, j, server_round, own, self.max_model_bytes)
        if why is not None:
            log(
                WARNING,
                "hub %s, round %s: refused the model of hub %s: %s",
                self.hub_id,
                server_round,
                j,
                why,
            )
            return None
        return model

    def close(self, linger: float | None = None) -> None:
        """Stop the server and close the channels.

        Before stopping, keep serving until every out-neighbour fetched the
        last round published (a slower neighbour still gets it), for at most
        ``linger`` seconds (default: ``timeout``; 0 stops at once). Answers
        still in flight then get up to ``CLOSE_GRACE_S`` seconds to finish.
        """
        linger = self.timeout if linger is None else linger
        deadline = time.monotonic() + linger
        with self._lock:
            last = max([*self._published, *self._withheld], default=None)
            missing = [] if last is None else self._wait_for_readers(last, deadline)
            if missing:
                log(
                    WARNING,
                    "hub %s: closing; hubs %s never fetched round %s",
                    self.hub_id,
                    missing,
                    last,
                )
        # A reader is counted when its fetch is served, before the payload is sent: a grace
        # period lets that last answer (and any other in flight) finish instead of cutting it
        grace = None if linger <= 0 else min(CLOSE_GRACE_S, linger)
        self._server.stop(grace=grace).wait()
        for channel in self._channels.values():
            channel.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
