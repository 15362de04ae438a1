"""Utility of MedSynth condensed sets on real ISIC 2019 images (issue 15).

Condenses the pooled HAM training fold once per condensation seed, then trains
the preset's downstream model, under one rule (same model, augmentation, steps
and class-balanced batches) on:

- ``full_real``: every real training image;
- ``random_real_ipc50`` / ``_ipc100``: random real images per class, hard labels;
- ``random_real_ipc50_soft``: the same images with the site teacher's soft
  labels (the soft-label rule MedSynth gets, for honesty);
- ``medsynth_ipc50`` / ``_ipc100``: a condensed set sampled once (the paper's
  protocol), with the label head's soft labels; ``medsynth_ipc50_hard``: hard;
- ``medsynth_stream``: fresh generator samples at every step (soft labels);
- ``phase1_only_ipc50``: the generator before the teacher's stages (hard labels);
- ``no_mask_ipc50``: seed 000's mask ablation; it applies to the ``attention``
  generator only and is reported as not applicable for ``cbn_resnet``;
- ``<arm>@resnet18`` and ``<arm>@vit``: cross-architecture (seed 000 Fig. 2);
- ``phase1_curve``: phase I's learning curve, read by the site teacher on
  samples of site-local snapshots (:func:`phase1_curve`).

Each MedSynth arm is run once per condensation seed (downstream seed = that
seed); random-real arms use the same seeds for their draws. Reports macro AUC,
accuracy, balanced accuracy (mean, std, each seed), per-class AUC with its
positive count, and a paired bootstrap 95 % interval of (MedSynth − random real)
over the test images.

Data: the four HAM centres of ../shared/data at the preset's size (32 px for
``cpu``); FLamby's train fold for training and its lesion-safe test fold for
testing. Settings were chosen on a lesion-grouped validation split of the
train fold (docs/decisions.md), never on the test fold.

    python bench/condense_utility.py --preset cpu            # ~60 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from medsynth_fl.config import Config, load_config  # noqa: E402
from medsynth_fl.data import load_train_test  # noqa: E402
from medsynth_fl.data.embedded import HAM_CENTERS  # noqa: E402
from medsynth_fl.data.imageset import ImageSet  # noqa: E402
from medsynth_fl.runinfo import git_revision, machine_description  # noqa: E402

log = logging.getLogger("bench.condense_utility")


def bench_config(preset: str, shared: Path, extra: list[str]) -> Config:
    """The preset pointed at the shared shards and the HAM centres."""
    return load_config(
        preset,
        [
            "data.source=shards",
            f"data.path={json.dumps(str(shared))}",
            f"data.centers={json.dumps(HAM_CENTERS)}",
            "data.split=flamby",
            *extra,
        ],
    )


def condense(
    preset: str, shared: Path, out: Path, extra: list[str], threads: int
) -> subprocess.Popen:
    """Start ``medsynth-fl condense`` in its own process (resumes if interrupted)."""
    overrides = [
        "data.source=shards",
        f"data.path={shared}",
        f"data.centers={json.dumps(HAM_CENTERS)}",
        *extra,
    ]
    cmd = [
        sys.executable,
        "-m",
        "medsynth_fl.cli",
        "condense",
        "--config",
        preset,
        "--out",
        str(out),
        "--resume",
    ]
    for o in overrides:
        cmd += ["--set", o]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1")
    out.mkdir(parents=True, exist_ok=True)
    log.info("condense → %s", out)
    return subprocess.Popen(
        cmd,
        env=env,
        cwd=REPO,
        stdout=open(out / "bench.log", "a"),
        stderr=subprocess.STDOUT,
    )


def random_real_subset(train: ImageSet, ipc: int, seed: int) -> ImageSet:
    """``ipc`` random real images per class (all of a class that has fewer)."""
    rng = np.random.default_rng(seed)
    idx = []
    for k in range(len(train.class_names)):
        members = np.flatnonzero(train.labels == k)
        idx.extend(rng.choice(members, size=min(ipc, len(members)), replace=False))
    return train.subset(np.sort(np.array(idx)))


ARMS = [
    "full_real",
    "medsynth_ipc50",
    "medsynth_ipc100",
    "random_real_ipc50",
    "random_real_ipc100",
    "phase1_only_ipc50",
    "no_mask_ipc50",
    "medsynth_stream",
    "medsynth_ipc50_hard",
    "random_real_ipc50_soft",
]
CROSS_ARCH = ["resnet18", "vit"]
CROSS_ARMS = ["medsynth_ipc50", "random_real_ipc50"]
VIT_32PX = [  # the from-scratch ViT of the earlier cpu preset, at 32 px
    "classifier.vit.model=vit_tiny_patch16_224",
    "classifier.vit.img_size=32",
    "classifier.vit.patch_size=4",
    "classifier.vit.embed_dim=128",
    "classifier.vit.depth=4",
    "classifier.vit.num_heads=4",
    "classifier.vit.adaptation=full",
]


def site_teacher(folder: Path, cfg: Config, num_classes: int, image_size: int):
    """The site-local teacher a condensation in ``folder`` trained."""
    from safetensors.torch import load_file

    from medsynth_fl.models.classifiers import build_classifier

    model = build_classifier(cfg.teacher, num_classes, image_size)
    model.load_state_dict(load_file(folder / "site_local" / "teacher.safetensors"))
    return model.eval()


def teacher_soft_labels(folder: Path, data: ImageSet, cfg: Config) -> np.ndarray:
    """The softmax of the teacher of the same seed's condensation on ``data``."""
    import torch

    from medsynth_fl.evaluation import predict_proba

    model = site_teacher(folder, cfg, len(data.class_names), data.image_size)
    with torch.no_grad():
        return predict_proba(model, data).astype(np.float32)


def phase1_curve(folder: Path, cfg: Config, test: ImageSet, seed: int) -> dict:
    """Class fidelity of phase I's snapshots, read by the site's own teacher.

    For each site-local snapshot (``training.snapshot_every``) and the phase-I
    package: 50 samples per class, scored by the teacher as if the conditioning
    label were the truth (AUC, balanced accuracy). A generator whose samples the
    teacher recognises as their class is learning the label; the teacher's own
    test-fold figures are the reading's ceiling. Seconds per point, so it can
    be read at every snapshot where a downstream training per point cannot.
    """
    import torch
    from safetensors.torch import load_file

    from medsynth_fl.evaluation import classification_metrics, predict_proba
    from medsynth_fl.package import read_package
    from medsynth_fl.sampling import sample_condensed_set
    from medsynth_fl.training.condense import SNAPSHOT_DIR

    pkg = read_package(folder / "generator_phase1.msfl")
    m = pkg.manifest
    teacher = site_teacher(folder, cfg, len(m.class_names), test.image_size)
    generator = pkg.build_generator()
    points = sorted((folder / "site_local" / SNAPSHOT_DIR).glob("step_*.safetensors"))
    curve = []
    for source in [*points, None]:
        if source is None:
            generator.load_state_dict(pkg.tensors)
            step = m.training.phase1_steps
        else:
            generator.load_state_dict(load_file(source))
            step = int(source.stem.removeprefix("step_"))
        data = sample_condensed_set(
            generator.eval(), m.class_names, m.classes_present, 50, seed=seed
        )
        with torch.no_grad():
            proba = predict_proba(teacher, data)
        r = classification_metrics(data.labels, proba)
        curve.append({"step": step, "teacher_auc": r.auc, "teacher_bal_acc": r.bal_acc})
    with torch.no_grad():
        ceiling = classification_metrics(test.labels, predict_proba(teacher, test))
    return {
        "points": curve,
        "teacher_on_real_test": {"auc": ceiling.auc, "bal_acc": ceiling.bal_acc},
    }


def _train_and_eval(job: tuple) -> tuple[str, int, dict, np.ndarray]:
    """Worker for one arm: build its training data, train, evaluate on the test fold."""
    import dataclasses

    import torch

    torch.set_num_threads(1)
    arm, seed, preset, shared, extra, work = job
    from medsynth_fl.evaluation import classification_metrics, predict_proba
    from medsynth_fl.package import read_package
    from medsynth_fl.sampling import sample_condensed_set
    from medsynth_fl.training.classifier import ClassifierTrainer
    from medsynth_fl.training.loop import LoopContext
    from medsynth_fl.training.stream import GeneratorStream

    base, _, arch = arm.partition("@")
    arch_extra = []
    if arch:
        arch_extra = [f"classifier.arch={arch}", *(VIT_32PX if arch == "vit" else [])]
    cfg = bench_config(preset, Path(shared), [*extra, *arch_extra])
    train, test = load_train_test(cfg.data)
    work = Path(work)
    folder = work / f"medsynth_s{seed}"
    label_mode = "soft"
    stream = None
    kind, _, ipc = base.rpartition("_ipc")
    if base == "full_real":
        data = train
        label_mode = "hard"
    elif base.startswith("random_real"):
        data = random_real_subset(train, int(ipc.removesuffix("_soft")), seed)
        if base.endswith("_soft"):
            data = dataclasses.replace(
                data, soft_labels=teacher_soft_labels(folder, data, cfg)
            )
        else:
            label_mode = "hard"  # real images carry their own labels
    else:
        name = "generator_phase1.msfl" if kind == "phase1_only" else "generator.msfl"
        pkg = read_package(folder / name)
        m = pkg.manifest
        generator = pkg.build_generator()
        if base == "medsynth_stream":
            present = [m.class_names.index(c) for c in m.classes_present]
            stream = GeneratorStream([(generator, present)], len(m.class_names))
            data = sample_condensed_set(
                generator, m.class_names, m.classes_present, 50, seed=seed
            )
        else:
            ipc = ipc.removesuffix("_hard")
            data = sample_condensed_set(
                generator, m.class_names, m.classes_present, int(ipc), seed=seed
            )
        # The phase-I package's label head has not met the teacher yet.
        if base.endswith("_hard") or kind == "phase1_only":
            label_mode = "hard"
    ccfg = cfg.classifier.model_copy(update={"label_mode": label_mode})
    t0 = time.monotonic()
    torch.manual_seed(seed)
    trainer = ClassifierTrainer(
        ccfg,
        len(train.class_names),
        LoopContext(seed=seed).info,
        len(data),
        train.image_size,
    )
    ctx = LoopContext(seed=seed)
    if stream is not None:
        model = trainer.fit_source(stream, ctx)
    else:
        model = trainer.fit(data, ctx)
    proba = predict_proba(model, test)
    metrics = classification_metrics(test.labels, proba).as_dict()
    metrics.update(
        train_images=len(data) if stream is None else trainer.steps * ccfg.batch_size,
        train_seconds=time.monotonic() - t0,
        label_mode=label_mode,
        auc_per_class=per_class_auc(test.labels, proba, test.class_names),
    )
    return arm, seed, metrics, proba


def per_class_auc(y: np.ndarray, proba: np.ndarray, names) -> dict:
    """One-vs-rest AUC per class with its number of test positives."""
    from sklearn.metrics import roc_auc_score

    out = {}
    for k, name in enumerate(names):
        pos = y == k
        if 0 < pos.sum() < len(y):
            out[name] = {
                "auc": float(roc_auc_score(pos, proba[:, k])),
                "n_pos": int(pos.sum()),
            }
    return out


def paired_bootstrap(
    y: np.ndarray, a: list[np.ndarray], b: list[np.ndarray], n_boot: int = 1000
) -> dict:
    """95 % interval of mean(metric(a)) − mean(metric(b)) over resampled test images."""
    from medsynth_fl.evaluation import classification_metrics

    rng = np.random.default_rng(0)
    deltas = {"auc": [], "bal_acc": []}
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        ma = [classification_metrics(y[idx], p[idx]) for p in a]
        mb = [classification_metrics(y[idx], p[idx]) for p in b]
        for key in deltas:
            deltas[key].append(
                np.mean([getattr(m, key) for m in ma])
                - np.mean([getattr(m, key) for m in mb])
            )
    return {
        key: {
            "mean": float(np.mean(v)),
            "ci95": [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))],
        }
        for key, v in deltas.items()
    }


def summarise(rows: list[tuple[str, int, dict]], arms: list[str]) -> dict:
    """Mean, std and each seed per arm, in the issue's key layout."""
    out = {}
    for arm in arms:
        ms = [(s, m) for a, s, m in rows if a == arm]
        if not ms:
            continue
        entry = {}
        for key in ("auc", "acc", "bal_acc"):
            values = [m[key] for _, m in ms]
            entry[key] = float(np.mean(values))
            entry[f"{key}_std"] = float(np.std(values))
            entry[f"{key}_per_seed"] = {str(s): m[key] for s, m in ms}
        entry["n_seeds"] = len(ms)
        entry["train_images"] = int(ms[0][1]["train_images"])
        entry["label_mode"] = ms[0][1]["label_mode"]
        entry["auc_per_class"] = ms[0][1]["auc_per_class"]
        out[arm] = entry
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--shared", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0, 1],
        help="condensation seeds (each also the downstream seed of its arms)",
    )
    parser.add_argument(
        "--work", default=str(REPO / "runs" / "bench" / "condense_utility")
    )
    parser.add_argument(
        "--out", default=str(REPO / "bench" / "results" / "condense_utility.json")
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="parallel processes (1 thread each)"
    )
    parser.add_argument(
        "--no-cross-arch", action="store_true", help="skip the ResNet-18 / ViT arms"
    )
    parser.add_argument(
        "--snapshot-every",
        type=int,
        default=400,
        help="phase-I steps between site-local snapshots for the learning curve "
        "(a multiple of training.checkpoint_every; 0: none)",
    )
    parser.add_argument(
        "--set", dest="extra", action="append", default=[], help="extra config override"
    )
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    t_start = time.monotonic()
    shared, work = Path(args.shared).resolve(), Path(args.work)
    cfg = bench_config(args.preset, shared, args.extra)
    train, test = load_train_test(cfg.data)
    log.info(
        "train %d, test %d images at %d px", len(train), len(test), cfg.data.image_size
    )

    # One condensation per seed, all at once, one thread each (2 cores).
    threads = 1 if args.workers > 1 else 2
    procs = [
        condense(
            args.preset,
            shared,
            work / f"medsynth_s{seed}",
            [
                *args.extra,
                f"training.seed={seed}",
                f"training.snapshot_every={args.snapshot_every}",
            ],
            threads,
        )
        for seed in args.seeds
    ]
    if any(p.wait() != 0 for p in procs):
        raise SystemExit(f"condensation failed; see {work}/*/bench.log")
    t_condensed = time.monotonic()

    if cfg.generator.arch != "cbn_resnet":
        raise SystemExit("this bench measures the cbn_resnet generator (cpu preset)")
    arms = [a for a in ARMS if a != "no_mask_ipc50"]
    if cfg.phase2.epochs == 0:
        # Phase II off: the phase-I package draws the same images as the final
        # one, so "phase1_only" would repeat "medsynth_ipc50_hard" exactly.
        arms.remove("phase1_only_ipc50")
    if not args.no_cross_arch:
        arms += [f"{a}@{x}" for x in CROSS_ARCH for a in CROSS_ARMS]
    jobs = [
        (arm, seed, args.preset, str(shared), args.extra, str(work))
        for arm in arms
        for seed in args.seeds
    ]
    rows, probas = [], {}
    with ProcessPoolExecutor(args.workers) as pool:
        for arm, seed, metrics, proba in pool.map(_train_and_eval, jobs):
            log.info(
                "%s seed %d: auc %.4f bal_acc %.4f (%.0f s)",
                arm,
                seed,
                metrics["auc"],
                metrics["bal_acc"],
                metrics["train_seconds"],
            )
            rows.append((arm, seed, metrics))
            probas[arm, seed] = proba

    from medsynth_fl.package import read_package

    pkg_path = work / f"medsynth_s{args.seeds[0]}" / "generator.msfl"
    pkg = read_package(pkg_path)
    result = summarise(rows, arms)
    result["no_mask_ipc50"] = {
        "not_applicable": "cbn_resnet has no mask blend (eq. 1); the ablation "
        "belongs to the attention generator (configs/paper.yaml)"
    }
    seeds = args.seeds

    def paired(a: str, b: str) -> dict:
        return paired_bootstrap(
            test.labels, [probas[a, s] for s in seeds], [probas[b, s] for s in seeds]
        )

    result["phase1_curve"] = {
        str(s): phase1_curve(work / f"medsynth_s{s}", cfg, test, s) for s in seeds
    }
    result["paired_vs_random_real_ipc50"] = {
        arm: paired(arm, "random_real_ipc50")
        for arm in ("medsynth_ipc50", "medsynth_stream", "medsynth_ipc50_hard")
    }
    result.update(
        {
            "n_seeds": len(seeds),
            "image_size": cfg.data.image_size,
            "package_bytes": pkg_path.stat().st_size,
            "raw_bytes": int(train.images.nbytes),
            "condense_seconds": pkg.manifest.training.seconds,
            "condense_wall_seconds": round(t_condensed - t_start, 1),
            "seconds": round(time.monotonic() - t_start, 1),
            "machine": machine_description(),
            "commit": git_revision(),
            "preset": args.preset,
            "overrides": args.extra,
            "train_images": len(train),
            "test_images": len(test),
            "test_positives": dict(
                zip(test.class_names, map(int, test.class_counts()), strict=True)
            ),
            "seeds": seeds,
            "config": cfg.model_dump(mode="json"),
            "per_seed": [{"arm": a, "seed": s, **m} for a, s, m in rows],
        }
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    for arm in arms:
        r = result[arm]
        print(
            f"{arm:32s} AUC {r['auc']:.3f} ± {r['auc_std']:.3f}  "
            f"bal-acc {r['bal_acc']:.3f} ± {r['bal_acc_std']:.3f}  ({r['label_mode']})"
        )
    full = result["full_real"]["auc"]
    best = max(("medsynth_ipc50", "medsynth_stream"), key=lambda a: result[a]["auc"])
    print(
        f"medsynth_ipc50 AUC / full AUC = {result['medsynth_ipc50']['auc'] / full:.3f} "
        f"(target ≥ 0.90); best MedSynth arm {best}"
    )
    for arm, d in result["paired_vs_random_real_ipc50"].items():
        print(
            f"{arm} − random_real_ipc50: AUC {d['auc']['mean']:+.3f} "
            f"[{d['auc']['ci95'][0]:+.3f}, {d['auc']['ci95'][1]:+.3f}], bal-acc "
            f"{d['bal_acc']['mean']:+.3f} "
            f"[{d['bal_acc']['ci95'][0]:+.3f}, {d['bal_acc']['ci95'][1]:+.3f}]"
        )
    for seed, c in result["phase1_curve"].items():
        points = ", ".join(
            f"{p['step']}: {p['teacher_bal_acc']:.2f}" for p in c["points"]
        )
        print(
            f"seed {seed} phase I, teacher bal-acc on samples by step: {points} "
            f"(teacher on real test {c['teacher_on_real_test']['bal_acc']:.2f})"
        )
    print(
        f"package {result['package_bytes']:,} bytes vs raw training images "
        f"{result['raw_bytes']:,} bytes"
    )
    print(f"wall time {result['seconds'] / 60:.1f} min on {result['machine']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
