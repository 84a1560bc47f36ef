"""The networked peer layer: three hubs on loopback, each with its own gRPC server."""

import logging
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from flwr.app import Array, ArrayRecord

from flwr_multilevel.deploy.certs import KeyPair, make_certificate, make_federation
from flwr_multilevel.deploy.federation import free_port
from flwr_multilevel.strategies.network_peer import NetworkPeerLayer
from flwr_multilevel.strategies.peer import InProcessPeerLayer
from flwr_multilevel.strategies.peer_config import PeerTls
from flwr_multilevel.strategies.peer_wait import WaitBounds
from flwr_multilevel.strategies.peer_wire import METHOD, SERVICE, encode

# a path 0 - 1 - 2, column-stochastic but not symmetric, so direction matters:
# hub d mixes sum_j H[j, d] z_j
H = np.array([[0.6, 0.3, 0.0], [0.4, 0.5, 0.2], [0.0, 0.2, 0.8]])
TIMEOUT = 1.0


def model(rng: np.random.Generator, scale: float = 1.0) -> ArrayRecord:
    return ArrayRecord(
        {
            "w": Array((scale * rng.normal(size=(4, 3))).astype(np.float32)),
            "b": Array(rng.normal(size=3).astype(np.float64)),
        }
    )


def values(record: ArrayRecord) -> np.ndarray:
    return np.concatenate([record[k].numpy().ravel().astype(np.float64) for k in record.keys()])


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    return make_federation(tmp_path_factory.mktemp("certs"), 3, 1)


def tls_of(files, d: int) -> PeerTls:
    return PeerTls.from_files(files.ca_cert, *files.peer[d])


class Hubs:
    """Three layers on free loopback ports; a hub can be stopped and restarted."""

    def __init__(self, tls=None, timeout: float = TIMEOUT, **kwargs):
        self.tls, self.timeout, self.kwargs = tls, timeout, kwargs
        self.ports = [free_port() for _ in range(3)]
        self.layers: list[NetworkPeerLayer | None] = [None] * 3
        for d in range(3):
            self.start(d)

    def start(self, d: int) -> NetworkPeerLayer:
        peers = {j: f"127.0.0.1:{p}" for j, p in enumerate(self.ports) if j != d}
        security = {"tls": self.tls[d]} if self.tls else {"insecure": True}
        layer = NetworkPeerLayer(
            d,
            H,
            f"127.0.0.1:{self.ports[d]}",
            peers,
            timeout=self.timeout,
            **security,
            **self.kwargs,
        )
        self.layers[d] = layer
        return layer

    def stop(self, d: int) -> None:
        layer = self.layers[d]
        assert layer is not None
        layer.close(linger=0)
        self.layers[d] = None

    def close(self) -> None:
        for d in range(3):
            if self.layers[d] is not None:
                self.stop(d)


@pytest.fixture
def hubs():
    made: list[Hubs] = []

    def make(**kwargs) -> Hubs:
        made.append(Hubs(**kwargs))
        return made[-1]

    yield make
    for h in made:
        h.close()


def collect_all(layers, server_round: int):
    with ThreadPoolExecutor(3) as pool:
        futures = {d: pool.submit(layer.collect, d, server_round) for d, layer in layers}
        return {d: f.result() for d, f in futures.items()}


def test_equals_in_process_layer_over_rounds_with_mutual_tls(hubs, federation):
    net = hubs(tls=[tls_of(federation, d) for d in range(3)])
    local = InProcessPeerLayer(H)
    rng = np.random.default_rng(0)
    z = [model(rng) for _ in range(3)]
    for server_round in range(1, 5):
        for d in range(3):
            net.layers[d].publish(d, server_round, z[d])
            local.publish(d, server_round, z[d])
        got = collect_all(enumerate(net.layers), server_round)
        for d in range(3):
            want = local.collect(d, server_round)
            assert got[d].skipped == []
            assert got[d].bytes_in == want.bytes_in > 0
            assert list(got[d].model.keys()) == ["w", "b"]
            assert got[d].model["w"].numpy().dtype == np.float32
            np.testing.assert_allclose(values(got[d].model), values(want.model), atol=1e-6)
        # the next round gossips the mixed models plus some local progress
        z = [
            ArrayRecord({k: Array(got[d].model[k].numpy() + 0.1 * d) for k in ("w", "b")})
            for d in range(3)
        ]


def assert_hub_1_mixes_without_hub_0(net, z, caplog) -> None:
    """Hubs 1 and 2 publish round 1; hub 1 skips hub 0, whose weight goes to hub 1's own model."""
    for d in (1, 2):
        net.layers[d].publish(d, 1, z[d])
    with caplog.at_level(logging.WARNING, logger="flwr"):
        gossip = net.layers[1].collect(1, 1)
    assert gossip.skipped == [0]
    # hub 0's weight H[0, 1] moved to hub 1's own model; the column still sums to 1
    want = (H[1, 1] + H[0, 1]) * values(z[1]) + H[2, 1] * values(z[2])
    np.testing.assert_allclose(values(gossip.model), want, atol=1e-6)


def assert_mixes_like_in_process(net, z, server_round: int) -> None:
    """Every hub publishes ``z`` for the round; each mix equals the in-process layer's."""
    local = InProcessPeerLayer(H)
    for d in range(3):
        net.layers[d].publish(d, server_round, z[d])
        local.publish(d, server_round, z[d])
    got = collect_all(enumerate(net.layers), server_round)
    for d in range(3):
        assert got[d].skipped == []
        np.testing.assert_allclose(
            values(got[d].model), values(local.collect(d, server_round).model), atol=1e-6
        )


def test_stopped_neighbour_is_skipped_then_mixed_in_again(hubs, caplog):
    net = hubs(timeout=0.5, peer_wait=1.0)
    rng = np.random.default_rng(1)
    z = [model(rng) for _ in range(3)]
    net.stop(0)
    assert_hub_1_mixes_without_hub_0(net, z, caplog)
    assert "skipped hub 0: never reached, unreachable after 1 s (deploy.peer_wait)" in caplog.text
    # hub 2 does not mix in hub 0 at all: unaffected
    assert net.layers[2].collect(2, 1).skipped == []

    net.start(0)
    for layer in net.layers:  # gRPC may back off up to 1 s before it reconnects to hub 0
        layer.bounds = WaitBounds(5.0, 10.0)
    assert_mixes_like_in_process(net, z, 2)


def test_withheld_neighbour_is_skipped_at_once_with_its_reason(hubs, caplog):
    # a timeout far longer than the test: only the withheld answer can end the wait
    net = hubs(timeout=120.0)
    rng = np.random.default_rng(3)
    z = [model(rng) for _ in range(3)]
    net.layers[0].withhold(0, 1, "no valid reply from its 4 workers\n(second line)")
    assert_hub_1_mixes_without_hub_0(net, z, caplog)
    assert "skipped hub 0: it sits this gossip out (no valid reply from its 4 workers " in (
        caplog.text
    )
    assert "deploy." not in caplog.text  # skipped at once, not after a bound
    # the next round hub 0 publishes again and is mixed in
    assert_mixes_like_in_process(net, z, 2)


def test_model_of_another_round_is_never_mixed_in(hubs):
    net = hubs(timeout=0.4, peer_wait=0.8)
    rng = np.random.default_rng(2)
    z = [model(rng) for _ in range(3)]
    for d in range(3):
        net.layers[d].publish(d, 1, z[d])
    # hub 0 is late: only its round-1 model exists when hub 1 mixes round 2
    net.layers[1].publish(1, 2, z[1])
    net.layers[2].publish(2, 2, z[2])
    gossip = net.layers[1].collect(1, 2)
    assert gossip.skipped == [0]
    # round 1 can still be fetched by a slower neighbour
    assert net.layers[1].collect(1, 1).skipped == []


def test_a_hub_that_finishes_keeps_serving_its_last_round_to_slower_neighbours(hubs):
    net = hubs(timeout=5.0)
    rng = np.random.default_rng(6)
    z = [model(rng) for _ in range(3)]
    net.layers[1].publish(1, 1, z[1])
    done = threading.Thread(target=net.layers[1].close)  # its readers 0 and 2 have not fetched
    done.start()
    done.join(0.3)
    assert done.is_alive()
    for d in (0, 2):
        net.layers[d].publish(d, 1, z[d])
        assert net.layers[d].collect(d, 1).skipped == []
    done.join(5.0)
    assert not done.is_alive()
    net.layers[1] = None


def test_a_slow_neighbour_that_is_alive_is_waited_for_past_the_gossip_timeout(hubs, caplog):
    """Hub 0 publishes 4 gossip timeouts late, but answers (alive): hub 1 waits and mixes it in."""
    net = hubs(timeout=0.3, peer_wait=10.0)
    rng = np.random.default_rng(7)
    z = [model(rng) for _ in range(3)]
    late = threading.Timer(1.2, net.layers[0].publish, (0, 1, z[0]))
    late.start()
    try:
        assert_mixes_like_in_process(net, z, 1)  # publishes again; the mix is the same
    finally:
        late.cancel()
    assert "skipped" not in caplog.text


def test_an_alive_neighbour_is_skipped_past_peer_wait_with_the_reason(hubs, caplog):
    net = hubs(timeout=0.2, peer_wait=0.6)
    rng = np.random.default_rng(8)
    z = [model(rng) for _ in range(3)]
    assert_hub_1_mixes_without_hub_0(net, z, caplog)  # hub 0 answers, never publishes round 1
    assert "skipped hub 0: alive but no model within 0.6 s (deploy.peer_wait)" in caplog.text


def test_a_neighbour_gone_after_it_was_reached_costs_one_timeout_then_none(hubs, caplog):
    net = hubs(timeout=0.5, peer_wait=30.0)
    rng = np.random.default_rng(9)
    z = [model(rng) for _ in range(3)]
    assert_mixes_like_in_process(net, z, 1)
    net.stop(0)
    for d in (1, 2):
        net.layers[d].publish(d, 2, z[d])
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="flwr"):
        assert net.layers[1].collect(1, 2).skipped == [0]
    assert 0.5 <= time.monotonic() - start < 5.0  # the gossip timeout, not peer_wait
    assert "skipped hub 0: unreachable for 0.5 s (deploy.gossip_timeout)" in caplog.text
    net.layers[1].publish(1, 3, z[1])
    net.layers[2].publish(2, 3, z[2])
    start = time.monotonic()
    assert net.layers[1].collect(1, 3).skipped == [0]
    assert time.monotonic() - start < 0.5 + 0.5  # at most the grace, not another timeout
    assert "still unreachable (unreachable since round 2)" in caplog.text


def test_a_stalled_neighbour_is_skipped_like_an_unreachable_one(hubs, caplog):
    """Hub 0 answers, but its round loop stopped beating: it says so and is skipped."""
    net = hubs(timeout=0.4, peer_wait=30.0, stall_after=0.2)
    rng = np.random.default_rng(10)
    z = [model(rng) for _ in range(3)]
    assert_mixes_like_in_process(net, z, 1)
    for d in (1, 2):
        net.layers[d].publish(d, 2, z[d])
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="flwr"):
        assert net.layers[1].collect(1, 2).skipped == [0]
    assert time.monotonic() - start < 5.0
    assert "skipped hub 0: stalled for 0.4 s (deploy.gossip_timeout)" in caplog.text

    # beating again, hub 0 is alive: hub 1 waits for it (and gets its model)
    def beat_then_publish() -> None:
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            net.layers[0].beat()
            time.sleep(0.05)
        net.layers[0].publish(0, 3, z[0])

    alive = threading.Thread(target=beat_then_publish)
    alive.start()
    net.layers[1].publish(1, 3, z[1])
    net.layers[2].publish(2, 3, z[2])
    assert net.layers[1].collect(1, 3).skipped == []
    alive.join()


def test_a_hub_that_leaves_is_skipped_at_once_in_every_later_round(hubs, caplog):
    net = hubs(timeout=30.0, peer_wait=60.0)
    rng = np.random.default_rng(11)
    z = [model(rng) for _ in range(3)]
    assert_mixes_like_in_process(net, z, 1)
    # it keeps telling until its one out-neighbour (hub 1) heard it, within the bound given
    leaving = threading.Thread(target=net.layers[0].leave, args=("its SuperLink is gone", 60.0))
    leaving.start()
    for server_round in (2, 3):
        for d in (1, 2):
            net.layers[d].publish(d, server_round, z[d])
        start = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="flwr"):
            assert net.layers[1].collect(1, server_round).skipped == [0]
        assert time.monotonic() - start < 3.0
        if server_round == 2:
            leaving.join(5.0)
            assert not leaving.is_alive()  # hub 1 was told: it did not wait out its bound
            net.stop(0)  # it then exits: later rounds are not waited for either
    assert "it sits this gossip out (left the run: its SuperLink is gone)" in caplog.text


class FakeHub:
    """A peer server that answers every fetch with a fixed payload."""

    def __init__(self, payload: bytes):
        handler = grpc.unary_unary_rpc_method_handler(lambda request, context: payload)
        self.server = grpc.server(
            ThreadPoolExecutor(2),
            handlers=[grpc.method_handlers_generic_handler(SERVICE, {"Fetch": handler})],
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def close(self):
        self.server.stop(None)


def mix_from_fake(payload: bytes, caplog, **kwargs):
    """Hub 1 mixes round 3 with hub 0 replaced by a fake; hub 2 absent."""
    fake = FakeHub(payload)
    try:
        peers = {0: f"127.0.0.1:{fake.port}", 2: f"127.0.0.1:{free_port()}"}
        layer = NetworkPeerLayer(
            1, H, "127.0.0.1:0", peers, insecure=True, timeout=0.3, peer_wait=0.6, **kwargs
        )
        try:
            layer.publish(1, 3, model(np.random.default_rng(3)))
            with caplog.at_level(logging.WARNING, logger="flwr"):
                gossip = layer.collect(1, 3)
        finally:
            layer.close(linger=0)
    finally:
        fake.close()
    return gossip


def test_fake_hub_control_is_mixed_in(caplog):
    """The fake serves a good model of the right round and sender: it is mixed in."""
    gossip = mix_from_fake(encode(0, 3, model(np.random.default_rng(4))), caplog)
    assert gossip.skipped == [2]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (encode(0, 2, model(np.random.default_rng(4))), "round 2"),
        (encode(2, 3, model(np.random.default_rng(4))), "hub 2's model"),
        (
            encode(0, 3, ArrayRecord({"w": Array(np.zeros((3, 4), np.float32))})),
            "keys",
        ),
        (
            encode(
                0,
                3,
                ArrayRecord({"w": Array(np.zeros((3, 4), np.float32)), "b": Array(np.zeros(3))}),
            ),
            "float32[3, 4], expected float32[4, 3]",
        ),
        (
            encode(
                0,
                3,
                ArrayRecord({"w": Array(np.zeros((4, 3), np.float64)), "b": Array(np.zeros(3))}),
            ),
            "float64[4, 3], expected float32[4, 3]",
        ),
        (encode(0, 3, model(np.random.default_rng(4), scale=np.nan)), "non-finite"),
        (struct.pack(">qq", 0, 3) + b"\xff\xff not a proto", "not a serialized ArrayRecord"),
    ],
)
def test_bad_model_is_refused_and_logged_with_its_sender(payload, reason, caplog):
    gossip = mix_from_fake(payload, caplog)
    assert gossip.skipped == [0, 2]
    assert "refused the model of hub 0" in caplog.text
    assert reason in caplog.text


def test_too_large_model_is_refused(caplog):
    gossip = mix_from_fake(
        encode(0, 3, model(np.random.default_rng(4))), caplog, max_model_bytes=64
    )
    assert gossip.skipped == [0, 2]
    assert "hub 0" in caplog.text


def test_insecure_needs_explicit_opt_out():
    with pytest.raises(ValueError, match="insecure=True"):
        NetworkPeerLayer(0, H, "127.0.0.1:0", {1: "127.0.0.1:1"})


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="peers: expected an address for in-neighbours \\[1\\]"):
        NetworkPeerLayer(0, H, "127.0.0.1:0", {}, insecure=True)
    with pytest.raises(ValueError, match="mixing: expected a square"):
        NetworkPeerLayer(3, H, "127.0.0.1:0", {}, insecure=True)
    layer = NetworkPeerLayer(0, H, "127.0.0.1:0", {1: "127.0.0.1:1"}, insecure=True)
    try:
        with pytest.raises(ValueError, match="listen_address"):
            NetworkPeerLayer(0, H, f"127.0.0.1:{layer.port}", {1: "x:1"}, insecure=True)
        with pytest.raises(ValueError, match="this layer serves hub 0"):
            layer.publish(1, 1, model(np.random.default_rng(0)))
        with pytest.raises(RuntimeError, match="hub 0 has not published"):
            layer.collect(0, 1)
    finally:
        layer.close()


# ---- mutual TLS: who may fetch a hub's model ----


def fetch(port: int, tls: PeerTls | None, server_identity: str = "hub-0") -> grpc.StatusCode:
    """Fetch round 1 from the server on ``port``; return the status code."""
    if tls is None:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    else:
        credentials = grpc.ssl_channel_credentials(tls.ca_cert, tls.key, tls.cert)
        options = [("grpc.ssl_target_name_override", server_identity)]
        channel = grpc.secure_channel(f"127.0.0.1:{port}", credentials, options=options)
    try:
        channel.unary_unary(METHOD)(struct.pack(">qq", 1, 1), timeout=5)
        return grpc.StatusCode.OK
    except grpc.RpcError as err:
        return err.code()
    finally:
        channel.close()


@pytest.fixture
def hub0(federation):
    """Hub 0 over mutual TLS, its round-1 model published; its reader is hub 1 only."""
    layer = NetworkPeerLayer(
        0, H, "127.0.0.1:0", {1: "127.0.0.1:1"}, tls=tls_of(federation, 0), timeout=1
    )
    layer.publish(0, 1, model(np.random.default_rng(5)))
    yield layer
    layer.close(linger=0)


def test_tls_neighbour_may_fetch(hub0, federation):
    assert hub0.readers == {1}
    assert fetch(hub0.port, tls_of(federation, 1)) == grpc.StatusCode.OK


def test_tls_certificate_of_another_ca_is_refused(hub0, federation, tmp_path):
    other = make_federation(tmp_path, 3, 1)
    # trusts the real CA, but presents a hub-1 certificate signed by another CA
    forged = PeerTls(federation.ca_cert.read_bytes(), *(p.read_bytes() for p in other.peer[1]))
    assert fetch(hub0.port, forged) == grpc.StatusCode.UNAVAILABLE


def test_tls_plain_text_client_is_refused(hub0):
    assert fetch(hub0.port, None) == grpc.StatusCode.UNAVAILABLE


def test_tls_valid_certificate_of_a_non_neighbour_is_refused(hub0, federation, caplog):
    # H[0, 2] == 0: hub 2 does not mix in hub 0's model, so it may not fetch it
    with caplog.at_level(logging.WARNING, logger="flwr"):
        assert fetch(hub0.port, tls_of(federation, 2)) == grpc.StatusCode.PERMISSION_DENIED
    assert "not a neighbour" in caplog.text


def test_tls_client_checks_the_server_identity(hub0, federation):
    # hub 1 expects hub-2 at that address but hub 0 answers: the handshake fails
    assert fetch(hub0.port, tls_of(federation, 1), "hub-2") == grpc.StatusCode.UNAVAILABLE


def test_tls_certificate_naming_several_hubs_is_refused(hub0, federation, caplog):
    """A certificate of hub 2 that also names hub-1 (a reader of hub 0) proves no identity."""
    ca = KeyPair(federation.ca_cert.read_bytes(), federation.ca_key.read_bytes())
    both = make_certificate(ca, "hub-2", ["hub-1", "127.0.0.1"])
    tls = PeerTls(federation.ca_cert.read_bytes(), both.cert, both.key)
    with caplog.at_level(logging.WARNING, logger="flwr"):
        assert fetch(hub0.port, tls) == grpc.StatusCode.PERMISSION_DENIED
    assert "refused peer None" in caplog.text


def test_the_certificate_of_hub_e_used_as_hub_d_is_refused_both_ways(federation):
    """Hub 2's certificate and key in hub 1's place: hub 0 neither reads from it nor serves it."""
    ports = [free_port(), free_port()]
    rng = np.random.default_rng(9)
    hub0 = NetworkPeerLayer(
        0,
        H,
        f"127.0.0.1:{ports[0]}",
        {1: f"127.0.0.1:{ports[1]}"},
        tls=tls_of(federation, 0),
        timeout=TIMEOUT,
    )
    impostor = NetworkPeerLayer(
        1,
        H,
        f"127.0.0.1:{ports[1]}",
        {0: f"127.0.0.1:{ports[0]}", 2: "127.0.0.1:1"},
        tls=tls_of(federation, 2),
        timeout=TIMEOUT,
    )
    try:
        impostor.publish(1, 1, model(rng))
        assert hub0.exchange(0, 1, model(rng)).skipped == [1]  # the server is not hub-1
        hub0.publish(0, 1, model(rng))
        assert 0 in impostor.exchange(1, 1, model(rng)).skipped  # the client is not hub-1
        assert fetch(ports[0], tls_of(federation, 1)) == grpc.StatusCode.OK  # the real hub 1 may
    finally:
        impostor.close(linger=0)
        hub0.close(linger=0)
