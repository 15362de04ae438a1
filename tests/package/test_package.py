import base64
import json
import struct

import pytest
import torch
from safetensors.torch import save as st_save

from medsynth_fl.config import GeneratorConfig
from medsynth_fl.models.generator import AttentionGenerator
from medsynth_fl.models.registry import generator_kwargs
from medsynth_fl.package import (
    BadSignature,
    HashMismatch,
    KeyRing,
    MalformedPackage,
    OversizedPackage,
    SchemaError,
    TensorMismatch,
    TrainingSummary,
    UnknownSigner,
    UnsupportedFormat,
    create_package,
    generate_site_key,
    read_package,
    verify_package,
    write_package,
)
from medsynth_fl.package.io import META_MANIFEST, META_SIGNATURE

CLASSES = ["MEL", "NV", "BCC"]
SUMMARY = TrainingSummary(
    stage="phase2",
    phase1_steps=1,
    phase2_steps=1,
    teacher_steps=1,
    n_images=10,
    seconds={"phase1": 1.0},
    config_digest="abc",
)


def make_package(key, site_id="site-a", **gen_overrides):
    cfg = GeneratorConfig(ngf=4, embed_dim=4, **gen_overrides)
    kwargs = generator_kwargs(cfg, 16, len(CLASSES))
    g = AttentionGenerator(**kwargs)
    return g, create_package(
        g,
        "attention",
        kwargs,
        site_id=site_id,
        class_names=CLASSES,
        classes_present=["MEL", "NV"],
        training=SUMMARY,
        key=key,
    )


@pytest.fixture
def signed(tmp_path, site_key):
    key, pub = site_key
    g, pkg = make_package(key)
    path = write_package(pkg, tmp_path / "g.msfl")
    return g, pkg, path, KeyRing.single(key.public_key())


def rewrite(path, tensors=None, manifest=None, signature=None):
    """Write a package file with some parts replaced (an attacker's edit)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        orig = {k: f.get_tensor(k) for k in f.keys()}
    meta = dict(meta)
    if manifest is not None:
        meta[META_MANIFEST] = (
            manifest if isinstance(manifest, str) else json.dumps(manifest)
        )
    if signature is not None:
        meta[META_SIGNATURE] = signature
    path.write_bytes(st_save(tensors if tensors is not None else orig, metadata=meta))


def test_round_trip_rebuilds_identical_generator(signed):
    g, pkg, path, ring = signed
    loaded = read_package(path, ring)
    assert loaded.signature_verified
    assert loaded.manifest == pkg.manifest
    g2 = loaded.build_generator()
    y = torch.tensor([0, 1])
    gen = torch.Generator().manual_seed(0)
    torch.testing.assert_close(
        g.eval()(g.sample_noise(2, gen), y),
        g2(g2.sample_noise(2, torch.Generator().manual_seed(0)), y),
    )


def test_packages_are_read_and_written_from_string_paths_too(signed, tmp_path):
    _, pkg, path, ring = signed
    copy = write_package(pkg, str(tmp_path / "copy.msfl"))

    assert read_package(str(copy), ring).manifest == read_package(path).manifest
    with pytest.raises(FileNotFoundError, match="package not found"):
        read_package(str(tmp_path / "missing.msfl"))


def test_manifest_declares_what_sampling_needs(signed):
    m = signed[1].manifest
    assert m.noise.shape == [3, 4, 4] and m.class_names == CLASSES
    assert m.architecture.kwargs["image_size"] == 16 == m.image_size


def test_package_holds_only_the_generator_state_dict(signed):
    g, pkg, _, _ = signed
    assert set(pkg.tensors) == set(g.state_dict())
    assert not any(
        ("critic" in k) or ("teacher" in k) or ("opt" in k) for k in pkg.tensors
    )


def test_truncated_package_is_refused(signed):
    _, _, path, ring = signed
    data = path.read_bytes()
    for cut in (4, 100, len(data) - 10):
        path.write_bytes(data[:cut])
        with pytest.raises(MalformedPackage):
            read_package(path, ring)


def test_not_a_package_is_refused(tmp_path):
    path = tmp_path / "x.msfl"
    path.write_bytes(struct.pack("<Q", 2) + b"{}")
    with pytest.raises(MalformedPackage, match="lacks"):
        read_package(path)


def test_oversized_package_is_refused_before_reading(signed):
    _, _, path, ring = signed
    with pytest.raises(OversizedPackage):
        read_package(path, ring, max_bytes=1024)


def test_tampered_weights_fail_the_hash(signed):
    g, pkg, path, ring = signed
    tensors = {k: v.clone() for k, v in pkg.tensors.items()}
    tensors["class_canvas"] += 0.01
    rewrite(path, tensors=tensors)
    with pytest.raises(HashMismatch):
        read_package(path, ring)


def test_tampered_manifest_fails_the_signature(signed):
    _, pkg, path, ring = signed
    manifest = pkg.manifest.model_dump(mode="json")
    manifest["classes_present"] = CLASSES
    rewrite(path, manifest=manifest)
    with pytest.raises(BadSignature):
        read_package(path, ring)


def test_package_signed_by_another_key_is_refused(signed, tmp_path):
    _, _, path, _ = signed
    other = generate_site_key(tmp_path / "other.pem")
    with pytest.raises(UnknownSigner):
        read_package(path, KeyRing.single(other.public_key()))


def test_unregistered_site_is_refused(signed, tmp_path):
    _, _, path, _ = signed
    other = generate_site_key(tmp_path / "other.pem")
    with pytest.raises(UnknownSigner, match="no registered"):
        read_package(path, KeyRing({"site-b": other.public_key()}))


def test_extra_tensor_is_refused_even_if_resigned(tmp_path, site_key):
    """A site that tries to ship its critic alongside.

    Names must match the architecture.
    """
    key, _ = site_key
    g, pkg = make_package(key)
    tensors = dict(pkg.tensors, **{"critic.fc1.weight": torch.zeros(2, 2)})
    from medsynth_fl.package.io import weights_sha256

    manifest = json.loads(pkg.manifest.canonical_bytes())
    manifest["weights"]["sha256"] = weights_sha256(tensors)
    from medsynth_fl.package.manifest import canonical_json

    sig = base64.b64encode(key.sign(canonical_json(manifest))).decode()
    with pytest.raises(TensorMismatch, match="unexpected"):
        verify_package(
            json.dumps(manifest), sig, tensors, KeyRing.single(key.public_key()), 10**9
        )


def test_shape_mismatch_is_refused(signed):
    g, pkg, path, ring = signed
    tensors = dict(pkg.tensors)
    tensors["class_canvas"] = torch.zeros(3, 3, 8, 8)
    rewrite(path, tensors=tensors)
    with pytest.raises(TensorMismatch, match="class_canvas"):
        read_package(path, ring)


@pytest.mark.parametrize(
    "edit,error",
    [
        (lambda m: m.pop("site_id"), SchemaError),
        (lambda m: m.update(extra_field=1), SchemaError),
        (lambda m: m.update(format_version=99), UnsupportedFormat),
        (lambda m: m.update(format="something-else"), UnsupportedFormat),
        (lambda m: m["architecture"].update(name="evil"), TensorMismatch),
        (lambda m: m.update(classes_present=["XYZ"]), SchemaError),
        # per-class counts must name the classes present and add up to n_images
        (lambda m: m["training"].update(class_counts={"MEL": 1}), SchemaError),
        (
            lambda m: m["training"].update(class_counts={"MEL": 0, "NV": 10}),
            SchemaError,
        ),
        (
            lambda m: m["training"].update(class_counts={"MEL": 3, "NV": 3}),
            SchemaError,
        ),
    ],
)
def test_malformed_manifests_are_refused_with_a_named_cause(signed, edit, error):
    _, pkg, path, _ = signed
    manifest = pkg.manifest.model_dump(mode="json")
    edit(manifest)
    rewrite(path, manifest=manifest)
    with pytest.raises(error):
        read_package(path)  # unsigned read: the schema itself must refuse these


def test_manifest_that_is_not_json_is_refused(signed):
    _, _, path, _ = signed
    rewrite(path, manifest="{not json")
    with pytest.raises(SchemaError, match="not JSON"):
        read_package(path)


def test_garbage_signature_is_refused(signed):
    _, _, path, ring = signed
    rewrite(path, signature="!!!")
    with pytest.raises(MalformedPackage, match="base64"):
        read_package(path, ring)


def test_loading_never_unpickles(signed, monkeypatch):
    import pickle

    def boom(*a, **k):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "loads", boom)
    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(torch, "load", boom)
    _, _, path, ring = signed
    assert read_package(path, ring).signature_verified
