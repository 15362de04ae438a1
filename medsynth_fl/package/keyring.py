"""The set of site public keys a verifier trusts."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .signing import SiteKeyError, load_public_key


class KeyRing:
    """Maps site ids to their registered Ed25519 public keys.

    ``KeyRing.single(key)`` trusts one key whatever the site id, which is what a
    user who received one package and its key out of band wants.
    """

    def __init__(
        self,
        keys: Mapping[str, Ed25519PublicKey],
        any_site: Ed25519PublicKey | None = None,
    ):
        self._keys = dict(keys)
        self._any = any_site

    @classmethod
    def single(cls, key: Ed25519PublicKey) -> KeyRing:
        """Trust ``key`` for any site id."""
        return cls({}, any_site=key)

    @classmethod
    def from_dir(cls, folder: Path) -> KeyRing:
        """Load ``<site_id>.pub`` PEM files from ``folder``."""
        if not folder.is_dir():
            raise SiteKeyError(f"site key folder not found: {folder}")
        keys = {p.stem: load_public_key(p) for p in sorted(folder.glob("*.pub"))}
        if not keys:
            raise SiteKeyError(f"no <site_id>.pub files in {folder}")
        return cls(keys)

    @property
    def site_ids(self) -> list[str]:
        """Registered site ids (empty for a single-key ring)."""
        return sorted(self._keys)

    def key_for(self, site_id: str) -> Ed25519PublicKey | None:
        """The key registered for ``site_id``, or None."""
        return self._any if self._any is not None else self._keys.get(site_id)
