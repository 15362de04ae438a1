"""Ed25519 site keys (cryptography): generate, store, load, sign, verify."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)


class SiteKeyError(ValueError):
    """A key file is missing or is not an Ed25519 key."""


def generate_site_key(
    private_path: Path, public_path: Path | None = None
) -> Ed25519PrivateKey:
    """Create a new Ed25519 key pair.

    The private key file is readable by its owner only.
    """
    key = Ed25519PrivateKey.generate()
    private_path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public_path = public_path or private_path.with_suffix(".pub")
    public_path.write_bytes(public_key_pem(key.public_key()))
    return key


def public_key_pem(public: Ed25519PublicKey) -> bytes:
    """The public key as PEM (SubjectPublicKeyInfo)."""
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read a PEM Ed25519 private key."""
    if not path.is_file():
        raise SiteKeyError(f"site private key not found: {path}")
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise SiteKeyError(f"{path} is not an Ed25519 private key")
    return key


def load_public_key(path_or_pem: Path | bytes) -> Ed25519PublicKey:
    """Read a PEM Ed25519 public key from a file or from bytes."""
    if isinstance(path_or_pem, Path):
        if not path_or_pem.is_file():
            raise SiteKeyError(f"public key not found: {path_or_pem}")
        path_or_pem = path_or_pem.read_bytes()
    try:
        key = serialization.load_pem_public_key(path_or_pem)
    except ValueError as exc:
        raise SiteKeyError(f"not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SiteKeyError("not an Ed25519 public key")
    return key


def fingerprint(public: Ed25519PublicKey) -> str:
    """Short stable id of a public key: sha256 of its raw bytes, 32 hex digits."""
    raw = public.public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return hashlib.sha256(raw).hexdigest()[:32]


def verify(public: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    """True when ``signature`` is ``public``'s signature of ``message``."""
    try:
        public.verify(signature, message)
        return True
    except InvalidSignature:
        return False
