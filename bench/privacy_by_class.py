"""Is a MedSynth generator's membership signal a class-mix artefact? Scores by class.

Members (a centre's train fold) and non-members (its test fold) differ a little
in class mix, and the black-box critic is class-conditional, so an attack could
rank members first only because it scores some classes higher. This script
rebuilds the generator-only attack models of ``bench/privacy.py``'s generator
exactly as that benchmark did (same config, same seed: the scores reproduce its
AUC to the last digit), scores the same candidates, and reports for a few
attacks:

- the AUC within each class (members and non-members of one class only);
- the members that score above every non-member, by class;
- the AUC after z-scoring the scores within each class (labels are known to the
  attacker).

    python bench/privacy_by_class.py        # ~18 min on 2 cores, after bench/privacy.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.privacy import ATTACK_OVERRIDES, shard_overrides  # noqa: E402
from medsynth_fl.runinfo import git_revision, machine_description  # noqa: E402

ATTACKS = ("logan_bb", "nn_embed", "density_embed")


def breakdown(
    scores: np.ndarray, member: np.ndarray, labels: np.ndarray, names: list[str]
) -> dict:
    """Per-class AUCs, members above every non-member, and the class-z-scored AUC."""
    from sklearn.metrics import roc_auc_score

    above = member & (scores > scores[~member].max())
    per_class = {}
    z = scores.astype(float).copy()
    for i, name in enumerate(names):
        k = labels == i
        if member[k].any() and (~member[k]).any():
            per_class[name] = {
                "members": int(member[k].sum()),
                "nonmembers": int((~member[k]).sum()),
                "auc": round(float(roc_auc_score(member[k], scores[k])), 4),
                "members_above_every_nonmember": int((above & k).sum()),
            }
        if k.sum() > 1:
            z[k] = (scores[k] - scores[k].mean()) / (scores[k].std() + 1e-12)
    return {
        "auc": round(float(roc_auc_score(member, scores)), 4),
        "members_above_every_nonmember": int(above.sum()),
        "per_class": per_class,
        "auc_class_zscored": round(float(roc_auc_score(member, z)), 4),
        "members_above_every_nonmember_zscored": int(
            (member & (z > z[~member].max())).sum()
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--center", default="HAM_rosendahl")
    parser.add_argument("--shared", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument(
        "--package",
        default=str(REPO / "runs/bench/privacy/medsynth/generator.msfl"),
    )
    parser.add_argument(
        "--out", default=str(REPO / "bench" / "results" / "privacy_by_class.json")
    )
    args = parser.parse_args()

    from medsynth_fl.config import load_config
    from medsynth_fl.data import ImageSet, load_train_test
    from medsynth_fl.package import read_package
    from medsynth_fl.privacy import (
        build_package_attacks,
        score_candidates,
        select_candidates,
    )

    t0 = time.monotonic()
    cfg = load_config(
        args.preset, shard_overrides(args.shared, args.center) + ATTACK_OVERRIDES
    )
    members, nonmembers = load_train_test(cfg.data)
    pkg = read_package(args.package)
    models = build_package_attacks(pkg, cfg.audit, cfg.training.seed)
    m, n = select_candidates(  # the candidates run_audit scored
        members,
        nonmembers,
        models.classes_present,
        cfg.audit.max_candidates,
        cfg.training.seed,
    )
    candidates = ImageSet.concat([m, n])
    scores = score_candidates(models, candidates)
    member = np.r_[np.ones(len(m)), np.zeros(len(n))].astype(bool)
    labels = np.asarray(candidates.labels)
    result = {
        name: breakdown(scores[name], member, labels, list(candidates.class_names))
        for name in ATTACKS
    }
    for name, r in result.items():
        print(name, json.dumps(r))
    result |= {
        "center": args.center,
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
