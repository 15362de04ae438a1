"""The coordinator's downstream training in stream mode, without Flower."""

import json

import numpy as np
import pytest
import torch

from coordinator import pipeline
from coordinator.store import RunStore
from medsynth_fl.config import load_config
from medsynth_fl.models.registry import build_generator
from medsynth_fl.package import create_package, generate_site_key
from medsynth_fl.package.manifest import TrainingSummary
from medsynth_fl.sampling import sample_condensed_set
from medsynth_fl.training import classifier

NAMES = ["MEL", "NV", "BCC"]
STREAM = [
    "federation.downstream=stream",
    "classifier.arch=convnet",
    "classifier.convnet.width=8",
    "classifier.convnet.depth=2",
    "classifier.steps=4",
]


def make_package(tmp_path, site_id, present, seed, class_names=NAMES, counts=None):
    """A signed package of an untrained tiny conditional generator with a label head.

    ``counts``: the manifest's per-class training images (None: not recorded).
    """
    kwargs = dict(
        num_classes=len(class_names), image_size=16, ngf=4, z_dim=8, label_head=True
    )
    torch.manual_seed(seed)
    generator = build_generator("cbn_resnet", kwargs)
    summary = TrainingSummary(
        stage="phase1",
        phase1_steps=0,
        phase2_steps=0,
        teacher_steps=0,
        n_images=sum(counts.values()) if counts else 0,
        class_counts=counts,
        seconds={},
        config_digest="0" * 64,
    )
    key = generate_site_key(tmp_path / f"{site_id}.pem", tmp_path / f"{site_id}.pub")
    return create_package(
        generator,
        "cbn_resnet",
        kwargs,
        site_id=site_id,
        class_names=list(class_names),
        classes_present=present,
        training=summary,
        key=key,
    )


@pytest.fixture
def setup(tmp_path):
    cfg = load_config("tiny", STREAM)
    packages = [
        make_package(tmp_path, "a", ["MEL", "NV"], 0),
        make_package(tmp_path, "b", ["NV", "BCC"], 1),
    ]
    union = sample_condensed_set(
        packages[0].build_generator(), NAMES, ["MEL", "NV"], ipc=2
    )
    return cfg, packages, union


def test_stream_training_draws_from_the_generators_and_resumes_bit_exactly(
    setup, tmp_path, monkeypatch
):
    cfg, packages, union = setup
    drawn = []
    original_draw = pipeline.GeneratorStream.draw

    def counting_draw(self, *args, **kwargs):
        batch = original_draw(self, *args, **kwargs)
        drawn.append(batch)
        return batch

    monkeypatch.setattr(pipeline.GeneratorStream, "draw", counting_draw)
    ref = pipeline.train_shared_vit(RunStore(tmp_path, "ref"), union, cfg, packages)
    assert len(drawn) == cfg.classifier.steps  # a fresh batch at every step
    assert not torch.equal(drawn[0][0], drawn[1][0])
    assert drawn[0][2] is not None  # the label heads' soft targets are used
    assert set(drawn[0][1].tolist()) <= {0, 1, 2}

    original_step, seen = classifier.classifier_step, {"n": 0}

    def dying_step(*args, **kwargs):
        seen["n"] += 1
        if seen["n"] == 3:  # after the checkpoint at step 2
            raise KeyboardInterrupt("coordinator killed")
        return original_step(*args, **kwargs)

    monkeypatch.setattr(classifier, "classifier_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        pipeline.train_shared_vit(RunStore(tmp_path, "cut"), union, cfg, packages)
    monkeypatch.setattr(classifier, "classifier_step", original_step)
    resumed = pipeline.train_shared_vit(RunStore(tmp_path, "cut"), union, cfg, packages)
    for (k, a), b in zip(
        ref.state_dict().items(), resumed.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), k


def test_a_package_with_another_label_space_is_refused(setup, tmp_path):
    _, packages, _ = setup
    other = make_package(tmp_path, "c", ["MEL"], 2, class_names=["MEL", "NV"])
    with pytest.raises(ValueError, match="site c: label space"):
        pipeline.generator_stream([*packages, other], tuple(NAMES))


def test_stream_draws_a_class_s_sites_by_their_images_of_it(tmp_path, caplog):
    a = make_package(tmp_path, "a", ["MEL", "NV"], 0, counts={"MEL": 3, "NV": 50})
    b = make_package(tmp_path, "b", ["MEL"], 1, counts={"MEL": 97})
    by_images = pipeline.site_holdings([a, b], tuple(NAMES), "images")
    assert by_images == [{0: 3.0, 1: 50.0}, {0: 97.0}]
    uniform = pipeline.site_holdings([a, b], tuple(NAMES), "uniform")
    assert uniform == [{0: 1.0, 1: 1.0}, {0: 1.0}]
    stream = pipeline.generator_stream([a, b], tuple(NAMES), "images")
    labels, sites = stream.choose(np.random.default_rng(0), 20_000)
    assert (sites[labels == 0] == 1).mean() == pytest.approx(0.97, abs=0.01)
    # a package made before manifests carried counts: the round goes uniform
    old = make_package(tmp_path, "c", ["MEL"], 2)
    with caplog.at_level("WARNING"):
        mixed = pipeline.site_holdings([a, old], tuple(NAMES), "images")
    assert mixed == [{0: 1.0, 1: 1.0}, {0: 1.0}]
    assert "no class counts in the packages of c" in caplog.text


def test_contributions_are_stored_reused_and_recomputed_when_the_sites_change(
    setup, tmp_path, monkeypatch
):
    _, packages, _ = setup
    cfg = load_config(
        "tiny",
        [*STREAM, f"data.classes={json.dumps(NAMES)}", "contributions.n_bootstrap=5"],
    )
    condensed = {
        p.manifest.site_id: sample_condensed_set(
            p.build_generator(), NAMES, list(p.manifest.classes_present), ipc=6
        )
        for p in packages
    }
    test = sample_condensed_set(packages[1].build_generator(), NAMES, NAMES, ipc=8)
    test.save_npz(tmp_path / "test.npz")
    store = RunStore(tmp_path, "run")
    model = pipeline.train_shared_vit(store, condensed["a"], cfg, packages)
    out = pipeline.site_contributions(
        store, model, condensed, tmp_path / "test.npz", cfg
    )
    stored = json.loads((store.dir / "contributions.json").read_text())
    assert stored == out and stored["sites"] == ["a", "b"]
    auc = stored["auc"]
    total = sum(auc["sites"][s]["shapley"]["mean"] for s in ("a", "b"))
    assert total == pytest.approx(auc["v_all"] - auc["v_empty"], abs=1e-9)
    quality = stored["sample_quality"]
    assert set(quality) == {"a", "b"} and quality["a"]["n_fake"] == len(condensed["a"])
    assert all(0 <= q["recall"]["mean"] <= 1 for q in quality.values())
    assert set(store.metrics("contribution:a")["contribution:a"]) >= {
        "shapley",
        "shapley-low",
        "shapley-high",
        "loo",
        "alone",
    }

    def no_training(*args, **kwargs):
        raise AssertionError("recomputed although nothing changed")

    monkeypatch.setattr(pipeline, "linear_probe_trainer", no_training)
    assert (
        pipeline.site_contributions(store, model, condensed, tmp_path / "test.npz", cfg)
        == out
    )
    monkeypatch.undo()
    fewer = pipeline.site_contributions(
        store, model, {"a": condensed["a"]}, tmp_path / "test.npz", cfg
    )
    assert fewer["sites"] == ["a"]
    assert pipeline.site_contributions(store, model, condensed, None, cfg) is None
