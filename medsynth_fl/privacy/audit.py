"""Membership-inference audit of a generator: build the attacks, score, evaluate.

The flow, without Flower:

1. The coordinator, holding only the generator, calls
   :func:`build_generator_only_attacks` and ships ``AttackModels.to_state()``.
2. The site rebuilds the models and calls :func:`run_audit` with its training
   images (members), held-out images (non-members) and, for white-box LOGAN,
   its own critic. Every attack is scored (:func:`score_candidates`),
   evaluated (:func:`~medsynth_fl.privacy.metrics.evaluate_attack`), and the
   memorisation rate of the generated samples is measured.
3. :func:`~medsynth_fl.privacy.gate.release_gate` refuses the generator when
   an attack leaks.

Candidates of classes the generator was not trained on are left out of both
sides: the attacks compare a candidate with samples of its own class.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from ..config import AuditConfig
from ..data.imageset import ImageSet
from ..sampling import sample_condensed_set
from ..training.precision import resolve_precision
from ..training.seeding import derive_seed
from ._utils import device_of, evaluating
from .attack_models import AttackModels
from .attacks import distance, logan, recovery
from .features import RandomConvFeatures
from .memorization import (
    distinct_images,
    image_points,
    memorization_rate,
    min_distinct_distance,
)
from .metrics import (
    AttackResult,
    ChanceLevel,
    evaluate_attack,
    null_control,
    p1d,
    permutation_chance,
)
from .signals import critic_scores, embeddings, knn_distances, pixels, recovery_errors

if TYPE_CHECKING:
    from ..package import GeneratorPackage

log = logging.getLogger(__name__)


@torch.no_grad()
def _generate_reference(
    generator: nn.Module,
    class_names: list[str],
    classes_present: list[str],
    n: int,
    seed: int,
) -> ImageSet:
    """About ``n`` samples, equally many per present class (rounded up)."""
    ipc = math.ceil(n / len(classes_present))
    with evaluating(generator):
        return sample_condensed_set(generator, class_names, classes_present, ipc, seed)


def build_reference_attacks(
    generator: nn.Module,
    class_names: list[str],
    classes_present: list[str],
    cfg: AuditConfig,
    seed: int = 0,
) -> AttackModels:
    """Reference samples, the feature network φ and embeddings: the cheap part.

    Enough for the distance attacks and the memorisation check, and (with the
    site's critic) white-box LOGAN: what a site runs before it releases a
    generator. No shadow critic or recovery encoder is trained.
    """
    device = device_of(generator)
    generated = _generate_reference(
        generator,
        class_names,
        classes_present,
        cfg.n_generated,
        derive_seed(seed, "audit", "reference"),
    )
    feature_net = RandomConvFeatures(seed=derive_seed(seed, "audit", "features"))
    feature_net = feature_net.to(device).eval()
    x_gen, _ = generated.to_tensors()
    return AttackModels(
        generator=generator,
        classes_present=tuple(classes_present),
        feature_net=feature_net,
        shadow_critic=None,
        shadow_width=cfg.shadow_width,
        shadow_loss=cfg.shadow_loss,
        encoder_pixel=None,
        encoder_feature=None,
        generated=generated,
        generated_embeddings=embeddings(
            feature_net.embed, x_gen, cfg.batch_size, device
        ),
        density_k=cfg.density_k,
        seed=seed,
    )


def train_audit_shadow_critic(
    generated: ImageSet,
    cfg: AuditConfig,
    seed: int = 0,
    loss: logan.ShadowLoss | None = None,
    device: torch.device | str = "cpu",
) -> nn.Module:
    """Train black-box LOGAN's shadow critic with the audit's settings.

    ``loss`` overrides ``cfg.shadow_loss`` (the privacy bench compares both).
    """
    return logan.train_shadow_critic(
        generated,
        steps=cfg.shadow_steps,
        width=cfg.shadow_width,
        batch_size=cfg.batch_size,
        lr=cfg.shadow_lr,
        n_critic=cfg.shadow_n_critic,
        seed=derive_seed(seed, "audit", "shadow"),
        loss=loss or cfg.shadow_loss,
        device=device,
        precision=resolve_precision(cfg.precision, device),
    )


def build_generator_only_attacks(
    generator: nn.Module,
    class_names: list[str],
    classes_present: list[str],
    cfg: AuditConfig,
    seed: int = 0,
) -> AttackModels:
    """Build every attack model a coordinator can make from the generator alone.

    Parameters
    ----------
    generator : the audited generator (``forward(z, y)``, ``sample_noise``,
        ``noise_shape``); it is sampled in eval mode and never modified.
    class_names : the generator's full label space.
    classes_present : the classes it was trained on (from the package manifest).
    cfg : audit settings (``n_generated``, ``shadow_*``, ``encoder_*``, ...).
    seed : seed of every random choice.

    Returns
    -------
    AttackModels
        Feature network, shadow critic, recovery encoders and reference samples.
    """
    t0 = time.perf_counter()
    models = build_reference_attacks(generator, class_names, classes_present, cfg, seed)
    t_reference = time.perf_counter()
    models.shadow_critic = train_audit_shadow_critic(
        models.generated, cfg, seed, device=device_of(generator)
    )
    t_shadow = time.perf_counter()
    labels = [class_names.index(c) for c in classes_present]
    encoders = recovery.train_recovery_encoders(
        generator,
        {"pixel": nn.Identity(), "feature": models.feature_net},
        labels,
        steps=cfg.encoder_steps,
        batch_size=cfg.batch_size,
        lr=cfg.encoder_lr,
        seed=derive_seed(seed, "audit", "encoder"),
        precision=resolve_precision(cfg.precision, device_of(generator)),
    )
    models.encoder_pixel, models.encoder_feature = (
        encoders["pixel"],
        encoders["feature"],
    )
    models.build_seconds = {
        "reference": round(t_reference - t0, 1),
        "shadow_critic": round(t_shadow - t_reference, 1),
        "recovery_encoders": round(time.perf_counter() - t_shadow, 1),
    }
    log.info("audit models built in %.1f s", time.perf_counter() - t0)
    return models


def build_package_attacks(
    package: GeneratorPackage,
    cfg: AuditConfig,
    seed: int = 0,
    *,
    train_models: bool = True,
) -> AttackModels:
    """Build the attack models of a package's generator, for the classes it declares.

    ``train_models=True`` (the coordinator's federated audit) also trains the
    shadow critic and recovery encoders (:func:`build_generator_only_attacks`);
    ``False`` (the site's own gate, which has its critic for white-box LOGAN)
    builds only the reference samples and feature network
    (:func:`build_reference_attacks`).
    """
    m = package.manifest
    build = build_generator_only_attacks if train_models else build_reference_attacks
    return build(
        package.build_generator(),
        list(m.class_names),
        list(m.classes_present),
        cfg,
        seed,
    )


def score_candidates(
    models: AttackModels,
    images: ImageSet,
    critic: nn.Module | None = None,
    batch_size: int = 256,
) -> dict[str, np.ndarray]:
    """Membership scores of every attack for each candidate (larger = member).

    Parameters
    ----------
    models : the attack models (see :func:`build_generator_only_attacks`).
    images : candidate images with their labels, in the generator's label space.
    critic : the site's own critic; adds the white-box ``"logan_wb"`` scores.
    batch_size : images per forward pass.

    Returns
    -------
    dict of str to np.ndarray
        ``"logan_bb"``, ``"recovery_pixel"``, ``"recovery_feature"``,
        ``"nn_pixel"``, ``"nn_embed"``, ``"density_pixel"``, ``"density_embed"``
        (and ``"logan_wb"`` with a critic): one score per candidate.
    """
    if images.class_names != models.class_names:
        raise ValueError("candidates and generator have different class names")
    x, y = images.to_tensors()
    g = models.generator
    scores: dict[str, np.ndarray] = {}
    if critic is not None:
        scores["logan_wb"] = logan.white_box_scores(
            critic_scores(critic, x, y, batch_size)
        )
    if models.has_models:
        shadow = critic_scores(models.shadow_critic, x, y, batch_size)
        scores["logan_bb"] = logan.black_box_scores(shadow)
        for name, encoder, phi in (
            ("pixel", models.encoder_pixel, nn.Identity()),
            ("feature", models.encoder_feature, models.feature_net),
        ):
            errors = recovery_errors(g, encoder, phi, x, y, batch_size)
            scores[f"recovery_{name}"] = recovery.membership_scores(errors)
    emb = embeddings(models.feature_net.embed, x, batch_size, device_of(g))
    x_gen, _ = models.generated.to_tensors()
    k = min(models.density_k, len(models.generated))
    for space, queries, ref in (
        ("pixel", pixels(x), pixels(x_gen)),
        ("embed", emb, models.generated_embeddings),
    ):
        dist = knn_distances(queries, ref, k)
        scores[f"nn_{space}"] = distance.pairwise_scores(dist[:, 0])
        scores[f"density_{space}"] = distance.density_scores(dist[:, k - 1])
    return scores


def audit_options(cfg: AuditConfig) -> dict[str, int]:
    """:func:`run_audit`'s sizes from the audit config (candidates, resamples)."""
    return {
        "max_candidates": cfg.max_candidates,
        "n_bootstrap": cfg.n_bootstrap,
        "n_permutations": cfg.n_permutations,
    }


@dataclass(frozen=True)
class AuditReport:
    """Results of one audit.

    Attributes
    ----------
    results : one :class:`AttackResult` per attack, by name.
    memorization : seed 001's memorisation rate of the generated samples,
        ``{"pixel": ..., "embed": ...}``.
    memorization_threshold : the identity distance used in each space.
    task_accuracy : accuracy of the downstream model, when given.
    p1d : P1(D) per attack (empty without ``task_accuracy``).
    chance : per metric, its largest value over the attacks against the same
        audit with permuted membership labels (:func:`permutation_chance`).
    null_control : per attack, the same attack scored on two disjoint halves
        of the non-members (:func:`null_control`); it must read chance.
    """

    results: dict[str, AttackResult]
    memorization: dict[str, float]
    memorization_threshold: dict[str, float]
    task_accuracy: float | None = None
    p1d: dict[str, float] = field(default_factory=dict)
    chance: dict[str, ChanceLevel] = field(default_factory=dict)
    null_control: dict[str, AttackResult] = field(default_factory=dict)


def _one_side(
    images: ImageSet, classes: tuple[str, ...], limit: int | None, seed: int
) -> ImageSet:
    """Keep images of ``classes``, then at most ``limit`` (fixed-seed choice)."""
    keep = np.isin(images.labels, [images.class_names.index(c) for c in classes])
    images = images.subset(keep)
    if limit is not None and len(images) > limit:
        rng = np.random.default_rng(seed)
        images = images.subset(np.sort(rng.choice(len(images), limit, replace=False)))
    if len(images) == 0:
        raise ValueError("no candidate of a class the generator was trained on")
    return images


def select_candidates(
    members: ImageSet,
    nonmembers: ImageSet,
    classes: tuple[str, ...],
    limit: int | None,
    seed: int,
) -> tuple[ImageSet, ImageSet]:
    """The members and non-members :func:`run_audit` scores, for the same seed.

    Images of the generator's ``classes`` only, at most ``limit`` per side, each
    side drawn with its own fixed seed (``seed``, ``seed + 1``).
    """
    return (
        _one_side(members, classes, limit, seed),
        _one_side(nonmembers, classes, limit, seed + 1),
    )


def _memorization(
    models: AttackModels, members: ImageSet
) -> tuple[dict[str, float], dict[str, float]]:
    """Memorisation rate and identity threshold in pixel and embedding space."""
    train = distinct_images(members)
    device = device_of(models.generator)
    rates, thresholds = {}, {}
    for space, fn, gen_points in (
        ("pixel", None, image_points(models.generated)),
        ("embed", models.feature_net.embed, models.generated_embeddings),
    ):
        train_points = image_points(train, fn, device)
        thresholds[space] = min_distinct_distance(train_points)
        rates[space] = memorization_rate(gen_points, train_points, thresholds[space])
    return rates, thresholds


def run_audit(
    members: ImageSet,
    nonmembers: ImageSet,
    models: AttackModels,
    critic: nn.Module | None = None,
    task_accuracy: float | None = None,
    max_candidates: int | None = None,
    seed: int = 0,
    n_bootstrap: int = 1000,
    n_permutations: int = 1000,
) -> AuditReport:
    """Run every membership attack and the memorisation check on one generator.

    Parameters
    ----------
    members : the generator's training images (at the site).
    nonmembers : held-out images of the same distribution, never trained on.
    models : the attack models built from the generator.
    critic : the site's critic; enables white-box LOGAN (``"logan_wb"``).
    task_accuracy : accuracy of the downstream model; enables P1(D).
    max_candidates : score at most this many images per side (fixed-seed choice).
    seed : seed of the candidate choice and of Algorithm 1's subsample.
    n_bootstrap : resamples of every attack's (and null control's) intervals.
    n_permutations : label permutations of the chance levels.

    Returns
    -------
    AuditReport
        Every attack's result, the memorisation rates and P1(D).

    Notes
    -----
    The attacks score candidates of the generator's classes only, at most
    ``max_candidates`` per side; the memorisation rate compares the generated
    reference samples with *every* distinct member image (its cost grows with
    the square of the number of members, in pixel space).
    """
    t0 = time.perf_counter()
    m, n = select_candidates(
        members, nonmembers, models.classes_present, max_candidates, seed
    )
    scores = score_candidates(models, ImageSet.concat([m, n]), critic)
    results = {
        name: evaluate_attack(name, s[: len(m)], s[len(m) :], seed, n_bootstrap)
        for name, s in scores.items()
    }
    chance = permutation_chance(scores, len(m), n_permutations, seed=seed)
    null = (
        {
            name: null_control(name, s[len(m) :], seed, n_bootstrap)
            for name, s in scores.items()
        }
        if len(n) >= 4
        else {}
    )
    rates, thresholds = _memorization(models, members)
    log.info(
        "audit of %d + %d candidates in %.1f s",
        len(m),
        len(n),
        time.perf_counter() - t0,
    )
    return AuditReport(
        results=results,
        memorization=rates,
        memorization_threshold=thresholds,
        task_accuracy=task_accuracy,
        p1d={}
        if task_accuracy is None
        else {name: p1d(task_accuracy, r.acc) for name, r in results.items()},
        chance=chance,
        null_control=null,
    )
