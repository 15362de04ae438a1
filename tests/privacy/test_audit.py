"""Audit orchestration: building from a generator, state round trip, run, gate."""

import json

import numpy as np
import pytest
import torch

from medsynth_fl.models import AttentionGenerator, Critic
from medsynth_fl.models.cgan import ConditionalResNetGenerator
from medsynth_fl.privacy.attack_models import AttackModels, AttackStateError
from medsynth_fl.privacy.audit import (
    AuditReport,
    build_generator_only_attacks,
    run_audit,
    score_candidates,
)
from medsynth_fl.privacy.gate import auc_leaks, release_gate, tpr_leaks
from medsynth_fl.privacy.metrics import evaluate_attack
from medsynth_fl.privacy.report import audit_metrics, leaking_attacks

from .fakes import CLASSES, MemorisingCritic, image_set, tiny_audit_cfg

GENERATOR_ONLY = {
    "logan_bb",
    "recovery_pixel",
    "recovery_feature",
    "nn_pixel",
    "nn_embed",
    "density_pixel",
    "density_embed",
}


@pytest.fixture(scope="module", params=["attention", "cbn_resnet"])
def generator(request):
    """Both shipped generator families: spatial noise, and a flat latent."""
    torch.manual_seed(0)
    if request.param == "attention":
        return AttentionGenerator(16, len(CLASSES), ngf=4, embed_dim=4, n_res_blocks=1)
    return ConditionalResNetGenerator(16, len(CLASSES), z_dim=8, ngf=4)


@pytest.fixture(scope="module")
def models(generator):
    return build_generator_only_attacks(
        generator, list(CLASSES), ["a", "b"], tiny_audit_cfg(), seed=0
    )


@pytest.fixture(scope="module")
def candidates():
    """Members and non-members of classes a, b and c (c is not in the generator)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 16, 16, 3), dtype=np.uint8)
    labels = np.tile([0, 1, 2, 0], 10)
    return image_set(images[:20], labels[:20]), image_set(images[20:], labels[20:])


def test_build_samples_only_present_classes_and_leaves_the_generator_alone(generator):
    before = {k: v.clone() for k, v in generator.state_dict().items()}
    generator.train()

    m = build_generator_only_attacks(generator, list(CLASSES), ["b"], tiny_audit_cfg())

    assert set(m.generated.labels) == {1} and len(m.generated) == 16
    assert m.generated_embeddings.shape == (16, m.feature_net.embed_dim)
    assert generator.training
    assert all(torch.equal(before[k], v) for k, v in generator.state_dict().items())


def test_score_candidates_gives_one_score_per_image_and_attack(models, candidates):
    members, _ = candidates
    critic = Critic(16, len(CLASSES), ndf=4, fc_hidden=8)

    without = score_candidates(models, members)
    with_critic = score_candidates(models, members, critic=critic)

    assert set(without) == GENERATOR_ONLY
    assert set(with_critic) == GENERATOR_ONLY | {"logan_wb"}
    assert all(s.shape == (20,) and np.isfinite(s).all() for s in with_critic.values())


def test_pairwise_scores_of_generated_samples_themselves_are_maximal(models):
    scores = score_candidates(models, models.generated)

    np.testing.assert_allclose(scores["nn_pixel"], 0.0, atol=1e-6)
    np.testing.assert_allclose(scores["nn_embed"], 0.0, atol=1e-4)


def test_state_round_trip_reproduces_every_score(models, generator, candidates):
    arrays, meta = models.to_state()

    restored = AttackModels.from_state(arrays, meta, generator)

    assert all(isinstance(a, np.ndarray) for a in arrays.values())
    json.dumps(meta)  # JSON-able, and flat: scalars and lists of scalars only
    assert all(not isinstance(v, dict) for v in meta.values())
    before, after = (score_candidates(m, candidates[0]) for m in (models, restored))
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert restored.classes_present == ("a", "b") and restored.density_k == 3


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda a, m: a.update({"extra.weight": np.zeros(1)}),
        lambda a, m: a.pop("shadow_critic.fc2.bias"),
        lambda a, m: a.update({"encoder_pixel.body.0.weight": np.zeros((1, 3, 3, 3))}),
        lambda a, m: a.update({"generated.embeddings": np.zeros((2, 4), np.float32)}),
        lambda a, m: m.update({"format_version": 99}),
        lambda a, m: m.update({"noise_shape": [3, 8, 8]}),
        lambda a, m: m.update({"classes_present": ["z"]}),
    ],
)
def test_from_state_refuses_a_state_that_does_not_fit(models, generator, corrupt):
    arrays, meta = models.to_state()
    corrupt(arrays, meta)

    with pytest.raises(AttackStateError):
        AttackModels.from_state(arrays, meta, generator)


def test_run_audit_reports_every_attack_on_present_classes(models, candidates):
    members, nonmembers = candidates
    critic = MemorisingCritic(members.to_tensors()[0])

    report = run_audit(members, nonmembers, models, critic=critic, task_accuracy=0.8)

    assert set(report.results) == GENERATOR_ONLY | {"logan_wb"}
    # Class c is dropped: 15 members and 15 non-members of classes a and b.
    assert {(r.n_members, r.n_nonmembers) for r in report.results.values()} == {
        (15, 15)
    }
    assert report.results["logan_wb"].auc == 1.0  # the critic memorised the members
    assert set(report.p1d) == set(report.results) and report.task_accuracy == 0.8
    assert report.p1d["logan_wb"] == 0.0  # attack accuracy 1 leaves no privacy
    assert set(report.memorization) == {"pixel", "embed"}
    assert all(0.0 <= v <= 1.0 for v in report.memorization.values())
    # the null control: every attack on two halves of the 15 non-members
    assert set(report.null_control) == set(report.results)
    assert {(c.n_members, c.n_nonmembers) for c in report.null_control.values()} == {
        (7, 7)
    }
    # even the white-box attack that finds every member cannot tell non-members apart
    wb = report.null_control["logan_wb"]
    assert wb.auc_ci[0] <= 0.5 <= wb.auc_ci[1]


def test_run_audit_without_critic_or_task_accuracy(models, candidates):
    report = run_audit(*candidates, models, max_candidates=10)

    assert set(report.results) == GENERATOR_ONLY and report.p1d == {}
    assert {(r.n_members, r.n_nonmembers) for r in report.results.values()} == {
        (10, 10)
    }


def test_run_audit_refuses_candidates_of_absent_classes_only(models):
    only_c = image_set(np.zeros((3, 16, 16, 3), np.uint8), [2, 2, 2])

    with pytest.raises(ValueError):
        run_audit(only_c, only_c, models)


def report_with_aucs(**aucs):
    """An AuditReport whose attacks have (about) the given AUCs."""
    results = {}
    for name, auc in aucs.items():
        # n members above all n non-members for a fraction ``auc`` of the pairs.
        members = np.r_[
            np.full(int(auc * 100), 10.0), np.full(100 - int(auc * 100), -10.0)
        ]
        results[name] = evaluate_attack(name, members, np.zeros(100))
    return AuditReport(results, {"pixel": 0.0}, {"pixel": 1.0})


def test_release_gate_refuses_and_names_the_attacks_over_the_limit():
    report = report_with_aucs(logan_wb=0.9, nn_pixel=0.55, recovery_pixel=0.7)

    decision = release_gate(report, max_auc=0.6)

    assert not decision.allowed
    assert decision.reasons == [
        "logan_wb: AUC 0.900 > 0.600",
        "recovery_pixel: AUC 0.700 > 0.600",
    ]


def test_release_gate_allows_when_every_auc_is_at_most_the_limit():
    decision = release_gate(report_with_aucs(logan_bb=0.6, nn_pixel=0.5))

    assert decision.allowed and decision.reasons == []


def test_release_gate_refuses_an_attack_that_ranks_members_last_beyond_chance():
    # AUC 0.2 on 100 + 100 scores: its interval lies wholly below 1 − 0.6.
    report = report_with_aucs(recovery_pixel=0.2, nn_pixel=0.5)

    decision = release_gate(report, max_auc=0.6)

    high = report.results["recovery_pixel"].auc_ci[1]
    assert high < 0.4 and not decision.allowed
    assert len(decision.reasons) == 1
    assert decision.reasons[0].startswith("recovery_pixel: AUC 0.200, 95 % interval")


def test_release_gate_allows_an_auc_under_half_that_few_non_members_explain():
    # 28 non-members (a small site): AUC ~0.37 by chance, interval reaching 0.5.
    rng = np.random.default_rng(3)
    result = evaluate_attack("logan_bb", rng.normal(0, 1, 196), rng.normal(0.5, 1, 28))
    report = AuditReport({"logan_bb": result}, {"pixel": 0.0}, {"pixel": 1.0})

    assert result.auc < 0.4 < result.auc_ci[1]
    assert release_gate(report, max_auc=0.6).allowed


def test_auc_leaks_tests_the_lower_side_only_with_an_interval():
    assert auc_leaks(0.61, 0.6) and not auc_leaks(0.6, 0.6)
    assert not auc_leaks(0.1, 0.6)  # no interval: one-sided
    assert auc_leaks(0.1, 0.6, (0.05, 0.39))
    assert not auc_leaks(0.3, 0.6, (0.2, 0.41))


def test_leaking_attacks_reads_the_flat_metrics_the_coordinator_receives():
    report = report_with_aucs(logan_bb=0.9, nn_pixel=0.2, recovery_pixel=0.5)
    metrics = audit_metrics(report)

    assert leaking_attacks(metrics, 0.6) == ["logan_bb", "nn_pixel"]
    no_intervals = {k: v for k, v in metrics.items() if "_ci95_" not in k}
    assert leaking_attacks(no_intervals, 0.6) == ["logan_bb"]


def few_members_exposed(seed: int = 0) -> AuditReport:
    """5 % of 1,000 members score above every non-member; the rest look like them.

    AUC stays under 0.6, yet the attack singles out 50 members at 1 % FPR.
    """
    rng = np.random.default_rng(seed)
    members = rng.normal(0, 1, 1000)
    members[:50] = 10.0
    result = evaluate_attack("logan_bb", members, rng.normal(0, 1, 500))
    return AuditReport({"logan_bb": result}, {"pixel": 0.0}, {"pixel": 1.0})


def test_release_gate_optionally_refuses_a_tpr_at_low_fpr_beyond_chance():
    report = few_members_exposed()
    r = report.results["logan_bb"]
    assert r.auc < 0.6 and r.tpr_at_1pct_fpr_ci[0] > 0.02

    assert release_gate(report, max_auc=0.6).allowed  # off by default
    decision = release_gate(report, max_auc=0.6, max_tpr=0.02)
    assert not decision.allowed
    assert decision.reasons == [
        f"logan_bb: TPR@1%FPR {r.tpr_at_1pct_fpr:.3f}, 95 % interval "
        f"[{r.tpr_at_1pct_fpr_ci[0]:.3f}, {r.tpr_at_1pct_fpr_ci[1]:.3f}] above 0.020"
    ]
    flat = audit_metrics(report)  # the coordinator applies the same rule
    assert leaking_attacks(flat, 0.6) == []
    assert leaking_attacks(flat, 0.6, max_tpr=0.02) == ["logan_bb"]


def test_tpr_limit_allows_chance_and_needs_an_interval():
    rng = np.random.default_rng(1)
    chance = evaluate_attack("nn_pixel", rng.normal(0, 1, 1000), rng.normal(0, 1, 229))
    report = AuditReport({"nn_pixel": chance}, {"pixel": 0.0}, {"pixel": 1.0})

    assert chance.tpr_at_1pct_fpr_ci[0] <= 0.02
    assert release_gate(report, max_auc=0.6, max_tpr=0.02).allowed
    assert tpr_leaks((0.03, 0.09), 0.02) and not tpr_leaks((0.01, 0.09), 0.02)
    assert not tpr_leaks(None, 0.02) and not tpr_leaks((0.5, 0.9), None)


def test_release_gate_refuses_a_meaningless_limit():
    with pytest.raises(ValueError):
        release_gate(report_with_aucs(nn_pixel=0.5), max_auc=0.4)


def test_the_gate_notes_a_null_control_off_chance_without_refusing():
    report = report_with_aucs(nn_pixel=0.5)
    # non-members whose halves differ: a broken audit (say, two scanners)
    skewed = evaluate_attack("nn_pixel", np.full(100, 1.0), np.zeros(100))
    report.null_control["nn_pixel"] = skewed
    decision = release_gate(report, max_auc=0.6)
    assert decision.allowed and decision.reasons == []
    assert len(decision.notes) == 1 and "null control" in decision.notes[0]
    fine = report_with_aucs(nn_pixel=0.5)
    fine.null_control["nn_pixel"] = evaluate_attack(
        "nn_pixel",
        np.random.default_rng(0).random(100),
        np.random.default_rng(1).random(100),
    )
    assert release_gate(fine).notes == []
