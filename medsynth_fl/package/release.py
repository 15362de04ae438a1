"""Binding a package to one coordinator request, and checking that binding.

The coordinator sends each node a fresh nonce with its request for a
generator (:func:`issue_release`); the site re-signs its package's manifest with
that nonce, the run id and the round (:func:`bind_release`); the coordinator
accepts only a package that answers the request it sent to that node
(:func:`check_release`). Re-signing costs one Ed25519 signature: the site's
cached package and its weights are unchanged.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .errors import (
    BadSignature,
    ForeignNonce,
    StaleRound,
    UnboundPackage,
    UnissuedNonce,
    WrongRun,
)
from .io import GeneratorPackage
from .manifest import Manifest, Release
from .signing import fingerprint


def issue_release(run_id: str, server_round: int) -> Release:
    """A fresh challenge for one node: 128 random bits with the run and round."""
    return Release(run_id=run_id, round=server_round, nonce=secrets.token_hex(16))


def bind_release(
    pkg: GeneratorPackage, release: Release, key: Ed25519PrivateKey
) -> GeneratorPackage:
    """The same package with ``release`` in its manifest, signed again by the site."""
    if fingerprint(key.public_key()) != pkg.manifest.signing_key:
        raise BadSignature("the site key does not match the package's signing key")
    manifest = pkg.manifest.model_copy(update={"release": release})
    return GeneratorPackage(
        manifest,
        pkg.tensors,
        key.sign(manifest.canonical_bytes()),
        signature_verified=True,
    )


def check_release(
    manifest: Manifest, expected: Release, issued: Mapping[str, int]
) -> None:
    """Refuse, by name, a verified manifest that does not answer ``expected``.

    Parameters
    ----------
    manifest : the verified manifest a node sent.
    expected : the challenge this coordinator sent that node.
    issued : every nonce issued in this round → the node it was sent to.
    """
    got = manifest.release
    if got is None:
        raise UnboundPackage(
            f"site {manifest.site_id!r} sent a package bound to no request "
            "(a stored package sent again, or a site release without nonces)"
        )
    if got.run_id != expected.run_id:
        raise WrongRun(f"bound to run {got.run_id!r}, this is {expected.run_id!r}")
    if got.round != expected.round:
        raise StaleRound(f"bound to round {got.round}, this is round {expected.round}")
    if got.nonce != expected.nonce:
        if got.nonce in issued:
            raise ForeignNonce(
                f"answers the request sent to node {issued[got.nonce]}: "
                f"site {manifest.site_id!r}'s package re-sent by another node"
            )
        raise UnissuedNonce("carries a nonce this coordinator never issued")
