"""Federation certificates and keys: what Flower and the peer layer load."""

import ipaddress
import stat

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key
from cryptography.x509.oid import ExtendedKeyUsageOID
from flwr.cli.supernode.register import try_load_public_key

from flwr_multilevel.cli.main import main
from flwr_multilevel.deploy.certs import make_federation


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


def test_certs_command(tmp_path, capsys):
    assert main(["certs", str(tmp_path / "out"), "--hubs", "2", "--workers", "2"]) == 0
    assert (tmp_path / "out" / "hub-1" / "supernode-1.pub").is_file()
    assert "ca.pem" in capsys.readouterr().out
    assert main(["certs", str(tmp_path / "bad"), "--hubs", "0"]) == 2
    assert "--hubs: expected an integer >= 1, got 0" in capsys.readouterr().err
