"""The manifest that describes a generator package, and its canonical bytes.

The manifest is everything the coordinator needs to rebuild and sample the
generator, plus provenance. It is the signed object: the signature covers its
canonical JSON, which includes the sha256 of the weights.
"""

from __future__ import annotations

import json
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import SchemaError, UnsupportedFormat

FORMAT_NAME = "medsynth-fl/generator"
# Bumped whenever the same tensors would mean a different generator, so an old
# package is refused rather than sampled wrongly. 2: PixelNorm in the generator's
# encoder and decoder stages (no new tensors, different function).
FORMAT_VERSION = 2
MAX_MANIFEST_BYTES = 64 * 1024


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Architecture(_Strict):
    """Registry name and constructor kwargs of the generator."""

    name: str
    kwargs: dict[str, int | bool | float | str]


class NoiseSpec(_Strict):
    """What a sampler must draw: standard-normal noise of ``shape`` plus a label."""

    distribution: Literal["standard_normal"] = "standard_normal"
    shape: list[int]


class WeightsInfo(_Strict):
    """Digest and size of the tensors."""

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    n_tensors: int = Field(ge=1)
    n_bytes: int = Field(ge=1)


class TrainingSummary(_Strict):
    """How the generator was made (aggregate facts only, no per-image data)."""

    stage: Literal["phase1", "phase2"]
    phase1_steps: int = Field(ge=0)
    phase2_steps: int = Field(ge=0)
    teacher_steps: int = Field(ge=0)
    n_images: int = Field(ge=0)
    # training images per class present: lets the coordinator weight sites
    # within a class as pooled data would (None in packages made before it)
    class_counts: dict[str, int] | None = None
    seconds: dict[str, float]
    config_digest: str


class Release(_Strict):
    """What binds a package to one request of one coordinator (replay protection).

    The coordinator issues a fresh nonce per node and round; the site signs it
    into the manifest it sends, so a package recorded once cannot be replayed in
    another round or run, nor re-sent by another site.
    """

    run_id: str = Field(min_length=1, max_length=128)
    round: int = Field(ge=1, le=1_000_000)
    nonce: str = Field(pattern=r"^[0-9a-f]{32}$")


class Manifest(_Strict):
    """Schema of ``manifest.json`` inside every package (``FORMAT_VERSION``)."""

    format: str
    format_version: int
    site_id: str = Field(min_length=1, max_length=128)
    created_utc: str
    architecture: Architecture
    image_size: int = Field(ge=8, le=1024)
    class_names: list[str] = Field(min_length=1)
    classes_present: list[str] = Field(min_length=1)
    noise: NoiseSpec
    weights: WeightsInfo
    training: TrainingSummary
    versions: dict[str, str]
    signing_key: str  # fingerprint of the site's Ed25519 public key
    release: Release | None = None  # set on the wire, never in the site's cache

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        unknown = set(self.classes_present) - set(self.class_names)
        if unknown:
            raise ValueError(f"classes_present not in class_names: {sorted(unknown)}")
        if self.architecture.kwargs.get("image_size") != self.image_size:
            raise ValueError("image_size differs from architecture.kwargs.image_size")
        if self.architecture.kwargs.get("num_classes") != len(self.class_names):
            raise ValueError("architecture.kwargs.num_classes differs from class_names")
        counts = self.training.class_counts
        if counts is not None:
            if set(counts) != set(self.classes_present):
                raise ValueError("training.class_counts must name classes_present")
            total = sum(counts.values())
            if min(counts.values()) < 1 or total != self.training.n_images:
                raise ValueError(
                    "training.class_counts must be positive and sum to n_images"
                )
        return self

    def canonical_bytes(self) -> bytes:
        """Deterministic JSON bytes.

        They are what the site signs and the coordinator verifies.
        """
        data = self.model_dump(mode="json")
        if data["release"] is None:  # unbound: the bytes packages always had
            del data["release"]
        return canonical_json(data)


def canonical_json(obj: Any) -> bytes:
    """Sorted-key, whitespace-free UTF-8 JSON."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True
    ).encode()


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Parsers disagree on which of two equal keys wins; the signed meaning
    # must be one, so a repeated key is refused rather than resolved.
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        repeated = sorted({k for k in keys if keys.count(k) > 1})
        raise SchemaError(f"manifest repeats key(s) {repeated[:5]}")
    return dict(pairs)


def _no_constant(name: str) -> float:
    raise SchemaError(f"manifest holds the non-standard JSON constant {name}")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise SchemaError(f"manifest number {text[:20]} overflows a float")
    return value


def parse_manifest(raw: str | bytes) -> Manifest:
    """Parse and validate manifest JSON; raise a named :class:`PackageRejected`."""
    if len(raw) > MAX_MANIFEST_BYTES:
        raise SchemaError(f"manifest is {len(raw)} bytes, limit {MAX_MANIFEST_BYTES}")
    try:
        data = json.loads(
            raw,
            object_pairs_hook=_unique_keys,
            parse_constant=_no_constant,
            parse_float=_finite_float,
        )
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SchemaError(f"manifest is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SchemaError("manifest must be a JSON object")
    if data.get("format") != FORMAT_NAME:
        raise UnsupportedFormat(
            f"format {data.get('format')!r}, expected {FORMAT_NAME!r}"
        )
    if data.get("format_version") != FORMAT_VERSION:
        raise UnsupportedFormat(
            f"format_version {data.get('format_version')!r}; "
            f"this release reads {FORMAT_VERSION}"
        )
    try:
        return Manifest.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "manifest"
        raise SchemaError(
            f"{where}: {first['msg']} ({len(err.errors())} problem(s))"
        ) from None
