"""Certificates and SuperNode keys in the formats Flower 1.41 reads (no processes)."""

from __future__ import annotations

import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key

from coordinator.certificates import (
    CertificateError,
    main,
    write_supernode_key,
    write_tls_files,
)


def _mode(path) -> int:
    return path.stat().st_mode & 0o777


def test_tls_files_have_sans_and_private_modes(tmp_path):
    tls = write_tls_files(tmp_path, ["superlink.example.org", "203.0.113.7"])
    assert _mode(tls.ca_key) == 0o600 and _mode(tls.server_key) == 0o600
    ca = x509.load_pem_x509_certificate(tls.ca_cert.read_bytes())
    cert = x509.load_pem_x509_certificate(tls.server_cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {
        "superlink.example.org",
        "localhost",
    }
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("203.0.113.7"),
        ipaddress.ip_address("127.0.0.1"),
    }
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_existing_ca_is_reused(tmp_path):
    first = write_tls_files(tmp_path, [])
    ca_before = first.ca_cert.read_bytes()
    server_before = first.server_cert.read_bytes()
    second = write_tls_files(tmp_path, ["other.example.org"])
    assert second.ca_cert.read_bytes() == ca_before
    assert second.server_cert.read_bytes() != server_before
    assert write_tls_files(tmp_path, [], new_ca=True).ca_cert.read_bytes() != ca_before


def test_bad_host_is_refused(tmp_path):
    with pytest.raises(CertificateError):
        write_tls_files(tmp_path, ["not a host"])


def test_supernode_key_is_what_flower_loads(tmp_path):
    from flwr.cli.supernode.register import try_load_public_key

    files = write_supernode_key(tmp_path, "hospital-a")
    assert _mode(files.private_key) == 0o600
    key = load_ssh_private_key(files.private_key.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp384r1"
    assert files.public_line().startswith("ecdsa-sha2-nistp384 ")
    assert try_load_public_key(files.public_key)  # what `flwr supernode register` does
    with pytest.raises(CertificateError):
        write_supernode_key(tmp_path, "hospital-a")


def test_cli(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "certs"), "--host", "10.0.0.5"]) == 0
    assert "10.0.0.5" in capsys.readouterr().out
    assert (tmp_path / "certs" / "server.pem").is_file()
    assert main(["--out", str(tmp_path / "keys"), "--supernode-key", "a"]) == 0
    assert (tmp_path / "keys" / "a.pub").is_file()
    assert main(["--out", str(tmp_path / "keys"), "--supernode-key", "a"]) == 2
