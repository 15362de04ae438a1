"""Utility of MedSynth condensed sets on real ISIC 2019 images (condensation issue).

Trains the downstream ViT on: all real training images; MedSynth condensed sets
at IPC 50 and 100; random real subsets at the same IPC; the phase-I-only
generator at IPC 50; the generator without the mask blend at IPC 50. Reports
macro AUC, accuracy and balanced accuracy (mean ± std over downstream seeds),
condensation time per phase, package bytes and raw training-image bytes.

Data: the four HAM centres of ../shared/data at 64 px; FLamby's train fold for
training and its test fold (lesion-safe) for testing. Nothing is selected on
the test fold: every setting comes from the preset.

    python bench/condense_utility.py --preset cpu            # ~90 min on 2 cores
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
    """The preset pointed at the shared shards, HAM centres, 64 px."""
    return load_config(
        preset,
        [
            "data.source=shards",
            f"data.path={json.dumps(str(shared))}",
            "data.image_size=64",
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
        "data.image_size=64",
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


def _train_and_eval(job: tuple) -> tuple[str, int, dict]:
    """Worker for one arm.

    Build the arm's training set, train a fresh ViT, evaluate on the test fold.
    """
    import torch

    torch.set_num_threads(1)
    arm, seed, preset, shared, extra, work = job
    from medsynth_fl.evaluation import evaluate_classifier
    from medsynth_fl.package import read_package
    from medsynth_fl.sampling import sample_condensed_set
    from medsynth_fl.training.classifier import train_classifier

    cfg = bench_config(preset, Path(shared), extra)
    train, test = load_train_test(cfg.data)
    kind, _, ipc = arm.rpartition("_ipc")
    if arm == "full_real":
        data = train
    elif kind == "random_real":
        data = random_real_subset(train, int(ipc), seed)
    else:
        package = {
            "medsynth": "generator.msfl",
            "phase1_only": "generator_phase1.msfl",
            "no_mask": "generator.msfl",
        }[kind]
        folder = "no_mask" if kind == "no_mask" else "medsynth"
        pkg = read_package(Path(work) / folder / package)
        m = pkg.manifest
        data = sample_condensed_set(
            pkg.build_generator(), m.class_names, m.classes_present, int(ipc), seed=seed
        )
    t0 = time.monotonic()
    model = train_classifier(data, cfg.classifier, seed=seed)
    metrics = evaluate_classifier(model, test).as_dict()
    metrics.update(train_images=len(data), train_seconds=time.monotonic() - t0)
    return arm, seed, metrics


ARMS = [
    "full_real",
    "medsynth_ipc50",
    "medsynth_ipc100",
    "random_real_ipc50",
    "random_real_ipc100",
    "phase1_only_ipc50",
    "no_mask_ipc50",
]


def summarise(rows: list[tuple[str, int, dict]]) -> dict:
    """Mean and std over seeds per arm, in the issue's key layout."""
    out = {}
    for arm in ARMS:
        ms = [m for a, _, m in rows if a == arm]
        entry = {}
        for key in ("auc", "acc", "bal_acc"):
            values = [m[key] for m in ms]
            entry[key] = float(np.mean(values))
            entry[f"{key}_std"] = float(np.std(values))
        entry["n_seeds"] = len(ms)
        entry["train_images"] = int(ms[0]["train_images"])
        out[arm] = entry
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--shared", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
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
    log.info("train %d, test %d images", len(train), len(test))

    # Both generators at once, one thread each: 2 cores, no oversubscription.
    threads = 1 if args.workers > 1 else 2
    procs = [
        condense(args.preset, shared, work / "medsynth", args.extra, threads),
        condense(
            args.preset,
            shared,
            work / "no_mask",
            [*args.extra, "generator.use_mask=false"],
            threads,
        ),
    ]
    if any(p.wait() != 0 for p in procs):
        raise SystemExit(f"condensation failed; see {work}/*/bench.log")
    t_condensed = time.monotonic()

    jobs = [
        (arm, seed, args.preset, str(shared), args.extra, str(work))
        for arm in ARMS
        for seed in args.seeds
    ]
    with ProcessPoolExecutor(args.workers) as pool:
        rows = []
        for arm, seed, metrics in pool.map(_train_and_eval, jobs):
            log.info(
                "%s seed %d: %s",
                arm,
                seed,
                {k: round(v, 4) for k, v in metrics.items()},
            )
            rows.append((arm, seed, metrics))

    from medsynth_fl.package import read_package

    pkg = read_package(work / "medsynth" / "generator.msfl")
    result = summarise(rows)
    result.update(
        {
            "package_bytes": (work / "medsynth" / "generator.msfl").stat().st_size,
            "raw_bytes": int(train.images.nbytes),
            "condense_seconds": pkg.manifest.training.seconds,
            "condense_wall_seconds": round(t_condensed - t_start, 1),
            "seconds": round(time.monotonic() - t_start, 1),
            "machine": machine_description(),
            "commit": git_revision(),
            "preset": args.preset,
            "train_images": len(train),
            "test_images": len(test),
            "seeds": args.seeds,
            "config": cfg.model_dump(mode="json"),
            "per_seed": [{"arm": a, "seed": s, **m} for a, s, m in rows],
        }
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ARMS}, indent=2))
    full = result["full_real"]["auc"]
    print(
        "medsynth_ipc50 AUC / full AUC = "
        f"{result['medsynth_ipc50']['auc'] / full:.3f} (target ≥ 0.95)"
    )
    print(
        f"package {result['package_bytes']:,} bytes vs raw training images "
        f"{result['raw_bytes']:,} bytes"
    )
    print(f"wall time {result['seconds'] / 60:.1f} min on {result['machine']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
