"""Membership-inference audit of a MedSynth generator, with a positive control.

1. MedSynth: a generator condensed with the cpu preset on one centre's FLamby
   train fold (members); its test fold (lesion-safe) are the non-members.
   HAM_rosendahl (the headline, ``medsynth``) keeps 229 such non-members, so
   its 1 % FPR threshold rests on two of them; the same audit on
   HAM_vidir_molemax (791 non-members) is a second, less noisy reading.
2. Positive control: a generator deliberately overfit on a tiny set (128 train
   images of the same centre): phase I only with the unregularised LSGAN
   objective that seed 004 shows memorising (no gradient penalty), no
   augmentation or DiffAugment, the plain 9-layer critic without spectral
   norm, raw (not EMA) generator weights, 100 epochs, two critic updates per
   step; non-members: 128 test images of the centre.

Every attack (white-box LOGAN with the site's critic, black-box LOGAN, latent
recovery with φ = identity and φ = a feature network, nearest-neighbour and
density attacks in pixels and in an embedding) is scored with Algorithm 1 and
ROC metrics, with 95 % bootstrap intervals; the memorisation rate and P1(D)
(task accuracy of a ViT trained on the generator's IPC-50 condensed set) are
reported. The attack models are
trained harder than the cpu preset's in-federation audit (see ATTACK_OVERRIDES).

    python bench/privacy.py                   # ~110 min on 2 cores; resumable
    python bench/privacy.py --control-only    # the positive control alone, ~25 min
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from medsynth_fl.config import Config, load_config  # noqa: E402
from medsynth_fl.data import load_train_test  # noqa: E402
from medsynth_fl.data.imageset import ImageSet  # noqa: E402
from medsynth_fl.runinfo import git_revision, machine_description  # noqa: E402

log = logging.getLogger("bench.privacy")
CACHE_VERSION = 5  # 2: bootstrap intervals, balanced task accuracy; 3: chance;
# 4: null control, gate decision, build timings, hinge shadow GAN; 5: audit.precision
ATTACK_OVERRIDES = [
    "audit.n_generated=2000",
    "audit.shadow_steps=400",
    "audit.shadow_width=16",
    "audit.shadow_n_critic=2",
    "audit.encoder_steps=400",
    "audit.max_candidates=1000",
]
CONTROL_OVERRIDES = [  # overfit on purpose: unregularised LSGAN, phase I only
    "phase1.loss=lsgan",
    "phase1.lambda_gp=0",
    "phase1.epochs=100",
    "phase1.n_critic=2",
    "phase1.augment=false",
    "phase1.diffaugment=false",
    # The cpu preset's critic is spectrally normalised and its generator is an
    # EMA: both regularise against memorising, so the control swaps in the
    # plain 9-layer critic without SN and ships the raw weights (with them on,
    # the control read white-box acc 0.508 at 32 px: bench/README.md).
    "critic.arch=paper9",
    "critic.spectral_norm=false",
    "generator.ema_decay=0",
    "phase1.class_sampling=natural",
    "training.lesion_weighting=false",
    "phase2.epochs=0",
    "teacher.steps=1",
    "teacher.epochs=null",
]


def condense(cfg: Config, train: ImageSet, out: Path):
    """Condense in-process (resumable); return the package and the site's critic."""
    from medsynth_fl.models.registry import load_critic
    from medsynth_fl.package import generate_site_key, load_private_key, read_package
    from medsynth_fl.training.condense import Condenser

    key_path = out / "site_key.pem"
    key = (
        load_private_key(key_path)
        if key_path.is_file()
        else generate_site_key(key_path)
    )
    result = Condenser(cfg, train, out, key).run(resume=True)
    return read_package(result.package), load_critic(
        out / "site_local" / "critic.safetensors"
    )


def task_accuracy(pkg, cfg: Config, test: ImageSet) -> tuple[float, float]:
    """Accuracy and balanced accuracy of the downstream ViT.

    The ViT is trained on the generator's IPC-50 condensed set. P1(D) takes the
    accuracy, as seed 001 defines it; the balanced accuracy says how much of it
    is the majority class (HAM_vidir_molemax is 94 % NV).
    """
    from medsynth_fl.evaluation import evaluate_classifier
    from medsynth_fl.sampling import sample_condensed_set
    from medsynth_fl.training.classifier import train_classifier

    m = pkg.manifest
    data = sample_condensed_set(
        pkg.build_generator(), list(m.class_names), list(m.classes_present), 50, seed=0
    )
    ev = evaluate_classifier(train_classifier(data, cfg.classifier, seed=0), test)
    return ev.acc, ev.bal_acc


def cached_audit(pkg, out: Path) -> dict | None:
    """The result of an earlier audit of this very package, if the run was resumed."""
    cache = out / "bench_audit.json"
    if not cache.is_file():
        return None
    saved = json.loads(cache.read_text())
    if saved.get("package_sha256") != pkg.manifest.weights.sha256:
        return None
    if saved.get("version") != CACHE_VERSION:
        return None
    log.info("reusing the audit of %s (same package weights)", out.name)
    return saved["result"]


def audit(
    pkg,
    critic,
    members: ImageSet,
    nonmembers: ImageSet,
    cfg: Config,
    task: Callable[[], tuple[float, float]] | None,
    out: Path,
    check_shadow_loss: bool = False,
) -> dict:
    """Build the generator-only attacks and run every attack.

    ``task`` measures the downstream ViT's (accuracy, balanced accuracy) for
    P1(D); it is called only when the audit is not cached, as it trains a ViT.
    Write the report (with the release gate's decision), the ROC plot and a
    cache keyed by the package's weights hash, so that a resumed benchmark does
    not audit the same generator twice. ``check_shadow_loss`` also scores
    black-box LOGAN with the seed's WGAN-GP shadow GAN (:func:`shadow_loss_check`).
    """
    if (done := cached_audit(pkg, out)) is not None:
        return done
    from medsynth_fl.privacy import (
        audit_options,
        build_package_attacks,
        plot_roc,
        release_gate,
        run_audit,
        write_report_json,
    )
    from medsynth_fl.privacy.report import chance_to_dict, result_to_dict

    acc, balanced_acc = task() if task is not None else (None, None)

    t_build = time.monotonic()
    models = build_package_attacks(pkg, cfg.audit, cfg.training.seed)
    build_seconds = time.monotonic() - t_build
    report = run_audit(
        members,
        nonmembers,
        models,
        critic=critic,
        task_accuracy=acc,
        **audit_options(cfg.audit),
        seed=cfg.training.seed,
    )
    gate = release_gate(report, cfg.audit.max_auc, cfg.audit.max_tpr_at_1pct_fpr)
    write_report_json(report, out / "audit.json", gate)
    plot_roc(report.results, out / "roc.png", title=out.name)
    attacks = {
        name: result_to_dict(r, include_roc=False)
        for name, r in sorted(report.results.items())
    }
    result = {
        "attacks": attacks,
        "memorization": report.memorization,
        "chance": {k: chance_to_dict(c) for k, c in report.chance.items()},
        "null_control": {
            name: result_to_dict(r, include_roc=False)
            for name, r in sorted(report.null_control.items())
        },
        "gate": {"allowed": gate.allowed, "reasons": gate.reasons, "notes": gate.notes},
        "attack_build_seconds": round(build_seconds, 1),
        "attack_build_parts": models.build_seconds,
        "p1d": report.p1d,
        "task_accuracy": acc,
        "task_balanced_accuracy": balanced_acc,
    }
    if check_shadow_loss:
        result["shadow_loss_check"] = shadow_loss_check(
            models, members, nonmembers, cfg
        )
        result["precision_check"] = precision_check(
            pkg, critic, members, nonmembers, cfg, report, result
        )
    (out / "bench_audit.json").write_text(
        json.dumps(
            {
                "package_sha256": pkg.manifest.weights.sha256,
                "version": CACHE_VERSION,
                "result": result,
            }
        )
    )
    return result


def precision_check(
    pkg, critic, members: ImageSet, nonmembers: ImageSet, cfg: Config, report, result
) -> dict | None:
    """The attack models built again in fp32, where the audit built them in bf16.

    Same seeds and candidates, so each attack's AUC can be compared within its
    interval; the build times say what bf16 buys (issue 18 item 7). ``None``
    where the audit already ran in fp32 (no bf16 units: nothing to compare).
    """
    from medsynth_fl.privacy import audit_options, build_package_attacks, run_audit
    from medsynth_fl.training.precision import resolve_precision

    if resolve_precision(cfg.audit.precision, "cpu") != "bf16":
        return None
    fp32 = cfg.audit.model_copy(update={"precision": "fp32"})
    t0 = time.monotonic()
    models = build_package_attacks(pkg, fp32, cfg.training.seed)
    seconds = time.monotonic() - t0
    fp32_report = run_audit(
        members,
        nonmembers,
        models,
        critic=critic,
        **audit_options(fp32),
        seed=cfg.training.seed,
    )

    def figures(rep) -> dict:
        return {
            name: {"auc": float(r.auc), "auc_ci95": [float(b) for b in r.auc_ci]}
            for name, r in sorted(rep.results.items())
        }

    return {
        "bf16": {
            "attack_build_seconds": result["attack_build_seconds"],
            "attack_build_parts": result["attack_build_parts"],
            "attacks": figures(report),
        },
        "fp32": {
            "attack_build_seconds": round(seconds, 1),
            "attack_build_parts": models.build_seconds,
            "attacks": figures(fp32_report),
        },
    }


def shadow_loss_check(
    models, members: ImageSet, nonmembers: ImageSet, cfg: Config
) -> dict:
    """Black-box LOGAN with each shadow-GAN loss, on the same candidates.

    The audit trains the shadow GAN with the hinge loss and a spectrally
    normalised critic (no gradient penalty: half the cost). This re-trains it
    with the seed's WGAN-GP, same steps and seed, so the two figures can be
    compared within their intervals on a useful generator. Every member and
    non-member is scored (the audit may subsample to ``max_candidates``).
    """
    from medsynth_fl.privacy.attacks import logan
    from medsynth_fl.privacy.audit import train_audit_shadow_critic
    from medsynth_fl.privacy.metrics import evaluate_attack
    from medsynth_fl.privacy.report import result_to_dict
    from medsynth_fl.privacy.signals import critic_scores

    a = cfg.audit
    out = {}
    for loss in ("hinge", "wgan-gp"):
        if loss == a.shadow_loss:  # the audit's own shadow critic, reused
            critic, seconds = (
                models.shadow_critic,
                models.build_seconds["shadow_critic"],
            )
        else:
            t0 = time.monotonic()
            critic = train_audit_shadow_critic(
                models.generated, a, cfg.training.seed, loss=loss
            )
            seconds = time.monotonic() - t0
        member_scores, nonmember_scores = (
            logan.black_box_scores(critic_scores(critic, *c.to_tensors()))
            for c in (members, nonmembers)
        )
        r = evaluate_attack(
            "logan_bb",
            member_scores,
            nonmember_scores,
            n_bootstrap=a.n_bootstrap,
            seed=0,
        )
        out[loss] = result_to_dict(r, include_roc=False) | {
            "train_seconds": round(seconds, 1)
        }
    return out


def shard_overrides(shared: str, center: str) -> list[str]:
    """Config overrides that read one centre of the shared shards.

    The images are resized to the preset's size (32 px for ``cpu``: the size
    its generators are condensed and shipped at).
    """
    return [
        "data.source=shards",
        f"data.path={json.dumps(str(Path(shared).resolve()))}",
        f"data.centers=[{center}]",
        "data.empty_class=skip",
    ]


def audit_medsynth(preset: str, shared: str, center: str, work: Path) -> dict:
    """Condense one centre's train fold with ``preset`` and audit the generator.

    Members: the centre's FLamby train fold; non-members: its test fold less
    the lesions also photographed in the train fold.
    """
    cfg = load_config(preset, shard_overrides(shared, center) + ATTACK_OVERRIDES)
    train, test = load_train_test(cfg.data)
    log.info(
        "%s: %d members (train fold), %d non-members (test fold)",
        center,
        len(train),
        len(test),
    )
    t0 = time.monotonic()
    pkg, critic = condense(cfg, train, work)
    seconds = time.monotonic() - t0
    result = audit(
        pkg,
        critic,
        train,
        test,
        cfg,
        lambda: task_accuracy(pkg, cfg, test),
        work,
        check_shadow_loss=True,
    )
    return result | {
        "center": center,
        "members": len(train),
        "nonmembers": len(test),
        "condense_seconds": round(seconds, 1),
    }


def targets(attacks: dict, chance: dict) -> dict:
    """The issue's MedSynth targets on one audit: the worst attack's figures.

    Beside each worst figure, what the same maximum over attacks reaches by
    chance on these candidates (permuted membership labels) and its
    family-wise p-value: a target below the chance level cannot be met by a
    generator that leaks nothing, and a miss at chance is not a leak.
    """
    worst_auc = max(attacks, key=lambda name: attacks[name]["auc"])
    worst_tpr = max(attacks, key=lambda name: attacks[name]["tpr_at_1pct_fpr"])
    auc, tpr = chance["auc"], chance["tpr_at_1pct_fpr"]
    return {
        "max_auc": attacks[worst_auc]["auc"],
        "max_auc_attack": worst_auc,
        "max_auc_ci95": attacks[worst_auc]["ci95"]["auc"],
        "max_tpr_at_1pct_fpr": attacks[worst_tpr]["tpr_at_1pct_fpr"],
        "max_tpr_attack": worst_tpr,
        "max_tpr_at_1pct_fpr_ci95": attacks[worst_tpr]["ci95"]["tpr_at_1pct_fpr"],
        "met": all(
            a["auc"] <= 0.55 and a["tpr_at_1pct_fpr"] <= 0.02 for a in attacks.values()
        ),
        "max_auc_by_chance": {k: auc[k] for k in ("null_mean_max", "null_q95_max")},
        "max_auc_p_value": auc["p_value"],
        "max_tpr_at_1pct_fpr_by_chance": {
            k: tpr[k] for k in ("null_mean_max", "null_q95_max")
        },
        "max_tpr_at_1pct_fpr_p_value": tpr["p_value"],
        "beyond_chance": auc["p_value"] <= 0.05 or tpr["p_value"] <= 0.05,
    }


def positive_control(
    preset: str, shared: str, center: str, n_images: int, work: Path
) -> dict:
    """Condense the deliberately overfit control on a tiny subset and audit it."""
    data = shard_overrides(shared, center)
    control_cfg = load_config(preset, data + ATTACK_OVERRIDES + CONTROL_OVERRIDES)
    train, test = load_train_test(control_cfg.data)
    rng = np.random.default_rng(0)
    tiny_train = train.subset(np.sort(rng.choice(len(train), n_images, replace=False)))
    tiny_test = test.subset(
        np.sort(rng.choice(len(test), min(n_images, len(test)), replace=False))
    )
    t0 = time.monotonic()
    control_pkg, control_critic = condense(control_cfg, tiny_train, work)
    t_control = time.monotonic() - t0
    control = audit(
        control_pkg, control_critic, tiny_train, tiny_test, control_cfg, None, work
    )
    return {
        "overfit_control": control["attacks"],
        "memorization": control["memorization"],
        "null_control": control.get("null_control"),
        "gate": control["gate"],
        "control_white_box_acc": control["attacks"]["logan_wb"]["acc"],
        "control_gate_allowed": control["gate"]["allowed"],
        "control_members": len(tiny_train),
        "control_nonmembers": len(tiny_test),
        "control_steps": control_pkg.manifest.training.phase1_steps,
        "control_seconds": round(t_control, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument(
        "--center",
        default="HAM_rosendahl",
        help="centre of the headline audit and of the positive control",
    )
    parser.add_argument(
        "--pool-center",
        default="HAM_vidir_molemax",
        help="second MedSynth audit on the centre with the most lesion-clean "
        "non-members (791: a 1%% FPR threshold on ~8 of them, not ~2); "
        "'none' skips it",
    )
    parser.add_argument("--control-images", type=int, default=128)
    parser.add_argument("--shared", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--work", default=str(REPO / "runs" / "bench" / "privacy"))
    parser.add_argument(
        "--control-only",
        action="store_true",
        help="re-measure the positive control alone (~25 min instead of ~110) "
        "and write it to bench/results/privacy_control.json",
    )
    parser.add_argument("--out", default=None, help="result JSON (default by mode)")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    t_start = time.monotonic()
    work = Path(args.work)
    results = REPO / "bench" / "results"
    if args.control_only:
        out = Path(args.out or results / "privacy_control.json")
        control = positive_control(
            args.preset,
            args.shared,
            args.center,
            args.control_images,
            work / "overfit_control",
        )
        result = control | {"center": args.center} | run_facts(args.preset, t_start)
        write_result(out, result)
        print_control_summary(result)
        return 0
    out = Path(args.out or results / "privacy.json")
    medsynth = audit_medsynth(args.preset, args.shared, args.center, work / "medsynth")
    by_center = {args.center: medsynth}
    if args.pool_center != "none":
        by_center[args.pool_center] = audit_medsynth(
            args.preset, args.shared, args.pool_center, work / args.pool_center
        )
    control = positive_control(
        args.preset,
        args.shared,
        args.center,
        args.control_images,
        work / "overfit_control",
    )

    center_targets = {
        c: targets(r["attacks"], r["chance"]) for c, r in by_center.items()
    }
    headline = center_targets[args.center]
    result = {
        "medsynth": medsynth["attacks"],
        "overfit_control": control["overfit_control"],
        "memorization_rate": {
            "medsynth": medsynth["memorization"],
            "overfit_control": control["memorization"],
        },
        "p1d": medsynth["p1d"],
        "task_accuracy": medsynth["task_accuracy"],
        "medsynth_by_center": {
            center: {
                key: r[key]
                for key in (
                    "members",
                    "nonmembers",
                    "attacks",
                    "memorization",
                    "chance",
                    "task_accuracy",
                    "task_balanced_accuracy",
                    "p1d",
                    "null_control",
                    "gate",
                    "attack_build_seconds",
                    "attack_build_parts",
                    "condense_seconds",
                )
                if key in r
            }
            | {"targets": center_targets[center]}
            for center, r in by_center.items()
        },
        "targets": {
            "medsynth_max_auc": headline["max_auc"],
            "medsynth_max_tpr_at_1pct_fpr": headline["max_tpr_at_1pct_fpr"],
            "medsynth_max_tpr_at_1pct_fpr_p_value": headline[
                "max_tpr_at_1pct_fpr_p_value"
            ],
            "control_white_box_acc": control["control_white_box_acc"],
            "medsynth_gate_allowed": medsynth["gate"]["allowed"],
            "control_gate_allowed": control["control_gate_allowed"],
            "medsynth_attack_build_seconds": medsynth["attack_build_seconds"],
        },
        "shadow_loss_check": medsynth.get("shadow_loss_check"),
        "precision_check": medsynth.get("precision_check"),
        "center": args.center,
        "members": medsynth["members"],
        "nonmembers": medsynth["nonmembers"],
        "control_members": control["control_members"],
        "control_nonmembers": control["control_nonmembers"],
        "control_steps": control["control_steps"],
        "condense_seconds": medsynth["condense_seconds"],
        "control_seconds": control["control_seconds"],
    } | run_facts(args.preset, t_start)
    write_result(out, result)
    print_summary(result)
    return 0


def run_facts(preset: str, t_start: float) -> dict:
    """Wall time, machine, commit and settings: what every result JSON records."""
    return {
        "seconds": round(time.monotonic() - t_start, 1),
        "machine": machine_description(),
        "commit": git_revision(),
        "preset": preset,
        "attack_overrides": ATTACK_OVERRIDES,
        "control_overrides": CONTROL_OVERRIDES,
    }


def write_result(out: Path, result: dict) -> None:
    """Write the bench's JSON (NaN refused: a figure that is not a number is a bug)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, allow_nan=False))


def _figure(a: dict | None) -> str:
    """``acc/AUC/TPR@1% [TPR CI]`` of one attack, or ``-``."""
    if a is None:
        return "-"
    low, high = a["ci95"]["tpr_at_1pct_fpr"]
    return (
        f"{a['acc']:.3f}/{a['auc']:.3f}/{a['tpr_at_1pct_fpr']:.3f} "
        f"[{low:.3f},{high:.3f}]"
    )


def print_control_summary(result: dict) -> None:
    """One row per attack on the positive control, and its target."""
    print("positive control: acc/AUC/TPR@1%FPR [95% CI of TPR@1%FPR]")
    for name, attack in sorted(result["overfit_control"].items()):
        print(f"{name:>18} {_figure(attack):>40}")
    print(
        f"control white-box acc {result['control_white_box_acc']:.3f} (target ≥ 0.9); "
        f"gate allowed: {result['control_gate_allowed']}; "
        f"wall time {result['seconds'] / 60:.1f} min on {result['machine']}"
    )


def print_summary(result: dict) -> None:
    """One row per attack: every MedSynth audit and the control."""
    columns = {
        f"{center} ({r['nonmembers']} non-members)": r["attacks"]
        for center, r in result["medsynth_by_center"].items()
    } | {"control": result["overfit_control"]}
    print("MedSynth and control: acc/AUC/TPR@1%FPR [95% CI of TPR@1%FPR]")
    print(f"{'attack':>18} " + " ".join(f"{c[:40]:>40}" for c in columns))
    for name in sorted(result["overfit_control"]):
        cells = (_figure(attacks.get(name)) for attacks in columns.values())
        print(f"{name:>18} " + " ".join(f"{c:>40}" for c in cells))
    for center, r in result["medsynth_by_center"].items():
        print(f"MedSynth targets on {center}: {r['targets']}")
    print(
        f"control white-box acc {result['targets']['control_white_box_acc']:.3f} "
        "(targets: MedSynth AUC ≤ 0.55, TPR@1% ≤ 0.02; control white-box acc ≥ 0.9)"
    )
    print(f"wall time {result['seconds'] / 60:.1f} min on {result['machine']}")


if __name__ == "__main__":
    sys.exit(main())
