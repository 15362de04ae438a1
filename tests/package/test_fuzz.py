"""The package loader under fuzzing, and the holes fuzzing found, as known answers."""

from __future__ import annotations

import json
import time

import pytest

from medsynth_fl.config import load_config
from medsynth_fl.package import (
    SchemaError,
    TensorMismatch,
    parse_package,
)
from medsynth_fl.package.fuzz import MUTATORS, Case, judge, make_seeds, run_cases
from medsynth_fl.package.io import package_bytes, weights_sha256
from medsynth_fl.package.manifest import parse_manifest


@pytest.fixture(scope="module")
def seeds():
    return make_seeds(load_config("tiny"))


def test_five_hundred_mutated_packages_end_in_named_refusals(seeds):
    pair, ring, stranger = seeds
    report = run_cases(pair, ring, stranger, 500, seed=7, time_limit_s=10.0)
    assert report.crashes == [] and report.hangs == []
    assert report.cases == 500
    assert set(report.by_mutator) == set(MUTATORS)  # every mutator was exercised
    assert sum(report.refusals.values()) + report.accepted == 500
    # the refusals are spread over the loader's named causes, not one catch-all
    assert {"malformed", "schema", "hash-mismatch", "tensor-mismatch"} <= set(
        report.refusals
    )
    assert {"bad-signature", "unknown-signer"} <= set(report.refusals)


def test_the_oracle_catches_a_loader_that_accepts_what_nobody_signed(seeds):
    (a, b), ring, _ = seeds
    # a's untouched file, but the case says only b's package may come back
    wrong = Case("test", a.data, ((b.package.manifest.canonical_bytes(), "x"),))
    with pytest.raises(AssertionError, match="never signed"):
        judge(wrong, ring, 16 * 1024**2)
    right = Case(
        "test",
        a.data,
        ((a.package.manifest.canonical_bytes(), a.package.manifest.weights.sha256),),
    )
    assert judge(right, ring, 16 * 1024**2) == "accepted"


def _manifest(pkg) -> dict:
    return json.loads(pkg.manifest.canonical_bytes())


def test_a_repeated_manifest_key_is_refused_whichever_value_comes_last(seeds):
    (a, _), _, _ = seeds
    text = a.package.manifest.canonical_bytes().decode()
    for doubled in (text[:-1] + ',"site_id":"site-b"}', '{"site_id":"x",' + text[1:]):
        with pytest.raises(SchemaError, match="repeats key"):
            parse_manifest(doubled)


@pytest.mark.parametrize("number", ["NaN", "Infinity", "1e999"])
def test_non_finite_numbers_in_a_manifest_are_refused(seeds, number):
    (a, _), _, _ = seeds
    text = a.package.manifest.canonical_bytes().decode()
    with pytest.raises(SchemaError, match="constant|overflows"):
        parse_manifest(text[:-1] + f',"x":{number}' + "}")


def test_a_signed_manifest_asking_for_a_billion_blocks_is_refused_at_once(seeds):
    """Fuzzing found it: the meta-device build looped over 10^400 blocks (a hang)."""
    (a, _), ring, _ = seeds
    manifest = _manifest(a.package)
    arch = manifest["architecture"]["kwargs"]
    key = "n_res_blocks" if "n_res_blocks" in arch else "ngf"
    arch[key] = 10**400
    from medsynth_fl.package.fuzz import _repack, _sign

    text, sig = _sign(a.key, manifest)
    t0 = time.perf_counter()
    with pytest.raises(TensorMismatch, match="outside"):
        parse_package(_repack(a, manifest_text=text, signature=sig), ring)
    assert time.perf_counter() - t0 < 5


def test_package_bytes_are_what_write_package_writes(seeds, tmp_path):
    from medsynth_fl.package import write_package

    (a, _), ring, _ = seeds
    path = write_package(a.package, tmp_path / "a.msfl")
    # safetensors may order its header differently per call: compare contents
    for data in (path.read_bytes(), package_bytes(a.package), a.data):
        read = parse_package(data, ring)
        assert read.manifest == a.package.manifest
        assert read.manifest.weights.sha256 == weights_sha256(read.tensors)
