"""Known-answer tests of the pairwise and distribution attacks on point clouds."""

import numpy as np

from medsynth_fl.privacy.attacks import distance
from medsynth_fl.privacy.metrics import evaluate_attack
from medsynth_fl.privacy.signals import knn_distances

K = 5


def attack(members, nonmembers, generated):
    """Pairwise and density results from generated points only."""
    dm, dn = (
        knn_distances(members, generated, K),
        knn_distances(nonmembers, generated, K),
    )
    return (
        evaluate_attack(
            "pairwise", *map(distance.pairwise_scores, (dm[:, 0], dn[:, 0]))
        ),
        evaluate_attack(
            "density", *map(distance.density_scores, (dm[:, -1], dn[:, -1]))
        ),
    )


def test_pairwise_attack_finds_members_that_coincide_with_generated_points():
    rng = np.random.default_rng(0)
    generated = rng.normal(size=(300, 8))
    members = generated[:60] + rng.normal(scale=1e-3, size=(60, 8))  # copies
    nonmembers = rng.normal(size=(60, 8))

    pairwise, _ = attack(members, nonmembers, generated)
    swapped, _ = attack(nonmembers, members, generated)

    assert pairwise.auc > 0.999 and pairwise.acc > 0.99
    assert swapped.auc < 0.001 and swapped.acc < 0.01


def test_density_attack_finds_clusters_of_generated_points_around_members():
    rng = np.random.default_rng(1)
    members, nonmembers = rng.normal(size=(40, 8)), rng.normal(size=(40, 8))
    clusters = np.repeat(members, K, axis=0) + rng.normal(scale=0.05, size=(40 * K, 8))
    generated = np.concatenate([clusters, rng.normal(size=(200, 8))])

    _, density = attack(members, nonmembers, generated)
    _, swapped = attack(nonmembers, members, generated)

    assert density.auc > 0.999 and density.acc > 0.99
    assert swapped.auc < 0.001


def test_density_ignores_a_single_copy_but_pairwise_does_not():
    # One generated copy per member is memorisation of single samples, not a cluster.
    rng = np.random.default_rng(2)
    members, nonmembers = rng.normal(size=(50, 8)), rng.normal(size=(50, 8))
    generated = np.concatenate([members, rng.normal(size=(300, 8))])

    pairwise, density = attack(members, nonmembers, generated)

    assert pairwise.auc > 0.999 and abs(density.auc - 0.5) < 0.15


def test_distance_attacks_are_at_chance_on_identical_distributions():
    rng = np.random.default_rng(3)
    generated = rng.normal(size=(400, 8))
    members, nonmembers = rng.normal(size=(1000, 8)), rng.normal(size=(1000, 8))

    pairwise, density = attack(members, nonmembers, generated)

    assert abs(pairwise.auc - 0.5) < 0.04 and abs(density.auc - 0.5) < 0.04
    assert abs(pairwise.acc - 0.5) < 0.04 and abs(density.acc - 0.5) < 0.04
