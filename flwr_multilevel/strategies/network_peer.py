"""Hub-to-hub gossip over the network: one hub per process, gRPC with mutual TLS.

Each hub runs a small gRPC server that hands out the models it published for
the last few rounds, and fetches the model of the current round from each of
its in-neighbours. Models travel as Flower's own serialized ``ArrayRecord``
protos (never pickle), behind a 16-byte header ``(hub id, round)`` so that a
model is only ever mixed into the round it was published for.

Security: with :class:`PeerTls` the server accepts only clients whose
certificate the federation CA signed and whose identity (``hub-<d>``, see
:func:`flwr_multilevel.deploy.certs.hub_identity`) is one of its out-neighbours; the
client checks that the server is the ``hub-<j>`` it wanted.
"""

import re
import struct
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from logging import INFO, WARNING
from pathlib import Path

import grpc
import numpy as np
from flwr.app import ArrayRecord
from flwr.common.logger import log

from flwr_multilevel import flower_compat
from flwr_multilevel.strategies.peer import Gossip, PeerLayer, in_neighbours, mix_one

SERVICE = "flwr_multilevel.Peer"
METHOD = f"/{SERVICE}/Fetch"
HEADER = struct.Struct(">qq")  # (sender hub id, round)
REQUEST = struct.Struct(">qq")  # (round, requesting hub id)
POLL_S = 0.05  # pause between two fetches of a model not published yet
KEEP_ROUNDS = 4
CLOSE_GRACE_S = 1.0  # seconds answers in flight may take to finish when the layer closes
WITHHELD = "withheld: "  # details of the answer for a round this hub sits out
_IDENTITY = re.compile(r"hub-(\d+)")


@dataclass(frozen=True)
class PeerTls:
    """One hub's TLS material for mutual TLS between peer layers (PEM bytes).

    Attributes
    ----------
    ca_cert : bytes
        The federation CA certificate.
    cert : bytes
        This hub's certificate (identity ``hub-<d>``, server and client usage).
    key : bytes
        This hub's private key.
    """

    ca_cert: bytes
    cert: bytes
    key: bytes

    @classmethod
    def from_files(cls, ca_cert: str | Path, cert: str | Path, key: str | Path) -> "PeerTls":
        """Read the three PEM files; return the :class:`PeerTls`."""
        return cls(Path(ca_cert).read_bytes(), Path(cert).read_bytes(), Path(key).read_bytes())


def identities(auth_context: Mapping[str, list[bytes]]) -> set[int]:
    """Return the hub ids a TLS peer's certificate names (CN and SAN ``hub-<d>``).

    Examples
    --------
    >>> sorted(identities({"x509_common_name": [b"hub-2"],
    ...                    "x509_subject_alternative_name": [b"hub-2", b"localhost"]}))
    [2]
    """
    names = [
        *auth_context.get("x509_common_name", []),
        *auth_context.get("x509_subject_alternative_name", []),
    ]
    hubs = set()
    for name in names:
        match = _IDENTITY.fullmatch(name.decode(errors="replace"))
        if match:
            hubs.add(int(match.group(1)))
    return hubs


def format_peers(peers: Mapping[int, str]) -> str:
    """Return peer addresses as one run-config string ``"0=host:port,1=host:port"``.

    Examples
    --------
    >>> format_peers({0: "127.0.0.1:9000", 2: "10.0.0.3:9000"})
    '0=127.0.0.1:9000,2=10.0.0.3:9000'
    """
    return ",".join(f"{d}={address}" for d, address in sorted(peers.items()))


def parse_peers(text: str) -> dict[int, str]:
    """Inverse of :func:`format_peers`; raise ValueError naming the bad entry.

    Examples
    --------
    >>> parse_peers("0=127.0.0.1:9000, 2=10.0.0.3:9000")
    {0: '127.0.0.1:9000', 2: '10.0.0.3:9000'}
    """
    peers = {}
    for entry in filter(None, (e.strip() for e in text.split(","))):
        hub, _, address = entry.partition("=")
        if not hub.strip().isdigit() or ":" not in address:
            raise ValueError(f"peers: expected entries like '0=host:port', got {entry!r}")
        peers[int(hub)] = address.strip()
    return peers


def encode(hub_id: int, server_round: int, model: ArrayRecord) -> bytes:
    """Return the wire form of a published model: header + ArrayRecord proto."""
    return HEADER.pack(hub_id, server_round) + flower_compat.array_record_to_bytes(model)


def decode(payload: bytes) -> tuple[int, int, ArrayRecord]:
    """Return ``(sender, round, model)`` of a wire payload; raise ValueError if malformed."""
    if len(payload) < HEADER.size:
        raise ValueError(f"payload of {len(payload)} bytes is shorter than its header")
    sender, server_round = HEADER.unpack_from(payload)
    try:
        model = flower_compat.array_record_from_bytes(payload[HEADER.size :])
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
        Seconds :meth:`collect` waits for the in-neighbours' models.
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
        self.timeout = float(timeout)
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
            hubs = identities(context.auth_context())
            if not hubs & self.readers:
                log(WARNING, "hub %s: refused peer %s (not a neighbour)", self.hub_id, hubs)
                context.abort(grpc.StatusCode.PERMISSION_DENIED, "not a neighbour of this hub")
            requester = min(hubs & self.readers)  # who the certificate says, not the request
        else:
            requester = claimed
        with self._lock:
            payload = self._published.get(server_round)
            withheld = self._withheld.get(server_round)
            if payload is not None or withheld is not None:
                self._fetched.setdefault(server_round, set()).add(requester)
                self._changed.notify_all()
        if withheld is not None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"{WITHHELD}{withheld}")
        if payload is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"round {server_round} not published")
        return payload  # type: ignore[return-value]  # abort() raises

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

        A neighbour that has not answered within ``timeout`` seconds, or whose
        model is refused (other round or sender, layout, non-finite, too
        large), is skipped: its weight goes to the own model.

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
        deadline = time.monotonic() + self.timeout
        futures = {
            j: self._pool.submit(self._fetch, j, server_round, own, deadline)
            for j in self.neighbours
        }
        received = {j: m for j, f in futures.items() if (m := f.result()) is not None}
        gossip = mix_one(self.mixing, hub_id, own, received)
        if gossip.skipped:
            log(
                WARNING,
                "hub %s, round %s: skipped in-neighbours %s",
                hub_id,
                server_round,
                gossip.skipped,
            )
        return gossip

    def _fetch(
        self, j: int, server_round: int, own: ArrayRecord, deadline: float
    ) -> ArrayRecord | None:
        """Return neighbour j's model of ``server_round``, or None (logged) if none usable."""
        call = self._channels[j].unary_unary(METHOD)
        request = REQUEST.pack(server_round, self.hub_id)
        last = "no answer"
        while (left := deadline - time.monotonic()) > 0:
            try:
                payload = call(request, timeout=left)
            except grpc.RpcError as err:
                code = err.code()  # type: ignore[attr-defined]
                last = f"{code.name}: {err.details()}"  # type: ignore[attr-defined]
                if code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE):
                    time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))
                    continue
                if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    break
                details = str(err.details())  # type: ignore[attr-defined]
                if code == grpc.StatusCode.FAILED_PRECONDITION and details.startswith(WITHHELD):
                    log(
                        WARNING,
                        "hub %s, round %s: hub %s sits this gossip out (%s); mixing without it",
                        self.hub_id,
                        server_round,
                        j,
                        details[len(WITHHELD) :],
                    )
                    return None
                log(
                    WARNING,
                    "hub %s, round %s: no usable answer from hub %s (%s)",
                    self.hub_id,
                    server_round,
                    j,
                    last,
                )
                return None
            with self._lock:
                self.wire_bytes_in += len(payload)
            return self._accept(j, server_round, own, payload)
        log(
            WARNING,
            "hub %s, round %s: no model from hub %s within %.1f s (%s)",
            self.hub_id,
            server_round,
            j,
            self.timeout,
            last,
        )
        return None

    def _accept(
        self, j: int, server_round: int, own: ArrayRecord, payload: bytes
    ) -> ArrayRecord | None:
        """Return the model in ``payload`` if it may be mixed in, else None (logged)."""
        why = None
        if len(payload) - HEADER.size > self.max_model_bytes:
            why = f"{len(payload) - HEADER.size} bytes > max_model_bytes {self.max_model_bytes}"
        else:
            try:
                sender, got_round, model = decode(payload)
            except ValueError as err:
                why = str(err)
            else:
                if (sender, got_round) != (j, server_round):
                    why = f"it is hub {sender}'s model of round {got_round}"
                else:
                    why = refusal(own, model)
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
            while last is not None and not self.readers <= self._fetched.get(last, set()):
                if not self._changed.wait(max(0.0, deadline - time.monotonic())):
                    break
            if last is not None and not self.readers <= self._fetched.get(last, set()):
                missing = sorted(self.readers - self._fetched.get(last, set()))
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
