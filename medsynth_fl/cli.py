"""``medsynth-fl``: condense, sample, evaluate, verify, audit and manage site keys.

Also the torchrun entry point: ``torchrun --nproc_per_node=N -m medsynth_fl.cli
condense ...`` runs the same condensation on N processes.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from .config import ConfigError, load_config

log = logging.getLogger("medsynth_fl")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def _config_args(p: argparse.ArgumentParser, default: str | None = None) -> None:
    p.add_argument(
        "--config",
        default=default,
        help="preset name (tiny, cpu, paper, …) or YAML path",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting, e.g. --set phase1.epochs=10 (repeatable)",
    )


# -- keygen -------------------------------------------------------------------
def cmd_keygen(args: argparse.Namespace) -> int:
    """Create a site's Ed25519 key pair."""
    from .package import fingerprint, generate_site_key

    out = Path(args.out)
    private = out / f"{args.site_id}.pem"
    if private.exists() and not args.force:
        print(f"refusing to overwrite {private} (use --force)", file=sys.stderr)
        return 2
    key = generate_site_key(private, out / f"{args.site_id}.pub")
    print(f"private key: {private} (keep it at the site)")
    print(
        f"public key:  {out / (args.site_id + '.pub')} "
        "(register it with the coordinator)"
    )
    print(f"fingerprint: {fingerprint(key.public_key())}")
    return 0


# -- condense -----------------------------------------------------------------
def _site_key(path: str | None, out: Path, site_id: str):
    from .package import generate_site_key, load_private_key

    if path:
        return load_private_key(Path(path))
    default = out / "site_key.pem"
    if default.is_file():
        return load_private_key(default)
    log.warning(
        "no --key given: generated a new site key %s "
        "(register %s with the coordinator)",
        default,
        default.with_suffix(".pub"),
    )
    return generate_site_key(default)


def cmd_condense(args: argparse.Namespace) -> int:
    """Condense local images into a signed generator package."""
    from .data import data_overrides, load_train_test
    from .training.checkpoint import StopFlag, StopRequested
    from .training.condense import Condenser
    from .training.distributed import init_distributed, shutdown

    overrides = list(args.overrides) + (data_overrides(args.data) if args.data else [])
    cfg = load_config(args.config, overrides)
    info = init_distributed(args.device)
    out = Path(args.out or f"runs/condense-{cfg.package.site_id}")
    stop = StopFlag().install()
    try:
        train, _ = load_train_test(cfg.data)
        key = _site_key(args.key, out, cfg.package.site_id)
        result = Condenser(cfg, train, out, key, info, stop).run(resume=args.resume)
    except StopRequested as exc:
        log.warning("%s; continue with --resume", exc)
        return 143
    finally:
        stop.uninstall()
        shutdown(info)
    if info.is_primary:
        print(f"package: {result.package}")
        print(f"phase-I package: {result.phase1_package}")
        print(
            "seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in result.seconds.items())
        )
    return 0


# -- sample -------------------------------------------------------------------
def _keyring(public_key: str | None):
    from .package import KeyRing, load_public_key

    if public_key is None:
        return None
    path = Path(public_key)
    return (
        KeyRing.from_dir(path)
        if path.is_dir()
        else KeyRing.single(load_public_key(path))
    )


def cmd_sample(args: argparse.Namespace) -> int:
    """Sample a condensed set (npz + PNG grids) from a package."""
    from .package import read_package
    from .sampling import sample_condensed_set, save_class_grids

    pkg = read_package(Path(args.package), _keyring(args.public_key))
    if not pkg.signature_verified:
        log.warning("signature NOT verified (no --public-key given)")
    m = pkg.manifest
    generator = pkg.build_generator()
    if args.reject_copies_of:
        images = _reject_copies(args, generator, m)
    else:
        images = sample_condensed_set(
            generator, m.class_names, m.classes_present, args.ipc, args.seed
        )
    out = Path(args.out)
    npz = images.save_npz(out / "condensed.npz")
    grids = save_class_grids(images, out / "grids")
    print(
        f"{len(images)} images "
        f"({args.ipc} per class × {len(m.classes_present)} classes) → {npz}"
    )
    print(f"{len(grids)} PNG grids in {out / 'grids'}")
    return 0


def _reject_copies(args: argparse.Namespace, generator, manifest):
    """Seed 001's filter at the site.

    Draw twice --ipc per class, drop samples nearer a training image than any two
    training images are to each other, keep --ipc per class, and report the
    rejection rate.
    """
    from .config import DataConfig
    from .data import load_image_source
    from .privacy import reject_memorized
    from .sampling import sample_condensed_set

    classes = list(manifest.class_names)
    data_cfg = DataConfig(
        classes=classes, empty_class="skip", image_size=manifest.image_size
    )
    train = load_image_source(args.reject_copies_of, data_cfg, "train")
    drawn = sample_condensed_set(
        generator, classes, manifest.classes_present, 2 * args.ipc, args.seed
    )
    result = reject_memorized(drawn, train)
    kept = result.kept
    keep = np.concatenate(
        [np.flatnonzero(kept.labels == k)[: args.ipc] for k in range(len(classes))]
    )
    print(
        f"rejected {result.rejection_rate:.2%} of samples "
        "as near-copies of training images "
        f"(pixel L2 threshold {result.threshold:.1f})"
    )
    short = [
        c
        for k, c in enumerate(classes)
        if c in manifest.classes_present and (kept.labels == k).sum() < args.ipc
    ]
    if short:
        log.warning("fewer than %d samples survived for %s", args.ipc, short)
    return kept.subset(np.sort(keep))


# -- evaluate -----------------------------------------------------------------
def cmd_evaluate(args: argparse.Namespace) -> int:
    """Train the downstream ViT on --train and report metrics on --test."""
    from .data import load_image_source
    from .evaluation import evaluate_classifier
    from .training.classifier import train_classifier

    cfg = load_config(args.config, args.overrides)
    train = load_image_source(args.train, cfg.data, args.train_split)
    test = load_image_source(args.test, cfg.data, args.test_split)
    if tuple(train.class_names) != tuple(test.class_names):
        raise ConfigError(
            f"train classes {train.class_names} "
            f"differ from test classes {test.class_names}"
        )
    rows = []
    for seed in args.seeds:
        model = train_classifier(train, cfg.classifier, seed=seed)
        rows.append(evaluate_classifier(model, test).as_dict())
        print(
            f"seed {seed}: "
            + ", ".join(f"{k} {v:.4f}" for k, v in rows[-1].items() if k != "n")
        )
    summary = {
        k: {
            "mean": float(np.mean([r[k] for r in rows])),
            "std": float(np.std([r[k] for r in rows])),
        }
        for k in ("auc", "acc", "bal_acc")
    }
    print(f"train {len(train)} images, test {len(test)} images, {len(rows)} seed(s)")
    for name, label in (
        ("auc", "macro one-vs-rest AUC"),
        ("acc", "accuracy"),
        ("bal_acc", "balanced accuracy"),
    ):
        print(f"{label:>22}: {summary[name]['mean']:.4f} ± {summary[name]['std']:.4f}")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"seeds": rows, "summary": summary}, indent=2)
        )
    return 0


# -- audit --------------------------------------------------------------------
def cmd_audit(args: argparse.Namespace) -> int:
    """Run every membership-inference attack on a package; write JSON and ROC plots."""
    from .data import load_image_source
    from .models.registry import load_critic
    from .package import read_package
    from .privacy import (
        audit_options,
        build_package_attacks,
        format_with_interval,
        gate_limits,
        plot_roc,
        release_gate,
        run_audit,
        write_report_json,
    )

    cfg = load_config(args.config, args.overrides)
    pkg = read_package(Path(args.package), _keyring(args.public_key))
    m = pkg.manifest
    data_cfg = cfg.data.model_copy(
        update={"classes": list(m.class_names), "empty_class": "skip"}
    )
    members = load_image_source(args.members, data_cfg, args.members_split)
    nonmembers = load_image_source(args.nonmembers, data_cfg, args.nonmembers_split)
    critic = load_critic(Path(args.discriminator)) if args.discriminator else None
    models = build_package_attacks(pkg, cfg.audit, cfg.training.seed)
    report = run_audit(
        members,
        nonmembers,
        models,
        critic=critic,
        **audit_options(cfg.audit),
        seed=cfg.training.seed,
    )
    gate = release_gate(report, cfg.audit.max_auc, cfg.audit.max_tpr_at_1pct_fpr)
    out = Path(args.out)
    write_report_json(report, out / "audit.json", gate)
    plot_roc(
        report.results, out / "roc.png", title=f"membership inference: {m.site_id}"
    )
    print(
        f"{'attack':>18} {'acc':>6} {'AUC [95% CI]':>21} "
        f"{'TPR@1%FPR [95% CI]':>21} {'TPR@0.1%':>8}"
    )
    for name, r in sorted(report.results.items()):
        print(
            f"{name:>18} {r.acc:6.3f} {format_with_interval(r.auc, r.auc_ci):>21} "
            f"{format_with_interval(r.tpr_at_1pct_fpr, r.tpr_at_1pct_fpr_ci):>21} "
            f"{r.tpr_at_0_1pct_fpr:8.3f}"
        )
    tpr = report.chance["tpr_at_1pct_fpr"]
    print(
        f"largest TPR@1%FPR {tpr.observed_max:.3f}; by chance (permuted labels) "
        f"{tpr.null_mean_max:.3f} on average, {tpr.null_q95_max:.3f} at the 95th "
        f"percentile; family-wise p = {tpr.p_value:.3f}"
    )
    print(
        "memorisation rate: "
        + ", ".join(f"{k} {v:.4f}" for k, v in report.memorization.items())
    )
    verdict = (
        "release allowed"
        if gate.allowed
        else "release REFUSED: " + "; ".join(gate.reasons)
    )
    limits = gate_limits(cfg.audit.max_auc, cfg.audit.max_tpr_at_1pct_fpr)
    print(f"gate ({limits}): {verdict}")
    print(f"report: {out / 'audit.json'}, ROC plot: {out / 'roc.png'}")
    return 0


# -- verify -------------------------------------------------------------------
def cmd_verify(args: argparse.Namespace) -> int:
    """Verify a package and print its manifest."""
    from .package import read_package

    pkg = read_package(Path(args.package), _keyring(args.public_key))
    m = pkg.manifest
    print(
        f"OK: site {m.site_id}, {m.architecture.name} {m.image_size}px, "
        f"{m.weights.n_tensors} tensors / {m.weights.n_bytes} bytes, "
        f"signature {'verified' if pkg.signature_verified else 'NOT verified'}"
    )
    print(json.dumps(m.model_dump(mode="json"), indent=2))
    return 0


def build_parser(
    extra_commands: Iterable[Callable[[argparse._SubParsersAction], None]] = (),
) -> argparse.ArgumentParser:
    """The ``medsynth-fl`` argument parser.

    ``extra_commands`` register more verbs on the subcommands (the
    coordinator's ``dashboard`` and ``report``, from ``coordinator.cli``,
    which this core package must not import).
    """
    parser = argparse.ArgumentParser(
        prog="medsynth-fl", description=__doc__.splitlines()[0]
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("keygen", help="create a site's Ed25519 signing key pair")
    p.add_argument(
        "--out", required=True, help="folder for <site-id>.pem and <site-id>.pub"
    )
    p.add_argument("--site-id", required=True)
    p.add_argument("--force", action="store_true", help="overwrite an existing key")
    p.set_defaults(func=cmd_keygen)

    p = sub.add_parser(
        "condense", help="condense local images into a signed generator package"
    )
    _config_args(p, default="cpu")
    p.add_argument(
        "--data", help="ISIC 2019 folder, shards folder, .npz image set, or 'embedded'"
    )
    p.add_argument("--out", help="run folder (default runs/condense-<site-id>)")
    p.add_argument(
        "--key",
        help="site private key (PEM); default: <out>/site_key.pem, created if absent",
    )
    p.add_argument(
        "--resume", action="store_true", help="continue from <out>/checkpoints/last.pt"
    )
    p.add_argument(
        "--device", choices=["cpu", "cuda"], help="default: cuda when available"
    )
    p.set_defaults(func=cmd_condense)

    p = sub.add_parser("sample", help="sample a condensed set from a generator package")
    p.add_argument("package")
    p.add_argument("--ipc", type=int, required=True, help="images per class")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--public-key",
        help="site public key (.pub) or a folder of <site>.pub to verify against",
    )
    p.add_argument(
        "--reject-copies-of",
        metavar="DATA",
        help="at the site: drop samples closer to a training image (of DATA) than "
        "any two training images are, and report the rate (seed 001)",
    )
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser(
        "evaluate", help="train the downstream ViT on --train, test on --test"
    )
    _config_args(p, default="cpu")
    p.add_argument(
        "--train", required=True, help=".npz image set, data folder, or 'embedded'"
    )
    p.add_argument(
        "--test", required=True, help=".npz image set, data folder, or 'embedded'"
    )
    p.add_argument(
        "--train-split",
        choices=["train", "test", "all"],
        default="train",
        help="split of --train when it is a data folder (default train)",
    )
    p.add_argument(
        "--test-split",
        choices=["train", "test", "all"],
        default="test",
        help="split of --test when it is a data folder (default test)",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--json", help="also write the metrics to this JSON file")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "audit", help="membership-inference audit of a generator package"
    )
    _config_args(p, default="cpu")
    p.add_argument("package")
    p.add_argument(
        "--members",
        required=True,
        help="the generator's training images (.npz, data folder, 'embedded')",
    )
    p.add_argument(
        "--nonmembers", required=True, help="held-out images of the same distribution"
    )
    p.add_argument("--members-split", choices=["train", "test", "all"], default="train")
    p.add_argument(
        "--nonmembers-split", choices=["train", "test", "all"], default="test"
    )
    p.add_argument(
        "--discriminator",
        help="the site's critic (site_local/critic.safetensors): adds white-box LOGAN",
    )
    p.add_argument(
        "--public-key", help="site public key (.pub) or a folder of <site>.pub"
    )
    p.add_argument("--out", required=True, help="folder for audit.json and roc.png")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser(
        "verify", help="verify a generator package and print its manifest"
    )
    p.add_argument("package")
    p.add_argument(
        "--public-key", help="site public key (.pub) or a folder of <site>.pub"
    )
    p.set_defaults(func=cmd_verify)
    for register in extra_commands:
        register(sub)
    return parser


def main(
    argv: list[str] | None = None,
    extra_commands: Iterable[Callable[[argparse._SubParsersAction], None]] = (),
) -> int:
    """Run the command line; errors the user can fix print one line and exit 2."""
    from .data.errors import DataError
    from .package import PackageRejected, SiteKeyError

    args = build_parser(extra_commands).parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return args.func(args)
    except (
        ConfigError,
        DataError,
        PackageRejected,
        SiteKeyError,
        FileNotFoundError,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
