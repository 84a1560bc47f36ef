"""Federation certificates and keys: what Flower and the peer layer load."""

import hashlib
import ipaddress
import re
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key
from cryptography.x509.oid import ExtendedKeyUsageOID
from flwr.cli.supernode.register import try_load_public_key

from flwr_multilevel.cli.main import main
from flwr_multilevel.deploy.certs import make_federation
from flwr_multilevel.strategies.peer_config import peer_identity


def test_make_federation_writes_a_verifiable_set(tmp_path):
    files = make_federation(tmp_path, 2, [1, 3])
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    assert len(files.peer) == len(files.superlink) == 2
    assert [len(n) for n in files.supernode] == [1, 3]
    for d, (cert_path, key_path) in enumerate(files.peer):
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        cert.verify_directly_issued_by(ca)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert f"hub-{d}" in san.get_values_for_type(x509.DNSName)
        assert "localhost" in san.get_values_for_type(x509.DNSName)
        assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= set(usage)
        assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    link = x509.load_pem_x509_certificate(files.superlink[1][0].read_bytes())
    link.verify_directly_issued_by(ca)
    assert stat.S_IMODE(files.ca_key.stat().st_mode) == 0o600
    for private, public in (pair for hub in files.supernode for pair in hub):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
        # what flower-supernode --auth-supernode-private-key and flwr supernode register load
        key = load_ssh_private_key(private.read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"
        assert try_load_public_key(public)


def test_two_federations_have_different_cas(tmp_path):
    one = make_federation(tmp_path / "a", 1, 1)
    two = make_federation(tmp_path / "b", 1, 1)
    assert one.ca_cert.read_bytes() != two.ca_cert.read_bytes()


def san_names(path) -> tuple[set[str], set[str]]:
    """(DNS names, IP addresses) of a certificate's SAN."""
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(san.get_values_for_type(x509.DNSName)), {
        str(ip) for ip in san.get_values_for_type(x509.IPAddress)
    }


def test_each_site_s_certificates_name_only_that_site(tmp_path):
    hosts = {0: ["10.0.0.5"], 1: ["10.0.0.6", "hub-1.example.org"]}
    files = make_federation(tmp_path, 2, 1, hosts)
    for d, other in ((0, "10.0.0.6"), (1, "10.0.0.5")):
        peer_dns, peer_ips = san_names(files.peer[d][0])
        link_dns, link_ips = san_names(files.superlink[d][0])
        own = set(hosts[d]) | {"localhost", "127.0.0.1"}
        assert peer_dns | peer_ips == own | {f"hub-{d}"}  # its identity and its hosts, no other
        assert link_dns | link_ips == own | {f"superlink-{d}"}
        assert other not in peer_ips | link_ips
        assert {n for n in peer_dns | link_dns if re.fullmatch(r"hub-\d+", n)} <= {f"hub-{d}"}
        cert = x509.load_pem_x509_certificate(files.peer[d][0].read_bytes())
        auth = {
            "x509_common_name": [f"hub-{d}".encode()],
            "x509_subject_alternative_name": [n.encode() for n in peer_dns | peer_ips],
        }
        assert cert.subject.rfc4514_string().startswith(f"CN=hub-{d},")
        assert peer_identity(auth) == d
    assert files.hosts == [
        ["10.0.0.5", "localhost", "127.0.0.1"],
        ["10.0.0.6", "hub-1.example.org", "localhost", "127.0.0.1"],
    ]


def test_certs_command(tmp_path, capsys):
    assert main(["certs", str(tmp_path / "out"), "--hubs", "2", "--workers", "2"]) == 0
    assert (tmp_path / "out" / "hub-1" / "supernode-1.pub").is_file()
    assert "ca.pem" in capsys.readouterr().out


def test_certs_command_takes_hosts_per_hub(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["certs", str(out), "--workers", "2,1", "--host", "hub-0=10.0.0.5"]
    assert main([*args, "--host", "hub-1=10.0.0.6,site1.example"]) == 0
    printed = capsys.readouterr().out
    assert "hub-1: 10.0.0.6, site1.example, localhost, 127.0.0.1" in printed
    assert sorted(p.name for p in out.iterdir()) == ["ca.key", "ca.pem", "hub-0", "hub-1"]
    assert not (out / "hub-1" / "supernode-1").exists()  # --workers 2,1
    assert "10.0.0.6" not in san_names(out / "hub-0" / "superlink.pem")[1]


def tree_hash(path) -> str:
    """A hash of everything under ``path`` (names, modes, contents), or of the file itself."""
    digest = hashlib.sha256()
    paths = [path] if path.is_file() else sorted(path.rglob("*"))
    for p in paths:
        digest.update(f"{p.relative_to(path.parent)}:{p.stat().st_mode}".encode())
        if p.is_file():
            digest.update(p.read_bytes())
    return digest.hexdigest()


def one_error_line(capsys) -> str:
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert out == "" and len(lines) == 1 and lines[0].startswith("flwr-multilevel: error: ")
    return lines[0]


def test_certs_never_overwrites_existing_keys_without_force(tmp_path, capsys):
    out = tmp_path / "certs"
    assert main(["certs", str(out), "--hubs", "1", "--workers", "1"]) == 0
    capsys.readouterr()
    before = tree_hash(out)
    assert main(["certs", str(out), "--hubs", "2", "--workers", "1"]) == 2
    assert "already holds certificates (ca.key); pass --force" in one_error_line(capsys)
    assert tree_hash(out) == before
    old_key = (out / "hub-0" / "supernode-0").read_bytes()
    assert main(["certs", str(out), "--hubs", "2", "--workers", "1", "--force"]) == 0
    [backup] = out.glob("backup-*")
    assert "previous certificates are in" in capsys.readouterr().out
    assert (backup / "hub-0" / "supernode-0").read_bytes() == old_key  # kept, 0600, 0700 folder
    assert stat.S_IMODE((backup / "hub-0" / "supernode-0").stat().st_mode) == 0o600
    assert stat.S_IMODE(backup.stat().st_mode) == 0o700
    assert (out / "hub-0" / "supernode-0").read_bytes() != old_key
    assert (out / "hub-1" / "peer.pem").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--hubs", "0"], "--hubs: expected an integer in 1..1000, got 0"),
        (["--hubs", "1001"], "--hubs: expected an integer in 1..1000, got 1001"),
        (["--workers", "0"], "--workers: expected integers >= 1, got 0"),
        (["--hubs", "2", "--workers", "5001"], "--workers: expected at most 10000 workers"),
        (["--hubs", "3", "--workers", "1,2"], "--workers: expected one count, or one per hub"),
        (["--workers", "two"], "--workers: expected integers such as 4 or 2,3, got 'two'"),
        (["--host", "hub-0=hub-1"], "--host: 'hub-1' is an identity name, not a host"),
        (["--host", "hub-0=superlink-2"], "--host: 'superlink-2' is an identity name"),
        (["--host", "10.0.0.5"], "--host: expected hub-<d>=HOST[,HOST...]"),
        (["--host", "hub-0=*.example"], "--host: expected a DNS name or an IP address"),
        (["--host", "hub-1=10.0.0.6"], "--host: expected an entry for every hub, hub-0 has none"),
        (["--host", "hub-0=10.0.0.5", "--hubs", "2"], "--host: expected hosts for hubs 0..1"),
    ],
)
def test_certs_refuses_bad_counts_and_hosts_in_one_line(tmp_path, capsys, args, message):
    out = tmp_path / "certs"
    assert main(["certs", str(out), *args]) == 2
    assert message in one_error_line(capsys)
    assert not out.exists()


@pytest.mark.parametrize("kind", ["file", "read-only", "missing parent"])
def test_certs_reports_a_bad_folder_in_one_line(tmp_path, capsys, kind):
    target = {
        "file": tmp_path / "a-file",
        "read-only": tmp_path / "locked",
        "missing parent": tmp_path / "nowhere" / "certs",
    }[kind]
    if kind == "file":
        target.write_text("not a folder")
    if kind == "read-only":
        target.mkdir()
        (target / "notes.txt").write_text("keep")
        target.chmod(0o555)
    watched = target if target.exists() else tmp_path
    before = tree_hash(watched)
    try:
        assert main(["certs", str(target), "--hubs", "1", "--workers", "1"]) == 2
        line = one_error_line(capsys)
    finally:
        if kind == "read-only":
            target.chmod(0o755)
    assert line.startswith("flwr-multilevel: error: OUT_DIR: ")
    expected = {"file": "is a file", "read-only": "is read-only", "missing parent": "parent"}
    assert expected[kind] in line
    assert tree_hash(watched) == before
