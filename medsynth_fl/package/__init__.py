"""Generator packages: safetensors weights + signed JSON manifest, strictly verified."""

from .errors import (
    BadSignature,
    HashMismatch,
    MalformedPackage,
    OversizedPackage,
    PackageRejected,
    SchemaError,
    TensorMismatch,
    UnknownSigner,
    UnsupportedFormat,
)
from .io import (
    GeneratorPackage,
    create_package,
    parse_package,
    read_package,
    verify_package,
    weights_sha256,
    write_package,
)
from .keyring import KeyRing
from .manifest import FORMAT_VERSION, Manifest, TrainingSummary
from .signing import (
    SiteKeyError,
    fingerprint,
    generate_site_key,
    load_private_key,
    load_public_key,
)

__all__ = [
    "FORMAT_VERSION",
    "BadSignature",
    "GeneratorPackage",
    "HashMismatch",
    "KeyRing",
    "MalformedPackage",
    "Manifest",
    "OversizedPackage",
    "PackageRejected",
    "SchemaError",
    "SiteKeyError",
    "TensorMismatch",
    "TrainingSummary",
    "UnknownSigner",
    "UnsupportedFormat",
    "create_package",
    "fingerprint",
    "generate_site_key",
    "load_private_key",
    "load_public_key",
    "parse_package",
    "read_package",
    "verify_package",
    "weights_sha256",
    "write_package",
]
