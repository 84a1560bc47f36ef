"""Certificates and keys of a multi-hub federation, made with ``cryptography``.

One federation CA signs everything that speaks TLS:

* each hub's peer certificate (``hub-<d>``; server and client usage), used for
  mutual TLS between hub peer layers;
* each hub's SuperLink certificate (``superlink-<d>``; server usage);
* one identity per certificate: hub d's two certificates name hub d and its
  own site's hosts (plus ``localhost`` and ``127.0.0.1``), never another
  hub's identity or hosts (:mod:`flwr_multilevel.deploy.cert_inputs`);
* SuperNodes authenticate with an EC P-384 key pair in OpenSSH format, what
  Flower 1.42's ``flower-supernode --auth-supernode-private-key`` reads and
  ``flwr supernode register PUBLIC_KEY`` registers with a SuperLink started
  with ``--enable-supernode-auth``.

Private keys are written with file mode 0600.
"""

import datetime
import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from flwr_multilevel.deploy.cert_inputs import (
    LOOPBACK,
    backup_certificates,
    check_cert_folder,
    check_counts,
    hosts_per_hub,
)

DEFAULT_HOSTS = LOOPBACK
VALID_DAYS = 365


def hub_identity(hub_id: int) -> str:
    """Return the identity (certificate CN and SAN) of hub ``hub_id``'s peer layer.

    Examples
    --------
    >>> hub_identity(2)
    'hub-2'
    """
    return f"hub-{hub_id}"


@dataclass(frozen=True)
class KeyPair:
    """A PEM certificate and its PEM private key (both bytes)."""

    cert: bytes
    key: bytes


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "flwr-multilevel federation"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def make_ca(name: str = "flwr-multilevel CA", days: int = VALID_DAYS) -> KeyPair:
    """Return a new self-signed federation CA (EC P-384).

    Parameters
    ----------
    name : str (default: "flwr-multilevel CA")
        Common name of the CA.
    days : int (default: 365)
        Validity in days.

    Returns
    -------
    KeyPair
        The CA certificate and private key, PEM.

    Examples
    --------
    >>> make_ca().cert.startswith(b"-----BEGIN CERTIFICATE-----")
    True
    """
    key = _new_key()
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def _san(names: Sequence[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def make_certificate(
    ca: KeyPair,
    identity: str,
    hosts: Sequence[str] = DEFAULT_HOSTS,
    *,
    client: bool = True,
    days: int = VALID_DAYS,
) -> KeyPair:
    """Return a certificate for ``identity`` signed by ``ca``.

    The certificate's CN is ``identity``; its SAN holds ``identity`` and
    ``hosts`` (DNS names or IP addresses). It is valid for server
    authentication and, with ``client``, client authentication too.

    Parameters
    ----------
    ca : KeyPair
        The federation CA (see :func:`make_ca`).
    identity : str
        Who the certificate names, e.g. ``"hub-0"`` or ``"superlink-0"``.
    hosts : Sequence[str] (default: ("localhost", "127.0.0.1"))
        Host names and IP addresses the holder serves on.
    client : bool (default: True)
        Also allow TLS client authentication (mutual TLS between hubs).
    days : int (default: 365)
        Validity in days.

    Returns
    -------
    KeyPair
        Certificate and private key, PEM.

    Raises
    ------
    ValueError
        If ``identity`` is empty.

    Examples
    --------
    >>> ca = make_ca()
    >>> pair = make_certificate(ca, "hub-0")
    >>> x509.load_pem_x509_certificate(pair.cert).subject.rfc4514_string()
    'CN=hub-0,O=flwr-multilevel federation'
    """
    if not identity:
        raise ValueError("identity: expected a non-empty name such as 'hub-0'")
    ca_cert = x509.load_pem_x509_certificate(ca.cert)
    ca_key = serialization.load_pem_private_key(ca.key, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("ca.key: expected an EC private key")
    key = _new_key()
    now = datetime.datetime.now(datetime.timezone.utc)
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] + ([ExtendedKeyUsageOID.CLIENT_AUTH] * client)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(identity))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(_san([identity, *hosts])), critical=False)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def make_supernode_keys() -> tuple[bytes, bytes]:
    """Return a SuperNode authentication key pair ``(private, public)``, OpenSSH format.

    EC P-384: the private key is what ``flower-supernode
    --auth-supernode-private-key`` loads, the public key what ``flwr supernode
    register`` sends to a SuperLink started with ``--enable-supernode-auth``.

    Examples
    --------
    >>> private, public = make_supernode_keys()
    >>> public.startswith(b"ecdsa-sha2-nistp384 ")
    True
    """
    key = _new_key()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return private, public


def write_private(path: Path, data: bytes) -> Path:
    """Write a private key with mode 0600 (created so, never world-readable); return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    os.chmod(path, 0o600)
    return path


def _write_public(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@dataclass
class FederationFiles:
    """Paths of a federation's certificates and keys (see :func:`make_federation`).

    Attributes
    ----------
    ca_cert : Path
        The federation CA certificate (every party's root of trust).
    ca_key : Path
        The CA private key (keep it off the hubs in a real deployment).
    peer : list[tuple[Path, Path]]
        Per hub d: (certificate, key) of its peer layer, identity ``hub-<d>``.
    superlink : list[tuple[Path, Path]]
        Per hub d: (certificate, key) of its SuperLink.
    supernode : list[list[tuple[Path, Path]]]
        Per hub d, per worker k: (private, public) SuperNode auth key pair.
    hosts : list[list[str]]
        Per hub d: the hosts its SuperLink and peer certificates name.
    backup : Path | None
        Where earlier certificates in the folder were moved (``force``).
    """

    ca_cert: Path
    ca_key: Path
    peer: list[tuple[Path, Path]] = field(default_factory=list)
    superlink: list[tuple[Path, Path]] = field(default_factory=list)
    supernode: list[list[tuple[Path, Path]]] = field(default_factory=list)
    hosts: list[list[str]] = field(default_factory=list)
    backup: Path | None = None


def make_federation(
    folder: str | Path,
    num_hubs: int,
    workers_per_hub: int | Sequence[int],
    hosts: Mapping[int, Sequence[str]] | None = None,
    *,
    force: bool = False,
) -> FederationFiles:
    """Write a CA, per-hub peer and SuperLink certificates and per-worker SuperNode keys.

    Layout under ``folder``: ``ca.pem``, ``ca.key``; ``hub-<d>/peer.pem``,
    ``hub-<d>/peer.key``, ``hub-<d>/superlink.pem``, ``hub-<d>/superlink.key``;
    ``hub-<d>/supernode-<k>`` (private) and ``hub-<d>/supernode-<k>.pub``.
    Hub d's certificates name only hub d: its identity (``hub-<d>``,
    ``superlink-<d>``), its own hosts, ``localhost`` and ``127.0.0.1``.
    Everything is checked, and every key made, before the first file is written.

    Parameters
    ----------
    folder : str | Path
        Output folder (created; its parent must exist).
    num_hubs : int
        Number of hubs D (1 to 1000).
    workers_per_hub : int | Sequence[int]
        Workers per hub, one number for all or one per hub (10000 in all at most).
    hosts : Mapping[int, Sequence[str]] | None (default: None)
        Per hub d, the DNS names / IP addresses its site serves on; None:
        loopback only (every hub on this machine).
    force : bool (default: False)
        Replace certificates already in ``folder``, after moving them to
        ``folder/backup-<time>/``; without it they are never touched.

    Returns
    -------
    FederationFiles
        The paths written.

    Raises
    ------
    ConfigError
        A count out of bounds, a bad host, a folder that cannot be written,
        or certificates already there without ``force`` (nothing is changed).

    Examples
    --------
    >>> import tempfile
    >>> files = make_federation(tempfile.mkdtemp(), 2, 1)
    >>> files.peer[1][0].name, oct(files.supernode[0][0][0].stat().st_mode & 0o777)
    ('peer.pem', '0o600')
    """
    root = check_cert_folder(folder, force)
    counts = check_counts(num_hubs, workers_per_hub)
    names = hosts_per_hub(num_hubs, hosts)
    ca = make_ca()
    made = [
        (
            make_certificate(ca, hub_identity(d), names[d]),
            make_certificate(ca, f"superlink-{d}", names[d], client=False),
            [make_supernode_keys() for _ in range(counts[d])],
        )
        for d in range(num_hubs)
    ]
    root.mkdir(exist_ok=True)
    files = FederationFiles(root / "ca.pem", root / "ca.key", hosts=names)
    files.backup = backup_certificates(root) if force else None
    _write_public(files.ca_cert, ca.cert)
    write_private(files.ca_key, ca.key)
    for d, (peer, link, nodes) in enumerate(made):
        hub = root / hub_identity(d)
        files.peer.append(
            (_write_public(hub / "peer.pem", peer.cert), write_private(hub / "peer.key", peer.key))
        )
        files.superlink.append(
            (
                _write_public(hub / "superlink.pem", link.cert),
                write_private(hub / "superlink.key", link.key),
            )
        )
        files.supernode.append(
            [
                (
                    write_private(hub / f"supernode-{k}", private),
                    _write_public(hub / f"supernode-{k}.pub", public),
                )
                for k, (private, public) in enumerate(nodes)
            ]
        )
    return files
