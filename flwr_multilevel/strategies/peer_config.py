"""How a networked peer layer is set up: its TLS material, its peers' addresses, their identities.

A hub's certificate names it ``hub-<d>`` (see
:func:`flwr_multilevel.deploy.certs.hub_identity`); peer addresses travel in a
run config as one string ``"0=host:port,1=host:port"``.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

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


def peer_identity(auth_context: Mapping[str, list[bytes]]) -> int | None:
    """Return the ONE hub a TLS peer's certificate names, or None.

    A certificate names its hub in its CN and SAN (``hub-<d>``); one that
    names no hub, or several (made with another hub's identity among its
    host names, say), proves no single identity and is refused.

    Examples
    --------
    >>> peer_identity({"x509_common_name": [b"hub-2"],
    ...                "x509_subject_alternative_name": [b"hub-2", b"10.0.0.7"]})
    2
    >>> peer_identity({"x509_common_name": [b"hub-2"],
    ...                "x509_subject_alternative_name": [b"hub-2", b"hub-0"]}) is None
    True
    """
    hubs = identities(auth_context)
    return next(iter(hubs)) if len(hubs) == 1 else None


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
