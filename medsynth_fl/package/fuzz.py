"""A mutation fuzzer for the package loader: every case must be refused by name.

Starting from real signed packages, each case damages one in a way an attacker
or a broken disk could: flipped, truncated, extended or spliced bytes; a
rewritten safetensors header; a manifest with changed types, sizes, shapes,
dtypes, unicode, huge numbers or duplicate keys; tensors swapped between two
packages, recast or renamed; a manifest re-signed by a wrong or unknown key.

The oracle (:func:`judge`) accepts two endings only:

- a named refusal, a :class:`~medsynth_fl.package.errors.PackageRejected`;
- a verified package identical to one its site signed: the original, or the
  mutated content in the cases that re-sign it with the site's own key (a site
  may publish a new package; it must then read back exactly as signed).

Anything else is a crash. Cases are reproducible from ``(seed, index)``;
:func:`run_cases` runs them in this process with a per-case alarm, so a hang
is caught as one.
"""

from __future__ import annotations

import base64
import json
import signal
import struct
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .errors import PackageRejected
from .io import (
    META_MANIFEST,
    META_SIGNATURE,
    GeneratorPackage,
    package_bytes,
    parse_package,
    weights_sha256,
)
from .keyring import KeyRing
from .manifest import canonical_json
from .signing import fingerprint


@dataclass(frozen=True)
class Seed:
    """A real package, its file bytes and the key of the site that signed it."""

    package: GeneratorPackage
    data: bytes
    key: Ed25519PrivateKey


@dataclass(frozen=True)
class Case:
    """One mutated file and what a correct loader may return for it."""

    mutator: str
    data: bytes
    # canonical manifest and weights hash of every package the site signed
    # that this case may legitimately read back as
    may_equal: tuple[tuple[bytes, str], ...]


@dataclass
class FuzzReport:
    """Outcomes of a fuzzing run."""

    cases: int = 0
    accepted: int = 0
    refusals: Counter = field(default_factory=Counter)  # reason → count
    by_mutator: dict[str, Counter] = field(default_factory=dict)
    crashes: list[dict] = field(default_factory=list)
    hangs: list[dict] = field(default_factory=list)
    slowest_s: float = 0.0

    def as_dict(self) -> dict:
        """JSON form."""
        return {
            "cases": self.cases,
            "accepted_identical": self.accepted,
            "refusals_by_reason": dict(sorted(self.refusals.items())),
            "by_mutator": {m: dict(c) for m, c in sorted(self.by_mutator.items())},
            "crashes": len(self.crashes),
            "crash_examples": self.crashes[:20],
            "hangs": len(self.hangs),
            "hang_examples": self.hangs[:20],
            "slowest_case_s": round(self.slowest_s, 4),
        }


def _identity(pkg: GeneratorPackage) -> tuple[bytes, str]:
    return pkg.manifest.canonical_bytes(), pkg.manifest.weights.sha256


def make_seeds(
    cfg, site_ids: tuple[str, str] = ("site-a", "site-b")
) -> tuple[tuple[Seed, Seed], KeyRing, Ed25519PrivateKey]:
    """Two packages of ``cfg``'s generator architecture, signed by two sites.

    Returns the seeds, a key ring trusting both sites, and a stranger's key.
    The weights are freshly initialised: no check of the loader depends on
    how a generator was trained.
    """
    from ..models.registry import build_generator, generator_kwargs
    from .io import create_package
    from .manifest import TrainingSummary

    kwargs = generator_kwargs(cfg.generator, cfg.data.image_size, len(cfg.data.classes))
    names = list(cfg.data.classes)
    summary = TrainingSummary(
        stage="phase2",
        phase1_steps=1,
        phase2_steps=1,
        teacher_steps=1,
        n_images=100,
        seconds={"phase1": 1.0},
        config_digest="fuzz",
    )
    seeds, keys = [], {}
    for i, site in enumerate(site_ids):
        torch.manual_seed(i)
        key = Ed25519PrivateKey.generate()
        pkg = create_package(
            build_generator(cfg.generator.arch, kwargs),
            cfg.generator.arch,
            kwargs,
            site_id=site,
            class_names=names,
            classes_present=names[: max(1, len(names) - i)],
            training=summary,
            key=key,
        )
        seeds.append(Seed(pkg, package_bytes(pkg), key))
        keys[site] = key.public_key()
    return (seeds[0], seeds[1]), KeyRing(keys), Ed25519PrivateKey.generate()


# -- container helpers ----------------------------------------------------------
def _header(data: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def _container(header: dict | str, body: bytes) -> bytes:
    raw = header if isinstance(header, str) else json.dumps(header)
    encoded = raw.encode()
    return struct.pack("<Q", len(encoded)) + encoded + body


def _repack(
    seed: Seed,
    tensors: dict[str, torch.Tensor] | None = None,
    manifest_text: str | None = None,
    signature: str | None = None,
) -> bytes:
    """The seed's file with some parts replaced (no validation: that is the point)."""
    meta = {
        META_MANIFEST: manifest_text
        if manifest_text is not None
        else seed.package.manifest.canonical_bytes().decode(),
        META_SIGNATURE: signature
        if signature is not None
        else seed.package.signature_b64,
    }
    return st_save(tensors if tensors is not None else seed.package.tensors, meta)


def _sign(key: Ed25519PrivateKey, manifest: dict) -> tuple[str, str]:
    """Canonical manifest text and its base64 signature by ``key``."""
    text = canonical_json(manifest).decode()
    return text, base64.b64encode(key.sign(text.encode())).decode()


# -- value mutations for JSON -------------------------------------------------------
HOSTILE_VALUES: tuple = (
    None,
    True,
    0,
    -1,
    2**63,
    2**64 + 1,
    10**400,
    1e308,
    -1e308,
    "",
    "\u202e\u0000\ud7ff",
    "é" * 5000,
    "A" * 70_000,
    [],
    {},
    [1] * 10_000,
    {"a": {"b": {"c": []}}},
    "1e309",
    "NaN",
)


def _paths(obj, prefix=()) -> list[tuple]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, prefix + (i,))
    return out


def _set(obj, path: tuple, value):
    if not path:
        return value
    target = obj
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = value
    return obj


def _hostile(rng: np.random.Generator, old):
    """A value of another type or an extreme one of the same type."""
    choice = rng.integers(0, 4)
    if choice == 0 and isinstance(old, int) and not isinstance(old, bool):
        return int(old * rng.choice([-1, 0, 2, 10**6, 2**40]))
    if choice == 1 and isinstance(old, str):
        return old[::-1] + rng.choice(["", "\x00", "é", "../../etc", old])
    if choice == 2 and isinstance(old, list):
        return old + old if rng.random() < 0.5 else old[:-1]
    return HOSTILE_VALUES[rng.integers(0, len(HOSTILE_VALUES))]


def _mutated_manifest(rng: np.random.Generator, seed: Seed) -> dict:
    manifest = json.loads(seed.package.manifest.canonical_bytes())
    paths = _paths(manifest)[1:]
    for _ in range(int(rng.integers(1, 4))):
        path = paths[rng.integers(0, len(paths))]
        try:
            old = manifest
            for p in path:
                old = old[p]
        except (KeyError, IndexError, TypeError):
            continue  # an earlier edit removed it
        action = rng.integers(0, 10)
        if action == 0 and isinstance(path[-1], str):  # delete the key
            parent = manifest
            for p in path[:-1]:
                parent = parent[p]
            parent.pop(path[-1], None)
        elif action == 1:  # an unknown key beside it
            parent = manifest
            for p in path[:-1]:
                parent = parent[p]
            if isinstance(parent, dict):
                parent["x_" + str(rng.integers(0, 99))] = _hostile(rng, None)
        else:
            try:
                manifest = _set(manifest, path, _hostile(rng, old))
            except (KeyError, IndexError, TypeError):
                continue  # an earlier edit changed the container on this path
    return manifest


# -- mutators -------------------------------------------------------------------------
Mutator = Callable[[np.random.Generator, Seed, Seed, Ed25519PrivateKey], Case]


def _keep(seed: Seed, mutator: str, data: bytes) -> Case:
    return Case(mutator, data, (_identity(seed.package),))


def bitflip(rng, a: Seed, b: Seed, stranger) -> Case:
    """Flip 1-16 random bits anywhere in the file."""
    buf = bytearray(a.data)
    for _ in range(int(rng.integers(1, 17))):
        i = int(rng.integers(0, len(buf)))
        buf[i] ^= 1 << int(rng.integers(0, 8))
    return _keep(a, "bitflip", bytes(buf))


def header_bitflip(rng, a: Seed, b: Seed, stranger) -> Case:
    """Flip bits inside the JSON header, where the manifest and offsets are."""
    (n,) = struct.unpack("<Q", a.data[:8])
    buf = bytearray(a.data)
    for _ in range(int(rng.integers(1, 5))):
        i = int(rng.integers(8, 8 + n))
        buf[i] ^= 1 << int(rng.integers(0, 8))
    return _keep(a, "header_bitflip", bytes(buf))


def truncate(rng, a: Seed, b: Seed, stranger) -> Case:
    """Cut the file short at a random point."""
    return _keep(a, "truncate", a.data[: int(rng.integers(0, len(a.data)))])


def extend(rng, a: Seed, b: Seed, stranger) -> Case:
    """Append random bytes (or a second copy of the file)."""
    tail = a.data if rng.random() < 0.2 else rng.bytes(int(rng.integers(1, 4097)))
    return _keep(a, "extend", a.data + tail)


def splice(rng, a: Seed, b: Seed, stranger) -> Case:
    """Overwrite a random range of one package with a range of the other."""
    n = int(rng.integers(1, 4096))
    i = int(rng.integers(0, max(1, len(a.data) - n)))
    j = int(rng.integers(0, max(1, len(b.data) - n)))
    return _keep(a, "splice", a.data[:i] + b.data[j : j + n] + a.data[i + n :])


def header_length(rng, a: Seed, b: Seed, stranger) -> Case:
    """Rewrite the 8-byte header length: zero, off by a few, huge."""
    (n,) = struct.unpack("<Q", a.data[:8])
    value = int(rng.choice([0, 1, n - 1, n + 1, n + 8, len(a.data), 2**32, 2**63 - 1]))
    return _keep(a, "header_length", struct.pack("<Q", max(value, 0)) + a.data[8:])


def safetensors_header(rng, a: Seed, b: Seed, stranger) -> Case:
    """Rewrite one tensor's dtype, shape or data offsets in the container header."""
    header, body = _header(a.data)
    name = sorted(k for k in header if k != "__metadata__")[
        int(rng.integers(0, len(header) - 1))
    ]
    entry = header[name]
    field_ = ["dtype", "shape", "data_offsets"][int(rng.integers(0, 3))]
    if field_ == "dtype":
        entry["dtype"] = str(rng.choice(["F16", "F64", "I8", "BOOL", "U8", "XX", ""]))
    elif field_ == "shape":
        entry["shape"] = [int(x) for x in rng.integers(-2, 2**20, rng.integers(0, 5))]
    else:
        lo, hi = entry["data_offsets"]
        entry["data_offsets"] = [
            int(lo + rng.integers(-64, 64)),
            int(hi + rng.choice([-4, 4, 2**40])),
        ]
    return _keep(a, "safetensors_header", _container(header, body))


def manifest_edit(rng, a: Seed, b: Seed, stranger) -> Case:
    """Change types, sizes, shapes, unicode or numbers; keep the old signature."""
    manifest = _mutated_manifest(rng, a)
    text = (
        json.dumps(manifest)
        if rng.random() < 0.5
        else canonical_json(manifest).decode()
    )
    return _keep(a, "manifest_edit", _repack(a, manifest_text=text))


def manifest_edit_resigned(rng, a: Seed, b: Seed, stranger) -> Case:
    """The same edits, re-signed with the site's own key (a new release).

    It may verify only if the edit is still a valid manifest for these exact
    tensors, and must then read back exactly as signed.
    """
    manifest = _mutated_manifest(rng, a)
    text, sig = _sign(a.key, manifest)
    weights = manifest.get("weights")
    sha = weights.get("sha256") if isinstance(weights, dict) else None
    signed = (text.encode(), sha if isinstance(sha, str) else "")
    return Case(
        "manifest_edit_resigned",
        _repack(a, manifest_text=text, signature=sig),
        (signed,),
    )


def duplicate_key(rng, a: Seed, b: Seed, stranger) -> Case:
    """Repeat a manifest key with another value (parsers disagree on which wins)."""
    manifest = json.loads(a.package.manifest.canonical_bytes())
    key = sorted(manifest)[int(rng.integers(0, len(manifest)))]
    text = canonical_json(manifest).decode()
    other = json.dumps(_hostile(rng, manifest[key]))
    duplicated = text[:-1] + f',"{key}":{other}' + "}"
    if rng.random() < 0.5:  # first occurrence hostile, the signed value last
        duplicated = "{" + f'"{key}":{other},' + text[1:]
    # signing the duplicated text with the site's key: still one meaning only
    sig = base64.b64encode(a.key.sign(duplicated.encode())).decode()
    return Case(
        "duplicate_key",
        _repack(a, manifest_text=duplicated, signature=sig),
        (),  # ambiguous JSON must be refused whoever signed it
    )


def swap_tensor(rng, a: Seed, b: Seed, stranger) -> Case:
    """Put the other package's tensor (or another of this one) under a name."""
    tensors = dict(a.package.tensors)
    name = sorted(tensors)[int(rng.integers(0, len(tensors)))]
    donors = b.package.tensors if rng.random() < 0.5 else a.package.tensors
    donor = sorted(donors)[int(rng.integers(0, len(donors)))]
    tensors[name] = donors[donor].clone()
    return _keep(a, "swap_tensor", _repack(a, tensors=tensors))


def swap_tensor_resigned(rng, a: Seed, b: Seed, stranger) -> Case:
    """Swap a tensor, fix the manifest's hash and re-sign with the site's key."""
    tensors = dict(a.package.tensors)
    name = sorted(tensors)[int(rng.integers(0, len(tensors)))]
    donor = b.package.tensors.get(name, tensors[name])
    tensors[name] = donor.clone()
    manifest = json.loads(a.package.manifest.canonical_bytes())
    manifest["weights"]["sha256"] = weights_sha256(tensors)
    text, sig = _sign(a.key, manifest)
    return Case(
        "swap_tensor_resigned",
        _repack(a, tensors=tensors, manifest_text=text, signature=sig),
        ((text.encode(), manifest["weights"]["sha256"]),),
    )


def recast_tensor(rng, a: Seed, b: Seed, stranger) -> Case:
    """Change a tensor's dtype, shape, or drop, rename or add one."""
    tensors = dict(a.package.tensors)
    name = sorted(tensors)[int(rng.integers(0, len(tensors)))]
    action = int(rng.integers(0, 5))
    if action == 0:
        dtype = [torch.float16, torch.float64, torch.int8, torch.bfloat16][
            int(rng.integers(0, 4))
        ]
        tensors[name] = tensors[name].to(dtype)
    elif action == 1:
        tensors[name] = tensors[name].reshape(-1).contiguous()
    elif action == 2:
        del tensors[name]
    elif action == 3:
        tensors[name + ".x"] = tensors.pop(name)
    else:
        tensors["critic.weight"] = torch.zeros(3, 3)
    return _keep(a, "recast_tensor", _repack(a, tensors=tensors))


def resign_wrong_key(rng, a: Seed, b: Seed, stranger) -> Case:
    """Re-sign with another site's key or a stranger's (fingerprint updated or not)."""
    manifest = json.loads(a.package.manifest.canonical_bytes())
    key = b.key if rng.random() < 0.5 else stranger
    if rng.random() < 0.5:
        manifest["signing_key"] = fingerprint(key.public_key())
    if rng.random() < 0.3:
        manifest["site_id"] = b.package.manifest.site_id  # claim to be the other
    text, sig = _sign(key, manifest)
    # Site b signing a package that names site b and b's key is b's own
    # release (of a's weights): valid here; a replay across sites is refused
    # by the coordinator's round binding, not by the loader.
    own = (
        key is b.key
        and manifest["site_id"] == b.package.manifest.site_id
        and manifest["signing_key"] == fingerprint(key.public_key())
    )
    return Case(
        "resign_wrong_key",
        _repack(a, manifest_text=text, signature=sig),
        ((text.encode(), manifest["weights"]["sha256"]),) if own else (),
    )


def signature_edit(rng, a: Seed, b: Seed, stranger) -> Case:
    """Damage the signature text: not base64, wrong length, the other's."""
    sig = a.package.signature_b64
    options = [
        "",
        sig[:-4],
        sig + "AAAA",
        "!" * len(sig),
        b.package.signature_b64,
        sig.swapcase(),
    ]
    return _keep(
        a,
        "signature_edit",
        _repack(a, signature=options[int(rng.integers(0, len(options)))]),
    )


MUTATORS: dict[str, Mutator] = {
    f.__name__: f
    for f in (
        bitflip,
        header_bitflip,
        truncate,
        extend,
        splice,
        header_length,
        safetensors_header,
        manifest_edit,
        manifest_edit_resigned,
        duplicate_key,
        swap_tensor,
        swap_tensor_resigned,
        recast_tensor,
        resign_wrong_key,
        signature_edit,
    )
}


def make_case(
    index: int, seed: int, seeds: tuple[Seed, Seed], stranger: Ed25519PrivateKey
) -> Case:
    """Case ``index`` of the run ``seed``: one mutator, on one of the two seeds."""
    rng = np.random.default_rng([seed, index])
    names = sorted(MUTATORS)
    a, b = seeds if rng.random() < 0.5 else seeds[::-1]
    return MUTATORS[names[int(rng.integers(0, len(names)))]](rng, a, b, stranger)


# -- oracle and runner ------------------------------------------------------------
class CaseTimeout(Exception):
    """A case ran past its time limit."""


def judge(case: Case, trusted: KeyRing, max_bytes: int) -> str:
    """``"accepted"`` or ``"refused:<reason>"``; raise on a wrong ending."""
    try:
        pkg = parse_package(case.data, trusted, max_bytes)
    except PackageRejected as refusal:
        return f"refused:{refusal.reason}"
    if not pkg.signature_verified:
        raise AssertionError("accepted without a verified signature")
    identity = _identity(pkg)
    if identity not in case.may_equal:
        raise AssertionError("accepted a package its site never signed")
    if weights_sha256(pkg.tensors) != pkg.manifest.weights.sha256:
        raise AssertionError("accepted tensors that do not hash to the manifest")
    tensors = st_load(case.data)
    if set(tensors) != set(pkg.tensors) or any(
        not torch.equal(tensors[k], pkg.tensors[k]) for k in tensors
    ):
        raise AssertionError("returned tensors differ from the file's")
    return "accepted"


def _alarm(signum, frame):
    raise CaseTimeout()


def run_cases(
    seeds: tuple[Seed, Seed],
    trusted: KeyRing,
    stranger: Ed25519PrivateKey,
    n_cases: int,
    seed: int = 0,
    start: int = 0,
    time_limit_s: float = 10.0,
    max_bytes: int = 16 * 1024**2,
    progress: Callable[[int], None] | None = None,
) -> FuzzReport:
    """Run cases ``start .. start + n_cases`` of run ``seed`` and tally them.

    A case over ``time_limit_s`` (SIGALRM) is a hang; any exception other than
    a named refusal, or an acceptance the oracle rejects, is a crash. Both are
    recorded with their case index so they can be replayed.
    """
    report = FuzzReport()
    previous = signal.signal(signal.SIGALRM, _alarm)
    try:
        for index in range(start, start + n_cases):
            case = make_case(index, seed, seeds, stranger)
            counts = report.by_mutator.setdefault(case.mutator, Counter())
            t0 = time.perf_counter()
            signal.setitimer(signal.ITIMER_REAL, time_limit_s)
            try:
                outcome = judge(case, trusted, max_bytes)
            except CaseTimeout:
                report.hangs.append({"index": index, "mutator": case.mutator})
                outcome = "hang"
            except Exception as exc:  # noqa: BLE001 (the fuzzer's purpose)
                report.crashes.append(
                    {
                        "index": index,
                        "mutator": case.mutator,
                        "error": f"{type(exc).__name__}: {str(exc)[:300]}",
                    }
                )
                outcome = "crash"
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            report.slowest_s = max(report.slowest_s, time.perf_counter() - t0)
            report.cases += 1
            counts[outcome] += 1
            if outcome == "accepted":
                report.accepted += 1
            elif outcome.startswith("refused:"):
                report.refusals[outcome.removeprefix("refused:")] += 1
            if progress is not None:
                progress(index)
    finally:
        signal.signal(signal.SIGALRM, previous)
    return report
