"""Per-site contributions on the natural ISIC centres, with a planted bad site.

Input: the MedSynth-FL run that ``bench/federated.py`` leaves in its work folder
(the four HAM centres' verified generators, the shared model, the pooled
lesion-safe test folds). A fifth, planted site is added: a copy of the largest
centre's generator whose soft label is replaced, for half of its samples, by a
confident label of a uniformly drawn class ("50 % of labels shuffled"). It must
come out lowest.

1. The coordinator's value function (``coordinator.contributions``: a logistic
   probe on the shared model's frozen features, fitted on each coalition's IPC
   sets with their soft labels): exact Shapley, leave-one-out and site-alone
   over the 5 sites (31 coalitions), with 200 test-set bootstrap resamples, for
   every condensation-sampling seed.
2. Full training, for the rank agreement: every non-empty coalition trains the
   shared model by the coordinator's own rule (``federation.downstream``:
   fresh generator samples with soft labels for ``stream``), once, and is
   scored on the same test set; exact Shapley of those values too. Spearman's
   ρ between the probe's and full training's coalition values is
   ``value_fn_rank_agreement``.

Writes bench/results/contributions.json and contributions.png.

    python bench/federated.py ...            # first: the sites' generators
    python bench/contributions.py            # ~30 min on 2 cores; resumable
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from medsynth_fl.config import Config, load_config  # noqa: E402
from medsynth_fl.runinfo import git_revision, machine_description  # noqa: E402

log = logging.getLogger("bench.contributions")
PLANTED = "planted_half_wrong_labels"


def planted_generator(inner, num_classes: int, fraction: float, seed: int):
    """A site that labels ``fraction`` of its samples with a random class."""
    import torch
    from torch import nn

    class HalfWrongLabels(nn.Module):
        has_label_head = True

        def __init__(self) -> None:
            super().__init__()
            self.inner = inner
            self.rng = torch.Generator().manual_seed(seed)

        def sample_noise(self, n: int, generator=None) -> torch.Tensor:
            return self.inner.sample_noise(n, generator)

        def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.inner(z, y)

        def forward_parts(self, z: torch.Tensor, y: torch.Tensor) -> dict:
            parts = dict(self.inner.forward_parts(z, y))
            logits = parts.get("label_logits")
            if logits is None:  # a generator without a label head: one-hot labels
                logits = 8.0 * nn.functional.one_hot(y, num_classes).float()
            flip = torch.rand(len(y), generator=self.rng) < fraction
            wrong = torch.randint(num_classes, (len(y),), generator=self.rng)
            confident = 8.0 * nn.functional.one_hot(wrong, num_classes).float()
            parts["label_logits"] = torch.where(
                flip[:, None], confident.to(logits), logits
            )
            return parts

    return HalfWrongLabels().eval()


def site_class_counts(
    sites_dir: Path, sites: list[str], names: list[str]
) -> dict[str, dict[str, int]]:
    """Training images per class at each site, from the simulation's site folders.

    The coordinator never sees these (only classes present and a total); the
    benchmark reads them to relate each site's per-class value to its class mix.
    Sites without a local data file are left out.
    """
    counts = {}
    for site in sites:
        path = sites_dir / site / "data.npz"
        if path.is_file():
            with np.load(path) as data:
                labels, stored = data["labels"], [str(c) for c in data["class_names"]]
            per = np.bincount(labels, minlength=len(stored))
            counts[site] = {
                c: int(per[stored.index(c)]) if c in stored else 0 for c in names
            }
    return counts


def load_sites(cfg: Config, store_run: Path) -> tuple[dict, dict, str]:
    """Site → (generator, classes present, stream holdings), planted site included.

    Also returns each site's training-image count and the planted site's source.
    """
    from coordinator.pipeline import site_holdings
    from medsynth_fl.package import read_package

    summary = json.loads((store_run / "summary.json").read_text())
    accepted = [s for s in summary["sites"] if s["status"] == "accepted"]
    # verified when they were stored
    packages = [read_package(Path(rec["package_path"])) for rec in accepted]
    holdings = site_holdings(
        packages, tuple(cfg.data.classes), cfg.federation.site_weighting
    )
    sites, sizes = {}, {}
    for rec, pkg, held in zip(accepted, packages, holdings, strict=True):
        sites[rec["site_id"]] = (
            pkg.build_generator(),
            list(pkg.manifest.classes_present),
            held,
        )
        sizes[rec["site_id"]] = int(rec["n_images"])
    source = max(sizes, key=sizes.get)
    generator, present, held = sites[source]
    sites[PLANTED] = (
        planted_generator(generator, len(cfg.data.classes), 0.5, cfg.training.seed),
        present,
        held,
    )
    sizes[PLANTED] = sizes[source]
    return sites, sizes, source


def probe_contributions(cfg, store_run, test, seed: int, n_bootstrap: int) -> dict:
    """Contributions under the coordinator's probe value function, one sampling seed."""
    import torch
    from safetensors.torch import load_file

    from coordinator.contributions import CoalitionPredictions, compute_contributions
    from coordinator.pipeline import probe_trainer, site_features
    from medsynth_fl.models.classifiers import build_classifier
    from medsynth_fl.sampling import sample_condensed_set

    torch.manual_seed(seed)
    sites, _, _ = load_sites(cfg, store_run)
    names = list(cfg.data.classes)
    model = build_classifier(cfg.classifier, len(names), test.image_size)
    model.load_state_dict(load_file(store_run / "models" / "shared_vit.safetensors"))
    condensed = {
        s: sample_condensed_set(g, names, present, cfg.federation.ipc, seed=seed)
        for s, (g, present, _) in sites.items()
    }
    features, test_features = site_features(model, condensed, test)
    train = probe_trainer(
        features, test_features, condensed, len(names), cfg.contributions.probe_max_iter
    )
    preds = CoalitionPredictions(tuple(sites), len(test), len(names), train)
    result = compute_contributions(
        preds, test.labels, names, n_bootstrap=n_bootstrap, seed=seed
    )
    record = result.as_record()
    record["coalition_auc"] = {
        "+".join(sorted(c)): float(_macro_auc(test.labels, p))
        for c, p in preds.stored.items()
    }
    return record


def _macro_auc(labels, proba) -> float:
    from coordinator.contributions import score_predictions

    return score_predictions(labels, proba)[0]


def _full_job(job: tuple) -> tuple[str, list[list[float]]]:
    """Worker (one thread): the coordinator's training rule on one coalition."""
    import torch

    torch.set_num_threads(1)
    coalition, preset, store_run, test_path, seed, out = job
    out = Path(out)
    if out.is_file():
        return coalition, np.load(out).tolist()
    from medsynth_fl.data import load_npz
    from medsynth_fl.evaluation import predict_proba
    from medsynth_fl.training.batches import ImageSetSource
    from medsynth_fl.training.classifier import ClassifierTrainer
    from medsynth_fl.training.distributed import DistInfo
    from medsynth_fl.training.loop import LoopContext
    from medsynth_fl.training.stream import GeneratorStream

    cfg = load_config(preset)
    names = list(cfg.data.classes)
    test = load_npz(Path(test_path), classes=names, empty_class="skip")
    sites, _, _ = load_sites(cfg, Path(store_run))
    members = [sites[s] for s in coalition.split("+")]
    if cfg.federation.downstream == "stream":
        entries = [(g, held) for g, _, held in members]
        source = GeneratorStream(entries, len(names))
    else:
        from medsynth_fl.data.imageset import ImageSet
        from medsynth_fl.sampling import sample_condensed_set

        union = ImageSet.concat(
            [
                sample_condensed_set(g, names, p, cfg.federation.ipc, seed=seed)
                for g, p, _ in members
            ]
        )
        source = ImageSetSource(union, cfg.classifier.class_sampling)
    torch.manual_seed(seed)
    n_train = cfg.federation.ipc * len(names) * len(members)
    trainer = ClassifierTrainer(
        cfg.classifier, len(names), DistInfo(), n_train, test.image_size
    )
    model = trainer.fit_source(source, LoopContext(seed=seed))
    proba = predict_proba(model, test)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, proba)
    return coalition, proba.tolist()


def pooled(per_seed: list[dict], kind: str, site: str) -> dict:
    """Mean over seeds of the point values; the envelope of the seeds' intervals."""
    entries = [r["auc"]["sites"][site][kind] for r in per_seed]
    return {
        "mean": float(np.mean([e["mean"] for e in entries])),
        "ci_low": float(min(e["ci_low"] for e in entries)),
        "ci_high": float(max(e["ci_high"] for e in entries)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=str(REPO / "runs" / "bench" / "federated"))
    parser.add_argument("--run-id", default="medsynth")
    parser.add_argument(
        "--preset", help="the run's resolved config (default: <work>/preset.yaml)"
    )
    parser.add_argument(
        "--store-run",
        help="the run folder (default: <work>/sim/coordinator/store/<run-id>)",
    )
    parser.add_argument(
        "--test-set", help="the coordinator's test set (default: <work>/sim/...)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--n-bootstrap", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--out", default=str(REPO / "bench" / "results" / "contributions.json")
    )
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from scipy.stats import spearmanr

    from coordinator.contributions import CoalitionPredictions, compute_contributions
    from coordinator.plots import contribution_bars
    from medsynth_fl.data import load_npz

    t0 = time.monotonic()
    work = Path(args.work).resolve()
    preset = Path(args.preset or work / "preset.yaml").resolve()
    store_run = Path(
        args.store_run or work / "sim" / "coordinator" / "store" / args.run_id
    ).resolve()
    test_path = Path(
        args.test_set or work / "sim" / "coordinator" / "test.npz"
    ).resolve()
    for needed in (preset, store_run / "summary.json", test_path):
        if not needed.is_file():
            raise SystemExit(f"{needed} is missing: run bench/federated.py first")
    cfg = load_config(preset)
    names = list(cfg.data.classes)
    test = load_npz(test_path, classes=names, empty_class="skip")
    _, sizes, source = load_sites(cfg, store_run)
    sites = list(sizes)

    per_seed = []
    for seed in args.seeds:
        log.info("probe contributions, sampling seed %d", seed)
        per_seed.append(
            probe_contributions(cfg, store_run, test, seed, args.n_bootstrap)
        )
    t_probe = time.monotonic() - t0

    coalitions = [
        "+".join(sorted(c))
        for r in range(1, len(sites) + 1)
        for c in itertools.combinations(sites, r)
    ]
    full_dir = store_run / "bench_contributions" / "full"  # resumable per coalition
    jobs = [
        (
            c,
            str(preset),
            str(store_run),
            str(test_path),
            cfg.training.seed,
            str(full_dir / f"{c}.npy"),
        )
        for c in coalitions
    ]
    full: dict[str, np.ndarray] = {}
    with ProcessPoolExecutor(args.workers) as pool:
        for i, (coalition, proba) in enumerate(pool.map(_full_job, jobs), 1):
            full[coalition] = np.asarray(proba)
            log.info("full training %d/%d: %s", i, len(jobs), coalition)
    t_full = time.monotonic() - t0 - t_probe
    full_preds = CoalitionPredictions(
        tuple(sites),
        len(test),
        len(names),
        lambda c: full["+".join(sorted(c))],
    )
    full_result = compute_contributions(
        full_preds, test.labels, names, n_bootstrap=args.n_bootstrap
    ).as_record()
    full_auc = {c: float(_macro_auc(test.labels, full[c])) for c in coalitions}
    probe_auc = per_seed[0]["coalition_auc"]
    rho = float(
        spearmanr(
            [probe_auc[c] for c in coalitions], [full_auc[c] for c in coalitions]
        )[0]
    )
    shapley_site_rho = float(
        spearmanr(
            [per_seed[0]["auc"]["sites"][s]["shapley"]["mean"] for s in sites],
            [full_result["auc"]["sites"][s]["shapley"]["mean"] for s in sites],
        )[0]
    )
    record_sites = {
        s: {k: pooled(per_seed, k, s) for k in ("shapley", "loo", "alone")}
        for s in sites
    }
    efficiency_gap = max(
        abs(
            sum(r["auc"]["sites"][s]["shapley"]["mean"] for s in sites)
            - (r["auc"]["v_all"] - r["auc"]["v_empty"])
        )
        for r in per_seed
    )
    real = [s for s in sites if s != PLANTED]
    shapley_means = {s: record_sites[s]["shapley"]["mean"] for s in sites}
    class_counts = site_class_counts(work / "sim" / "sites", real, names)
    class_shapley = per_seed[0]["per_class_shapley"]
    pairs = [
        (class_shapley[s][c], class_counts[s][c])
        for s in class_counts
        for c in names
        if class_shapley[s].get(c) is not None
    ]
    out = {
        "sites": record_sites,
        "value": "macro one-vs-rest AUC on the pooled lesion-safe test folds",
        "value_function": "logistic probe on the shared model's frozen features, "
        f"IPC {cfg.federation.ipc} condensed sets with soft labels",
        "planted_site": {"id": PLANTED, "copied_from": source, "labels_replaced": 0.5},
        "planted_is_lowest": min(shapley_means, key=shapley_means.get) == PLANTED,
        "efficiency_max_gap": efficiency_gap,
        "value_fn_rank_agreement": rho,
        "value_fn_rank_agreement_detail": "Spearman rho over the "
        f"{len(coalitions)} non-empty coalitions: probe macro AUC (seed "
        f"{args.seeds[0]}) against full training by the coordinator's rule "
        f"({cfg.federation.downstream}, {cfg.classifier.steps} steps)",
        "shapley_site_rank_agreement": shapley_site_rho,
        "full_training": full_result,
        "coalition_auc": {"probe": probe_auc, "full": full_auc},
        "per_seed": per_seed,
        "site_images": sizes,
        "shapley_vs_site_size_spearman": float(
            spearmanr([shapley_means[s] for s in real], [sizes[s] for s in real])[0]
        ),
        "site_class_counts": class_counts,
        "class_shapley_vs_class_count_spearman": (
            float(spearmanr(*zip(*pairs, strict=True))[0]) if len(pairs) > 2 else None
        ),
        "class_shapley_vs_class_count_detail": "Spearman rho over (site, class) "
        "pairs: a site's Shapley value of that class's AUC (seed "
        f"{args.seeds[0]}) against its number of training images of the class",
        "class_names": names,
        "n_test": len(test),
        "n_bootstrap": args.n_bootstrap,
        "seeds": args.seeds,
        "seconds": {
            "probe": round(t_probe, 1),
            "full_training": round(t_full, 1),
            "total": round(time.monotonic() - t0, 1),
        },
        "machine": machine_description(),
        "commit": git_revision(),
        "preset": str(preset),
    }
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(out, indent=2))
    bars = {
        "auc": {
            "sites": record_sites,
            "v_all": float(np.mean([r["auc"]["v_all"] for r in per_seed])),
            "v_empty": per_seed[0]["auc"]["v_empty"],
            "method": f"exact, mean of {len(args.seeds)} seeds",
        }
    }
    contribution_bars(bars, out_path.with_suffix(".png"))
    log.info(
        "planted lowest: %s; rank agreement %.3f; wrote %s",
        out["planted_is_lowest"],
        rho,
        out_path,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
