"""Typed refusals: every way a generator package can be rejected, by cause."""

from __future__ import annotations


class PackageRejected(ValueError):
    """A generator package failed verification; ``reason`` is a short cause code."""

    reason = "rejected"

    def __init__(self, detail: str):
        super().__init__(f"package rejected ({self.reason}): {detail}")
        self.detail = detail


class OversizedPackage(PackageRejected):
    """Larger than the configured size limit."""

    reason = "oversized"


class MalformedPackage(PackageRejected):
    """Not a readable package: truncated, not safetensors, bad header."""

    reason = "malformed"


class SchemaError(PackageRejected):
    """The manifest is missing fields, has unknown ones, or wrong types/values."""

    reason = "schema"


class UnsupportedFormat(PackageRejected):
    """A format name or version this release cannot read."""

    reason = "unsupported-format"


class TensorMismatch(PackageRejected):
    """Tensor names, shapes or dtypes differ from the declared architecture."""

    reason = "tensor-mismatch"


class HashMismatch(PackageRejected):
    """The weights do not hash to the manifest's sha256."""

    reason = "hash-mismatch"


class BadSignature(PackageRejected):
    """The Ed25519 signature does not verify against the site's public key."""

    reason = "bad-signature"


class UnknownSigner(PackageRejected):
    """Signed by a key that is not among the trusted site keys."""

    reason = "unknown-signer"


class ReplayRefused(PackageRejected):
    """A valid package that does not answer this coordinator's request."""

    reason = "replay"


class UnboundPackage(ReplayRefused):
    """Not bound to any request: a stored package sent again."""

    reason = "unbound"


class WrongRun(ReplayRefused):
    """Bound to another run of the coordinator."""

    reason = "wrong-run"


class StaleRound(ReplayRefused):
    """Bound to an earlier (or later) round of this run."""

    reason = "stale-round"


class ForeignNonce(ReplayRefused):
    """Answers the request sent to another node: re-sent by another site."""

    reason = "nonce-of-another-node"


class UnissuedNonce(ReplayRefused):
    """Carries a nonce this coordinator never issued."""

    reason = "unissued-nonce"
