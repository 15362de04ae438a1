"""GeneratorStream: fresh class-balanced batches; a class only from sites holding it."""

import numpy as np
import pytest
import torch

from medsynth_fl.sampling import sample_condensed_set
from medsynth_fl.training.stream import GeneratorStream

from .generator_fakes import FakeGenerator

K = 4
# site 0 holds classes 0, 1; site 1 holds 1, 2; class 3 is nowhere
HOLDINGS = [[0, 1], [1, 2]]


def make_stream(label_heads=(False, False)):
    gens = [FakeGenerator(i, K, label_head=h) for i, h in enumerate(label_heads)]
    return GeneratorStream(list(zip(gens, HOLDINGS, strict=True)), K), gens


def draw(stream, n, seed=0):
    return stream.draw(
        np.random.default_rng(seed), n, torch.Generator().manual_seed(seed)
    )


def test_classes_are_uniform_over_the_union_and_sites_share_a_common_class():
    stream, _ = make_stream()
    labels, sites = stream.choose(np.random.default_rng(0), 30_000)
    assert set(labels.tolist()) == {0, 1, 2}
    np.testing.assert_allclose(
        np.bincount(labels, minlength=K)[:3] / 30_000, 1 / 3, atol=0.02
    )
    # class 1 is split evenly between its two holders
    assert (sites[labels == 1] == 0).mean() == pytest.approx(0.5, abs=0.02)


def test_a_class_is_split_between_its_holders_by_their_weights():
    gens = [FakeGenerator(i, K) for i in range(2)]
    # site 0 saw 90 images of class 1, site 1 saw 10 (and 5 of class 2)
    stream = GeneratorStream([(gens[0], {0: 40, 1: 90}), (gens[1], {1: 10, 2: 5})], K)
    labels, sites = stream.choose(np.random.default_rng(0), 30_000)
    # classes stay uniform: weights only choose the site within a class
    np.testing.assert_allclose(
        np.bincount(labels, minlength=K)[:3] / 30_000, 1 / 3, atol=0.02
    )
    assert (sites[labels == 1] == 0).mean() == pytest.approx(0.9, abs=0.02)
    assert set(sites[labels == 2].tolist()) == {1}
    with pytest.raises(ValueError, match="positive"):
        GeneratorStream([(gens[0], {0: 0})], K)


def test_no_site_ever_generates_a_class_it_lacks():
    stream, gens = make_stream()
    x, y, soft = draw(stream, 256)
    assert soft is None and x.shape == (256, 3, 8, 8) and y.dtype == torch.int64
    for g, held in zip(gens, HOLDINGS, strict=True):
        assert len(g.calls) == 1  # one batch per site
        labels, training, grad = g.calls[0]
        assert set(labels) <= set(held) and not training and not grad
    # each image was made by a holder of its class, for its class
    site = (x[:, 1, 0, 0] * 10).round().long()
    assert torch.equal((x[:, 0, 0, 0] * K).round().long(), y)
    for k, held in ((0, {0}), (1, {0, 1}), (2, {1})):
        assert set(site[y == k].tolist()) <= held


def test_every_step_draws_fresh_images_and_a_seed_repeats_them():
    stream, _ = make_stream()
    a, b, c = draw(stream, 32, 0), draw(stream, 32, 0), draw(stream, 32, 1)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_soft_targets_from_the_label_head_and_one_hot_for_sites_without():
    stream, _ = make_stream(label_heads=(True, False))
    x, y, soft = draw(stream, 200)
    site = (x[:, 1, 0, 0] * 10).round().long()
    torch.testing.assert_close(soft.sum(1), torch.ones(200))
    headed = site == 0
    assert (soft[headed].argmax(1) == (y[headed] + 1) % K).all()
    assert torch.equal(soft[~headed], torch.eye(K)[y[~headed]])


def test_bad_holdings_are_refused():
    with pytest.raises(ValueError, match="0..3"):
        GeneratorStream([(FakeGenerator(0, K), [4])], K)
    with pytest.raises(ValueError, match="at least one"):
        GeneratorStream([], K)


def test_condensed_set_carries_the_label_head_s_soft_labels():
    names = [f"c{k}" for k in range(K)]
    with_head = sample_condensed_set(
        FakeGenerator(0, K, label_head=True), names, ["c0", "c2"], ipc=3
    )
    assert with_head.soft_labels.dtype == np.float32
    assert with_head.soft_labels.shape == (6, K)
    assert (with_head.soft_labels.argmax(1) == (with_head.labels + 1) % K).all()
    plain = sample_condensed_set(FakeGenerator(0, K), names, ["c0"], ipc=2)
    assert plain.soft_labels is None
