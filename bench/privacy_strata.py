"""Is a membership signal a leak, or a difference between the folds? Scores by stratum.

An attack should tell members from non-members drawn from the same population.
On a centre's FLamby folds they are not quite that, in two ways an attacker
can exploit without any leak:

- **class mix**: the folds differ a little in class mix and the shadow critic
  is class-conditional, so it may rank members first only because it scores
  some classes higher;
- **lesion multiplicity**: a lesion photographed several times sits wholly in
  one fold, and the lesion-safe test fold drops the test images of lesions in
  the train fold. On HAM_rosendahl 56 % of members belong to a lesion with 2-5
  images, against 15 % of non-members; such images are also seen 2-5 times as
  often in training (per lesion), so the split and the exposure are confounded.

This script rebuilds the attack models of ``bench/privacy.py``'s generator
exactly as that benchmark did (same config, same seed: the scores reproduce
its AUC to the last digit), scores the same candidates, and reports for every
attack:

- the AUC within each class, and after z-scoring scores within each class;
- the members that score above every non-member, by class and by multiplicity;
- the attack on **single-image lesions only** (members and non-members alike):
  equal exposure per lesion and the same stratum of the population;
- the attack on a **multiplicity-matched** member subsample (members drawn
  per stratum in the non-members' proportions);
- for the worst attack, the chance level of ``bench/privacy.py`` (permuted
  membership labels) on the raw and on the class-z-scored scores.

    python bench/privacy_strata.py        # ~18 min on 2 cores, after bench/privacy.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.privacy import ATTACK_OVERRIDES, shard_overrides  # noqa: E402
from medsynth_fl.runinfo import git_revision, machine_description  # noqa: E402


def cached_scores(path: Path, package_sha256: str) -> dict[str, np.ndarray] | None:
    """Scores saved by an earlier run on this very package (18 min to rebuild)."""
    if not path.is_file():
        return None
    with np.load(path) as saved:
        if str(saved["package_sha256"]) != package_sha256:
            return None
        return {k: saved[k] for k in saved.files if k != "package_sha256"}


def lesion_multiplicity(
    lesion_ids: np.ndarray, fold_lesion_ids: np.ndarray
) -> np.ndarray:
    """For each image, how many images of its lesion its whole fold holds."""
    counts = Counter(fold_lesion_ids.tolist())
    return np.array([counts[lesion] for lesion in lesion_ids.tolist()])


def matched_members(
    member_strata: np.ndarray, nonmember_strata: np.ndarray, seed: int
) -> np.ndarray:
    """Indices of members drawn per stratum in the non-members' proportions.

    As many members as possible: the stratum that runs out first sets the size.
    """
    strata, nonmember_counts = np.unique(nonmember_strata, return_counts=True)
    share = nonmember_counts / nonmember_counts.sum()
    available = np.array([(member_strata == s).sum() for s in strata])
    total = int(np.floor(np.min(available / share)))
    rng = np.random.default_rng(seed)
    picked = [
        rng.choice(np.flatnonzero(member_strata == s), int(round(total * p)), False)
        for s, p in zip(strata, share, strict=True)
    ]
    return np.sort(np.concatenate(picked))


def class_zscored(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Scores standardised within each class (the attacker knows the labels)."""
    z = scores.astype(float).copy()
    for c in np.unique(labels):
        k = labels == c
        if k.sum() > 1:
            z[k] = (scores[k] - scores[k].mean()) / (scores[k].std() + 1e-12)
    return z


def worst_attack_chance(scores: dict[str, np.ndarray], n_members: int) -> dict:
    """Worst AUC and TPR at 1 % FPR over the attacks, against permuted labels."""
    from medsynth_fl.privacy import permutation_chance
    from medsynth_fl.privacy.report import chance_to_dict

    chance = permutation_chance(scores, n_members)
    return {k: chance_to_dict(chance[k]) for k in ("auc", "tpr_at_1pct_fpr")}


def summary(name: str, member_scores: np.ndarray, nonmember_scores: np.ndarray) -> dict:
    """AUC, TPR at 1 % FPR and their 95 % intervals for one comparison."""
    from medsynth_fl.privacy import evaluate_attack
    from medsynth_fl.privacy.report import result_to_dict

    r = result_to_dict(
        evaluate_attack(name, member_scores, nonmember_scores), include_roc=False
    )
    return {
        k: r[k] for k in ("n_members", "n_nonmembers", "auc", "tpr_at_1pct_fpr")
    } | {"ci95": {k: r["ci95"][k] for k in ("auc", "tpr_at_1pct_fpr")}}


def breakdown(
    scores: np.ndarray,
    member: np.ndarray,
    labels: np.ndarray,
    multiplicity: np.ndarray,
    names: list[str],
    seed: int,
) -> dict:
    """Every stratified reading of one attack's scores (see the module docstring)."""
    from sklearn.metrics import roc_auc_score

    above = member & (scores > scores[~member].max())
    per_class = {}
    for i, name in enumerate(names):
        k = labels == i
        if member[k].any() and (~member[k]).any():
            per_class[name] = {
                "members": int(member[k].sum()),
                "nonmembers": int((~member[k]).sum()),
                "auc": round(float(roc_auc_score(member[k], scores[k])), 4),
                "members_above_every_nonmember": int((above & k).sum()),
            }
    z = class_zscored(scores, labels)
    strata = np.minimum(multiplicity, 3)  # 1, 2, 3+ images of the lesion
    single = multiplicity == 1
    matched = np.flatnonzero(member)[
        matched_members(strata[member], strata[~member], seed)
    ]
    return {
        "auc": round(float(roc_auc_score(member, scores)), 4),
        "members_above_every_nonmember": int(above.sum()),
        "per_class": per_class,
        "auc_class_zscored": round(float(roc_auc_score(member, z)), 4),
        "members_above_every_nonmember_zscored": int(
            (member & (z > z[~member].max())).sum()
        ),
        "members_above_every_nonmember_by_multiplicity": {
            f"{m}{'+' if m == 3 else ''}": int((above & (strata == m)).sum())
            for m in (1, 2, 3)
        },
        "single_image_lesions": summary(
            "single", scores[member & single], scores[~member & single]
        ),
        "multiplicity_matched": summary("matched", scores[matched], scores[~member]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--center", default="HAM_rosendahl")
    parser.add_argument("--shared", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument(
        "--work",
        default=str(REPO / "runs/bench/privacy/medsynth"),
        help="bench/privacy.py's folder of this centre's generator",
    )
    parser.add_argument(
        "--out", default=str(REPO / "bench" / "results" / "privacy_strata.json")
    )
    args = parser.parse_args()

    from medsynth_fl.config import load_config
    from medsynth_fl.data import ImageSet, load_train_test
    from medsynth_fl.models.registry import load_critic
    from medsynth_fl.package import read_package
    from medsynth_fl.privacy import (
        build_package_attacks,
        score_candidates,
        select_candidates,
    )

    t0 = time.monotonic()
    work = Path(args.work)
    cfg = load_config(
        args.preset, shard_overrides(args.shared, args.center) + ATTACK_OVERRIDES
    )
    members, nonmembers = load_train_test(cfg.data)
    pkg = read_package(work / "generator.msfl")
    m, n = select_candidates(  # the candidates run_audit scored
        members,
        nonmembers,
        tuple(pkg.manifest.classes_present),
        cfg.audit.max_candidates,
        cfg.training.seed,
    )
    # Multiplicity within each side's whole fold: a member's exposure in
    # training, a non-member's stratum in the population.
    multiplicity = np.concatenate(
        [
            lesion_multiplicity(m.meta["lesion_id"], members.meta["lesion_id"]),
            lesion_multiplicity(n.meta["lesion_id"], nonmembers.meta["lesion_id"]),
        ]
    )
    candidates = ImageSet.concat([m, n])
    member = np.r_[np.ones(len(m)), np.zeros(len(n))].astype(bool)
    labels = np.asarray(candidates.labels)
    scores_path = work / "strata_scores.npz"  # site-local, next to the generator
    scores = cached_scores(scores_path, pkg.manifest.weights.sha256)
    if scores is None:
        critic = load_critic(work / "site_local" / "critic.safetensors")
        models = build_package_attacks(pkg, cfg.audit, cfg.training.seed)
        scores = score_candidates(models, candidates, critic=critic)
        np.savez(scores_path, package_sha256=pkg.manifest.weights.sha256, **scores)
    result = {
        name: breakdown(
            scores[name],
            member,
            labels,
            multiplicity,
            list(candidates.class_names),
            cfg.training.seed,
        )
        for name in sorted(scores)
    }
    for name, r in result.items():
        single, matched = r["single_image_lesions"], r["multiplicity_matched"]
        print(
            f"{name:>17}: all AUC {r['auc']:.3f} | single-image lesions "
            f"AUC {single['auc']:.3f} TPR@1% {single['tpr_at_1pct_fpr']:.3f} "
            f"{single['ci95']['tpr_at_1pct_fpr']} | matched AUC {matched['auc']:.3f} "
            f"TPR@1% {matched['tpr_at_1pct_fpr']:.3f} "
            f"{matched['ci95']['tpr_at_1pct_fpr']}"
        )
    result["worst_attack_chance"] = {
        "raw": worst_attack_chance(scores, len(m)),
        "class_zscored": worst_attack_chance(
            {k: class_zscored(v, labels) for k, v in scores.items()}, len(m)
        ),
    }
    for kind, chance in result["worst_attack_chance"].items():
        tpr = chance["tpr_at_1pct_fpr"]
        print(
            f"worst TPR@1% ({kind}): {tpr['observed_max']:.3f}, chance mean "
            f"{tpr['null_mean_max']:.3f}, q95 {tpr['null_q95_max']:.3f}, "
            f"p {tpr['p_value']:.3f}"
        )
    result |= {
        "center": args.center,
        "candidates": {
            "members_by_multiplicity": dict(
                Counter(np.minimum(multiplicity[member], 3).tolist())
            ),
            "nonmembers_by_multiplicity": dict(
                Counter(np.minimum(multiplicity[~member], 3).tolist())
            ),
        },
        "package_sha256": pkg.manifest.weights.sha256,
        "seconds": round(time.monotonic() - t0, 1),
        "machine": machine_description(),
        "commit": git_revision(),
    }
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
