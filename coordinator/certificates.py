"""TLS certificates for the SuperLink and authentication keys for SuperNodes.

A consortium deployment needs two kinds of key material, both made here with
the ``cryptography`` library (no ``openssl`` shell-out):

* **TLS** (coordinator): a self-signed certificate authority and a server
  certificate signed by it for the SuperLink, with subject alternative names
  for every host name and IP address the hospitals (and the coordinator's own
  ServerApp process, which always connects to ``127.0.0.1``) use to reach it.
  The SuperLink gets ``--ssl-ca-certfile ca.crt --ssl-certfile server.pem
  --ssl-keyfile server.key``; every hospital gets ``ca.crt`` only, for
  ``flower-supernode --root-certificates``; the ``flwr`` CLI gets it as the
  connection's ``root-certificates``.
* **SuperNode authentication** (each hospital): an ECDSA key pair on the NIST
  P-384 curve in OpenSSH format, the format Flower 1.41 reads
  (``flower-supernode --auth-supernode-private-key`` loads an OpenSSH private
  EC key; ``flwr supernode register <key.pub>`` loads an OpenSSH public key on
  a NIST curve). The hospital keeps the private key and sends the ``.pub`` to
  the coordinator, who registers it with the SuperLink.

Private keys are written with mode 0600. Command line::

    python -m coordinator.certificates --out certs --host superlink.example.org
    python -m coordinator.certificates --out keys --supernode-key hospital-a
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: Hosts always present in the server certificate: the SuperLink starts its
#: ServerApp runner (``flower-superexec``) against ``127.0.0.1:<port>`` with
#: the same certificate, also when it listens on ``0.0.0.0``.
LOCAL_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1")

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
SERVER_CERT = "server.pem"
SERVER_KEY = "server.key"


class CertificateError(ValueError):
    """Key material cannot be created as asked (e.g. it would be overwritten)."""


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the coordinator's TLS material."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    hosts: tuple[str, ...]

    def superlink_args(self) -> list[str]:
        """``flower-superlink`` arguments that enable TLS with these files."""
        return [
            "--ssl-ca-certfile",
            str(self.ca_cert),
            "--ssl-certfile",
            str(self.server_cert),
            "--ssl-keyfile",
            str(self.server_key),
        ]


@dataclass(frozen=True)
class SupernodeKeyFiles:
    """Paths of one SuperNode's authentication key pair (OpenSSH format)."""

    private_key: Path
    public_key: Path

    def public_line(self) -> str:
        """Return the public key line (``ecdsa-sha2-nistp384 AAAA... <comment>``)."""
        return self.public_key.read_text().strip()


# -- writing ---------------------------------------------------------------------
def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` readable and writable by the owner only (mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), 0o600)  # also when the file already existed
        fh.write(data)


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o644)


def _pem_private(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


# -- certificates ----------------------------------------------------------------
def _parse_host(host: str) -> x509.GeneralName:
    """Return an IP-address SAN for an address, a DNS-name SAN otherwise."""
    try:
        return x509.IPAddress(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        if not host or any(c.isspace() for c in host) or "/" in host:
            raise CertificateError(f"not a host name or IP address: {host!r}") from None
        return x509.DNSName(host)


def normalise_hosts(hosts: Iterable[str]) -> tuple[str, ...]:
    """Return ``hosts`` plus :data:`LOCAL_HOSTS`, without duplicates, in order."""
    seen: dict[str, None] = {}
    for host in [*hosts, *LOCAL_HOSTS]:
        _parse_host(host)  # validate early, with the offending value in the error
        seen.setdefault(host.strip("[]"), None)
    return tuple(seen)


def _validity(days: int) -> tuple[dt.datetime, dt.datetime]:
    if days < 1:
        raise CertificateError(f"validity must be at least one day, got {days}")
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)  # tolerate clock skew
    return start, start + dt.timedelta(days=days)


def create_ca(
    common_name: str = "MedSynth-FL consortium CA", days: int = 3650
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """Create a self-signed certificate authority (ECDSA P-384, SHA-384).

    Parameters
    ----------
    common_name
        Subject common name of the CA.
    days
        Validity in days.

    Returns
    -------
    tuple
        The CA's private key and certificate.
    """
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "MedSynth-FL"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    start, end = _validity(days)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
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
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
            critical=False,
        )
        .sign(key, hashes.SHA384())
    )
    return key, cert


def create_server_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    hosts: Sequence[str],
    days: int = 825,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """Create the SuperLink's server certificate, signed by the CA.

    Parameters
    ----------
    ca_key, ca_cert
        The issuing certificate authority.
    hosts
        Host names and IP addresses for the subject alternative names; the
        first is also the common name.
    days
        Validity in days.

    Returns
    -------
    tuple
        The server's private key (ECDSA P-256) and certificate.
    """
    if not hosts:
        raise CertificateError("the server certificate needs at least one host")
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = _validity(days)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "MedSynth-FL"),
                    x509.NameAttribute(NameOID.COMMON_NAME, hosts[0][:64]),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(min(end, ca_cert.not_valid_after_utc))
        .add_extension(
            x509.SubjectAlternativeName([_parse_host(h) for h in hosts]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _load_ca(out: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = serialization.load_pem_private_key((out / CA_KEY).read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertificateError(f"{out / CA_KEY} is not an EC private key")
    return key, x509.load_pem_x509_certificate((out / CA_CERT).read_bytes())


def write_tls_files(
    out: Path, hosts: Iterable[str] = (), days: int = 825, new_ca: bool = False
) -> TlsFiles:
    """Write ``ca.crt``/``ca.key`` and ``server.pem``/``server.key`` into ``out``.

    An existing CA in ``out`` is reused (so that the hospitals' copies of
    ``ca.crt`` stay valid) and only the server certificate is issued again,
    e.g. to add a host name; ``new_ca=True`` replaces the CA.

    Parameters
    ----------
    out
        Folder for the four PEM files (created if needed).
    hosts
        Host names / IP addresses the SuperLink is reached at; ``localhost``
        and ``127.0.0.1`` are always added.
    days
        Validity of the server certificate in days.
    new_ca
        Create a new CA even if ``out`` already holds one.

    Returns
    -------
    TlsFiles
        The written paths and the hosts in the certificate.
    """
    out = Path(out)
    names = normalise_hosts(hosts)
    have_ca = (out / CA_CERT).is_file() and (out / CA_KEY).is_file()
    if have_ca and not new_ca:
        ca_key, ca_cert = _load_ca(out)
    else:
        if (out / CA_CERT).exists() != (out / CA_KEY).exists() and not new_ca:
            raise CertificateError(f"{out} holds only half of a CA; pass new_ca=True")
        ca_key, ca_cert = create_ca()
        _write_private(out / CA_KEY, _pem_private(ca_key))
        _write_public(out / CA_CERT, _pem_cert(ca_cert))
    key, cert = create_server_certificate(ca_key, ca_cert, names, days)
    _write_private(out / SERVER_KEY, _pem_private(key))
    _write_public(out / SERVER_CERT, _pem_cert(cert))
    return TlsFiles(
        out / CA_CERT, out / CA_KEY, out / SERVER_CERT, out / SERVER_KEY, names
    )


# -- SuperNode authentication ---------------------------------------------------
def write_supernode_key(
    out: Path, name: str, overwrite: bool = False
) -> SupernodeKeyFiles:
    """Create a SuperNode authentication key pair ``<out>/<name>`` and ``<name>.pub``.

    ECDSA on NIST P-384 in OpenSSH format, as Flower 1.41 expects: the
    private key for ``flower-supernode --auth-supernode-private-key``, the
    public key for ``flwr supernode register``.

    Parameters
    ----------
    out
        Folder for the two files.
    name
        File name of the private key (and comment of the public key).
    overwrite
        Replace an existing key pair (a registered key then stops working).

    Returns
    -------
    SupernodeKeyFiles
        Paths of the private and public key.
    """
    if not name or "/" in name or name.startswith("."):
        raise CertificateError(f"invalid key name {name!r}")
    out = Path(out)
    private, public = out / name, out / f"{name}.pub"
    if private.exists() and not overwrite:
        raise CertificateError(f"refusing to overwrite {private}")
    key = ec.generate_private_key(ec.SECP384R1())
    _write_private(
        private,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
    )
    line = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    _write_public(public, line + f" {name}\n".encode())
    return SupernodeKeyFiles(private, public)


# -- command line ----------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """Build the ``python -m coordinator.certificates`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m coordinator.certificates",
        description="Create the SuperLink's CA and server certificate (default), "
        "or SuperNode authentication keys (--supernode-key).",
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument(
        "--host",
        action="append",
        default=[],
        help="host name or IP address of the SuperLink (repeatable); "
        "localhost and 127.0.0.1 are always included",
    )
    parser.add_argument(
        "--days",
        type=int,
        default=825,
        help="server certificate validity in days (default 825)",
    )
    parser.add_argument(
        "--new-ca",
        action="store_true",
        help="replace an existing CA in --out (every site then needs the new ca.crt)",
    )
    parser.add_argument(
        "--supernode-key",
        action="append",
        default=[],
        metavar="NAME",
        help="instead of TLS files, create the SuperNode key pair NAME and NAME.pub "
        "(repeatable); run this at the hospital",
    )
    parser.add_argument(
        "--force", action="store_true", help="overwrite existing SuperNode keys"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        if args.supernode_key:
            for name in args.supernode_key:
                files = write_supernode_key(args.out, name, overwrite=args.force)
                print(
                    f"SuperNode private key: {files.private_key} (keep it at the site)"
                )
                print(
                    f"SuperNode public key:  {files.public_key} "
                    "(send it to the coordinator for `flwr supernode register`)"
                )
            return 0
        tls = write_tls_files(args.out, args.host, args.days, new_ca=args.new_ca)
    except (CertificateError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"CA certificate:     {tls.ca_cert} (give it to every site)")
    print(f"CA private key:     {tls.ca_key} (keep it offline)")
    print(f"server certificate: {tls.server_cert}")
    print(f"server private key: {tls.server_key}")
    print(f"hosts: {', '.join(tls.hosts)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
