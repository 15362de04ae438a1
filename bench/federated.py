"""MedSynth-FL vs FedAvg, local-only and pooled on the natural ISIC centres.

Sites: the four HAM centres of ../shared/data at the preset's image size
(32 px for ``cpu``; FLamby's train fold at each site; lesion-safe test fold).
Every classifier is the preset's downstream model with the same budget
(``classifier.steps`` batches):

- MedSynth-FL: a Flower simulation (Ray) in which every site condenses its images,
  self-audits and ships only its signed generator; the coordinator verifies,
  audits and trains the shared model under ``federation.downstream`` (fresh
  generator samples at every step with the generators' soft labels, for
  ``stream``). Seeds: the shared model is retrained by the same rule with 3
  seeds on the verified generators.
- FedAvg: Flower's FedAvg strategy over the same sites, 10 rounds × 50 local steps.
- Local-only: one model per site on its own images (mean over sites).
- Pooled: one model on the union of the sites' images (upper bound).
- Ablation ``medsynth_fl_uniform_sites``: the shared model re-trained on the same
  generators with every holder of a class drawn equally often
  (``federation.site_weighting=uniform``) instead of by its images of the class.

All models are scored on the pooled test folds of the four centres (FLamby's
protocol). Writes bench/results/federated.json.

    python bench/federated.py --seeds 0 1 --set phase1.epochs=10 --set teacher.epochs=12
    # 116 min on 2 cores (EPYC with bf16 units)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from medsynth_fl.config import Config, load_config  # noqa: E402
from medsynth_fl.data.embedded import HAM_CENTERS  # noqa: E402
from medsynth_fl.runinfo import git_revision, machine_description  # noqa: E402
from simulation.flower_env import ray_tmpdir  # noqa: E402
from simulation.prepare import SimulationLayout, prepare_simulation  # noqa: E402

log = logging.getLogger("bench.federated")


# Ray runs the four sites' ClientApps two at a time on 2 cores, so the last
# site starts condensing only when an earlier one is done: the coordinator must
# wait for the sum, not the largest. At 3600 s (the default) HAM_vidir_molemax,
# the largest centre, condensed past the timeout and the round went on without it.
SIMULATION_TIMEOUT_S = 6 * 3600


# Re-trainings of the shared model on the same verified generators with one
# coordinator setting changed: what that setting is worth.
ABLATIONS = {"medsynth_fl_uniform_sites": ["federation.site_weighting=uniform"]}


def bench_overrides(shared: Path) -> list[str]:
    """The cpu preset pointed at the shared shards, the HAM centres as sites."""
    return [
        "data.source=shards",
        f"data.path={json.dumps(str(shared))}",
        f"data.centers={json.dumps(HAM_CENTERS)}",
        "data.empty_class=skip",
        "federation.partition=natural",
        f"federation.timeout_s={SIMULATION_TIMEOUT_S}",
    ]


def _run_config(layout: SimulationLayout, preset_file: Path, **extra) -> dict:
    return layout.run_config(str(preset_file), **extra)


def run_flower(layout: SimulationLayout, preset_file: Path, **extra) -> float:
    """One in-process Flower simulation (Ray backend), one CPU per ClientApp."""
    from flwr.simulation import run_simulation

    from coordinator.server_app import create_server_app
    from site_client.client_app import create_client_app

    rc = _run_config(layout, preset_file, **extra)
    t0 = time.monotonic()
    run_simulation(
        create_server_app(rc),
        create_client_app(rc),
        num_supernodes=len(layout.sites),
        backend_config={
            "client_resources": {"num_cpus": 1},
            "init_args": {"num_cpus": os.cpu_count() or 2},
        },
    )
    return time.monotonic() - t0


def _site_data(layout: SimulationLayout, cfg: Config) -> tuple[dict, object]:
    from medsynth_fl.data import load_npz, split_train_test

    trains = {}
    for site in layout.sites:
        images = load_npz(
            layout.sites_dir / site / "data.npz",
            classes=cfg.data.classes,
            empty_class="skip",
        )
        trains[site] = split_train_test(
            images, cfg.data.split, cfg.data.test_fraction, cfg.data.split_seed
        )[0]
    test = load_npz(layout.test_set, classes=cfg.data.classes, empty_class="skip")
    return trains, test


def _job(job: tuple) -> tuple[str, str, int, dict]:
    """Worker (one thread): a pooled / local-only / MedSynth shared-ViT training."""
    import torch

    torch.set_num_threads(1)
    kind, site, seed, preset_file, layout_root, sites, store_run = job
    from medsynth_fl.data.imageset import ImageSet
    from simulation.baselines import train_and_score

    cfg = load_config(preset_file, ABLATIONS.get(kind, []))
    layout = SimulationLayout(Path(layout_root), sites)
    trains, test = _site_data(layout, cfg)
    if kind == "pooled":
        data = ImageSet.concat(list(trains.values()))
    elif kind == "local_only":
        data = trains[site]
    else:  # medsynth_fl(+ablation): retrain the shared model on the verified generators
        return kind, site, seed, _shared_model_metrics(cfg, Path(store_run), test, seed)
    metrics = train_and_score(data, test, cfg, seed).as_dict()
    metrics["train_images"] = len(data)
    return kind, site, seed, metrics


def _shared_model_metrics(cfg: Config, store_run: Path, test, seed: int) -> dict:
    """The coordinator's shared-model training, re-run with ``seed``.

    Same rule as the ServerApp (``coordinator.pipeline.shared_model_source``):
    fresh samples of every accepted generator at each step under
    ``federation.downstream = "stream"``, else ``federation.ipc`` per class
    sampled once; soft labels from the generators' label heads where the
    config asks.
    """
    import torch

    from coordinator.pipeline import shared_model_source
    from medsynth_fl.data.imageset import ImageSet
    from medsynth_fl.evaluation import evaluate_classifier
    from medsynth_fl.package import read_package
    from medsynth_fl.sampling import sample_condensed_set
    from medsynth_fl.training.classifier import ClassifierTrainer
    from medsynth_fl.training.distributed import DistInfo
    from medsynth_fl.training.loop import LoopContext

    summary = json.loads((store_run / "summary.json").read_text())
    accepted = sorted(
        x["package_path"] for x in summary["sites"] if x["status"] == "accepted"
    )
    packages = [read_package(Path(p)) for p in accepted]  # verified when stored
    union = ImageSet.concat(
        [
            sample_condensed_set(
                pkg.build_generator(),
                list(pkg.manifest.class_names),
                list(pkg.manifest.classes_present),
                cfg.federation.ipc,
                seed=seed,
            )
            for pkg in packages
        ]
    )
    source = shared_model_source(cfg, union, packages)
    torch.manual_seed(seed)
    trainer = ClassifierTrainer(
        cfg.classifier, len(union.class_names), DistInfo(), len(union), union.image_size
    )
    model = trainer.fit_source(source, LoopContext(seed=seed))
    metrics = evaluate_classifier(model, test).as_dict()
    metrics["train_images"] = trainer.steps * cfg.classifier.batch_size
    return metrics


def summarise(values: list[dict]) -> dict:
    """Mean and std of auc / acc / bal_acc over a list of metric dicts."""
    out = {}
    for key in ("bal_acc", "auc", "acc"):
        arr = [v[key] for v in values]
        out[key], out[f"{key}_std"] = float(np.mean(arr)), float(np.std(arr))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--shared", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", default=str(REPO / "runs" / "bench" / "federated"))
    parser.add_argument(
        "--out", default=str(REPO / "bench" / "results" / "federated.json")
    )
    parser.add_argument(
        "--set", dest="extra", action="append", default=[], help="extra config override"
    )
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["RAY_TMPDIR"] = str(ray_tmpdir())
    ray_tmpdir().mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    work = Path(args.work).resolve()
    cfg = load_config(
        args.preset, bench_overrides(Path(args.shared).resolve()) + args.extra
    )
    work.mkdir(parents=True, exist_ok=True)
    preset_file = (
        work / "preset.yaml"
    )  # the resolved config, passed to the apps as their preset
    preset_file.write_text(cfg.to_yaml())
    layout = prepare_simulation(cfg, work / "sim")
    for site in layout.sites:  # this benchmark's sites opt in to the FedAvg baseline
        (layout.sites_dir / site / "node.json").write_text(
            json.dumps({"allow-baselines": True})
        )

    timings = {
        "medsynth_fl_simulation": run_flower(
            layout, preset_file, **{"run-id": "medsynth"}
        )
    }
    store = layout.root / "coordinator" / "store"
    run_summary = json.loads((store / "medsynth" / "summary.json").read_text())
    from coordinator.store import RunStore

    for seed in args.seeds:
        timings[f"fedavg_seed{seed}"] = run_flower(
            layout,
            preset_file,
            **{"run-id": f"fedavg-{seed}", "mode": "fedavg"},
            overrides=f"training.seed={seed}",
        )
    fedavg = [
        RunStore(store, f"fedavg-{s}").metrics(f"fedavg:seed{s}")[f"fedavg:seed{s}"]
        for s in args.seeds
    ]
    fedavg = [
        {"auc": m["auc"], "acc": m["acc"], "bal_acc": m["bal-acc"]} for m in fedavg
    ]

    jobs = [("pooled", "", s) for s in args.seeds] + [
        (kind, "", s) for kind in ("medsynth_fl", *ABLATIONS) for s in args.seeds
    ]
    jobs += [("local_only", site, s) for s in args.seeds for site in layout.sites]
    t0 = time.monotonic()
    rows = []
    with ProcessPoolExecutor(2) as pool:
        full_jobs = [
            (
                k,
                site,
                s,
                str(preset_file),
                str(layout.root),
                layout.sites,
                str(store / "medsynth"),
            )
            for k, site, s in jobs
        ]
        for kind, site, seed, metrics in pool.map(_job, full_jobs):
            log.info(
                "%s %s seed %d: %s",
                kind,
                site,
                seed,
                {k: round(v, 4) for k, v in metrics.items()},
            )
            rows.append((kind, site, seed, metrics))
    timings["central_trainings"] = time.monotonic() - t0

    local_means = [
        summarise([m for k, _, s, m in rows if k == "local_only" and s == seed])
        for seed in args.seeds
    ]
    result = {
        "medsynth_fl": summarise([m for k, _, _, m in rows if k == "medsynth_fl"]),
        "fedavg": summarise(fedavg),
        "local_only": summarise(
            [{key: lm[key] for key in ("bal_acc", "auc", "acc")} for lm in local_means]
        ),
        "pooled": summarise([m for k, _, _, m in rows if k == "pooled"]),
    }
    result["ablations"] = {
        kind: {
            "overrides": ABLATIONS[kind],
            **summarise([m for k, _, _, m in rows if k == kind]),
        }
        for kind in ABLATIONS
    }
    local_per_site = {
        site: summarise([m for k, st, _, m in rows if k == "local_only" and st == site])
        for site in layout.sites
    }
    vit_bytes = _classifier_bytes(cfg)
    sites = {s["site_id"]: s for s in run_summary["sites"] if s["status"] == "accepted"}
    result.update(
        {
            "bytes_sent_per_site": {
                "medsynth_fl": {
                    site: int(s["bytes_received"]) for site, s in sites.items()
                },
                "fedavg": {
                    site: vit_bytes * cfg.federation.baseline_rounds
                    for site in layout.sites
                },
            },
            "gap_to_pooled": {
                k: result["pooled"]["bal_acc"] - result[k]["bal_acc"]
                for k in ("medsynth_fl", "fedavg", "local_only")
            },
            "medsynth_fl_run": {
                "metrics": run_summary["metrics"],
                "sites": {
                    s["site_id"] or str(s["node_id"]): s["status"]
                    for s in run_summary["sites"]
                },
            },
            "local_only_per_site": local_per_site,
            "round_budget": {
                "classifier_steps": cfg.classifier.steps,
                "batch_size": cfg.classifier.batch_size,
                "fedavg_rounds": cfg.federation.baseline_rounds,
                "fedavg_local_steps": cfg.federation.baseline_local_steps,
            },
            "seconds": round(time.monotonic() - t_start, 1),
            "timings": {k: round(v, 1) for k, v in timings.items()},
            "machine": machine_description(),
            "commit": git_revision(),
            "preset": args.preset,
            "seeds": args.seeds,
            "sites": layout.sites,
            "per_seed": [
                {"method": k, "site": st, "seed": s, **m} for k, st, s, m in rows
            ]
            + [
                {"method": "fedavg", "seed": s, **m}
                for s, m in zip(args.seeds, fedavg, strict=True)
            ],
        }
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    for k in ("medsynth_fl", "fedavg", "local_only", "pooled"):
        r = result[k]
        print(
            f"{k:>12}: bal_acc {r['bal_acc']:.3f} ± {r['bal_acc_std']:.3f}"
            f"  AUC {r['auc']:.3f} ± {r['auc_std']:.3f}"
            f"  acc {r['acc']:.3f} ± {r['acc_std']:.3f}"
        )
    print(f"bytes sent per site: {result['bytes_sent_per_site']}")
    print(f"wall time {result['seconds'] / 60:.1f} min on {result['machine']}")
    return 0


def _classifier_bytes(cfg: Config) -> int:
    """Bytes of the classifier's weights: what each FedAvg site sends every round."""
    from medsynth_fl.models.classifiers import build_classifier

    model = build_classifier(cfg.classifier, len(cfg.data.classes), cfg.data.image_size)
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


if __name__ == "__main__":
    sys.exit(main())
