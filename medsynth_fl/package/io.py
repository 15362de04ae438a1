"""Writing and strictly reading generator packages (safetensors + signed manifest).

On disk a package is one safetensors file whose header metadata carries the
manifest JSON and the base64 Ed25519 signature. Over Flower the same three parts
travel as an ArrayRecord (tensors) and a ConfigRecord (manifest, signature).
Both paths end in :func:`verify_package`, which never unpickles anything.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import hashlib
import json
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from .. import __version__
from ..models.registry import build_generator
from .errors import (
    BadSignature,
    HashMismatch,
    MalformedPackage,
    OversizedPackage,
    TensorMismatch,
    UnknownSigner,
)
from .keyring import KeyRing
from .manifest import (
    FORMAT_NAME,
    FORMAT_VERSION,
    Architecture,
    Manifest,
    NoiseSpec,
    TrainingSummary,
    WeightsInfo,
    canonical_json,
    parse_manifest,
)
from .signing import fingerprint, verify

META_MANIFEST = "medsynth.manifest"
META_SIGNATURE = "medsynth.signature"
MAX_HEADER_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class GeneratorPackage:
    """A verified (or freshly made) package: manifest, tensors, signature."""

    manifest: Manifest
    tensors: dict[str, torch.Tensor]
    signature: bytes
    signature_verified: bool

    @property
    def signature_b64(self) -> str:
        """The signature as base64 text (how it travels in a ConfigRecord)."""
        return base64.b64encode(self.signature).decode()

    def build_generator(self) -> nn.Module:
        """Rebuild the generator from the manifest alone and load the weights."""
        arch = self.manifest.architecture
        model = build_generator(arch.name, dict(arch.kwargs))
        model.load_state_dict(self.tensors, strict=True)
        return model.eval()


def weights_sha256(tensors: Mapping[str, torch.Tensor | np.ndarray]) -> str:
    """Canonical digest of named tensors.

    It covers name, dtype, shape and bytes, by sorted name.
    """
    h = hashlib.sha256()
    for name in sorted(tensors):
        arr = np.ascontiguousarray(_to_numpy(tensors[name]))
        h.update(name.encode() + b"\0" + arr.dtype.str.encode() + b"\0")
        h.update(repr(tuple(arr.shape)).encode() + b"\0")
        h.update(arr.tobytes())
    return h.hexdigest()


def _to_numpy(t: torch.Tensor | np.ndarray) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def create_package(
    generator: nn.Module,
    arch_name: str,
    arch_kwargs: dict,
    *,
    site_id: str,
    class_names: list[str],
    classes_present: list[str],
    training: TrainingSummary,
    key: Ed25519PrivateKey,
) -> GeneratorPackage:
    """Build and sign a package holding exactly the generator's state dict."""
    tensors = {
        k: v.detach().cpu().contiguous().clone()
        for k, v in generator.state_dict().items()
    }
    manifest = Manifest(
        format=FORMAT_NAME,
        format_version=FORMAT_VERSION,
        site_id=site_id,
        created_utc=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        architecture=Architecture(name=arch_name, kwargs=dict(arch_kwargs)),
        image_size=int(arch_kwargs["image_size"]),
        class_names=list(class_names),
        classes_present=list(classes_present),
        noise=NoiseSpec(shape=list(generator.noise_shape)),
        weights=WeightsInfo(
            sha256=weights_sha256(tensors),
            n_tensors=len(tensors),
            n_bytes=sum(t.numel() * t.element_size() for t in tensors.values()),
        ),
        training=training,
        versions={"medsynth_fl": __version__, "torch": torch.__version__.split("+")[0]},
        signing_key=fingerprint(key.public_key()),
    )
    signature = key.sign(manifest.canonical_bytes())
    return GeneratorPackage(manifest, tensors, signature, signature_verified=True)


def package_bytes(pkg: GeneratorPackage) -> bytes:
    """The package as file bytes: safetensors, manifest and signature in its header."""
    meta = {
        META_MANIFEST: pkg.manifest.canonical_bytes().decode(),
        META_SIGNATURE: pkg.signature_b64,
    }
    return st_save(pkg.tensors, metadata=meta)


def write_package(pkg: GeneratorPackage, path: str | os.PathLike) -> Path:
    """Write ``pkg`` as one safetensors file.

    The manifest and signature are in its header.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(package_bytes(pkg))
    tmp.replace(path)
    return path


def _split_container(data: bytes) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    if len(data) < 8:
        raise MalformedPackage(f"only {len(data)} bytes: truncated or empty")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > min(MAX_HEADER_BYTES, len(data) - 8):
        raise MalformedPackage(
            f"header length {header_len} exceeds the file: truncated or not a package"
        )
    try:
        header = json.loads(data[8 : 8 + header_len])
        tensors = st_load(data)
    except (json.JSONDecodeError, UnicodeDecodeError, SafetensorError) as exc:
        raise MalformedPackage(f"unreadable safetensors container: {exc}") from None
    meta = header.get("__metadata__") or {}
    missing = [k for k in (META_MANIFEST, META_SIGNATURE) if k not in meta]
    if missing:
        raise MalformedPackage(f"header metadata lacks {missing}")
    return meta, tensors


def read_package(
    path: str | os.PathLike,
    trusted: KeyRing | None = None,
    max_bytes: int = 512 * 1024**2,
) -> GeneratorPackage:
    """Read and verify a package file; raise a named ``PackageRejected`` on any defect.

    Parameters
    ----------
    path : the package file.
    trusted : site keys to verify the signature against; None skips the
        signature check (``signature_verified`` is then False).
    max_bytes : refuse files larger than this before reading them.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"package not found: {path}")
    size = path.stat().st_size
    if size > max_bytes:
        raise OversizedPackage(f"{size} bytes on disk, limit {max_bytes}")
    return parse_package(path.read_bytes(), trusted, max_bytes)


def parse_package(
    data: bytes, trusted: KeyRing | None = None, max_bytes: int = 512 * 1024**2
) -> GeneratorPackage:
    """Verify a package held in memory (a file's bytes): :func:`read_package`'s core."""
    if len(data) > max_bytes:
        raise OversizedPackage(f"{len(data)} bytes, limit {max_bytes}")
    meta, tensors = _split_container(data)
    return verify_package(
        meta[META_MANIFEST], meta[META_SIGNATURE], tensors, trusted, max_bytes
    )


def _decode_signature(signature_b64: str) -> bytes:
    try:
        sig = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedPackage("signature is not base64") from None
    if len(sig) != 64:
        raise MalformedPackage(f"signature has {len(sig)} bytes, Ed25519 needs 64")
    return sig


def _check_signature(manifest: Manifest, signature: bytes, trusted: KeyRing) -> None:
    key = trusted.key_for(manifest.site_id)
    if key is None:
        raise UnknownSigner(f"site {manifest.site_id!r} has no registered public key")
    if fingerprint(key) != manifest.signing_key:
        raise UnknownSigner(
            f"signed by key {manifest.signing_key}, but site {manifest.site_id!r} "
            f"is registered with key {fingerprint(key)}"
        )
    if not verify(key, signature, manifest.canonical_bytes()):
        raise BadSignature(
            f"signature does not match the manifest of site {manifest.site_id!r}"
        )


def expected_tensors(
    manifest: Manifest,
) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Names, shapes and dtypes the declared architecture has.

    The architecture is built on the meta device, once per distinct
    architecture (building it costs about a second; a coordinator verifies
    many packages of one architecture).
    """
    arch = manifest.architecture
    expected = _architecture_tensors(
        arch.name,
        canonical_json(dict(arch.kwargs)).decode(),
        tuple(manifest.noise.shape),
    )
    return dict(expected)


@functools.lru_cache(maxsize=16)
def _architecture_tensors(
    name: str, kwargs_json: str, noise_shape: tuple[int, ...]
) -> tuple[tuple[str, tuple[tuple[int, ...], torch.dtype]], ...]:
    try:
        with torch.device("meta"):
            model = build_generator(name, json.loads(kwargs_json))
    except Exception as exc:  # noqa: BLE001 (any failure of an untrusted spec)
        raise TensorMismatch(
            f"architecture {name!r} cannot be built: {type(exc).__name__}: "
            f"{str(exc)[:200]}"
        ) from None
    if tuple(model.noise_shape) != noise_shape:
        raise TensorMismatch(
            f"noise shape {list(noise_shape)} != model's {list(model.noise_shape)}"
        )
    return tuple((k, (tuple(v.shape), v.dtype)) for k, v in model.state_dict().items())


def _check_tensors(manifest: Manifest, tensors: Mapping[str, torch.Tensor]) -> None:
    expected = expected_tensors(manifest)
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise TensorMismatch(
            f"missing tensors {missing[:5]}, unexpected tensors {extra[:5]}"
        )
    for name, (shape, dtype) in expected.items():
        t = tensors[name]
        if tuple(t.shape) != shape or t.dtype != dtype:
            raise TensorMismatch(
                f"{name}: got {tuple(t.shape)} {t.dtype}, expected {shape} {dtype}"
            )


def verify_package(
    manifest_json: str,
    signature_b64: str,
    tensors: Mapping[str, torch.Tensor],
    trusted: KeyRing | None,
    max_bytes: int,
) -> GeneratorPackage:
    """Verify the three parts of a package, in order.

    Size, schema, signature, architecture (names, shapes, dtypes), weights hash.
    """
    n_bytes = sum(t.numel() * t.element_size() for t in tensors.values())
    if n_bytes + len(manifest_json) > max_bytes:
        raise OversizedPackage(f"{n_bytes} bytes of tensors, limit {max_bytes}")
    manifest = parse_manifest(manifest_json)
    signature = _decode_signature(signature_b64)
    if trusted is not None:
        _check_signature(manifest, signature, trusted)
    _check_tensors(manifest, tensors)
    digest = weights_sha256(tensors)
    if digest != manifest.weights.sha256:
        raise HashMismatch(
            f"weights hash {digest[:16]}… != manifest {manifest.weights.sha256[:16]}…"
        )
    return GeneratorPackage(
        manifest, dict(tensors), signature, signature_verified=trusted is not None
    )
