"""The Flower ServerApp of the consortium's coordinator.

Reads its settings from the run config (a preset, dotted overrides, and the
coordinator's own paths), opens the run store, and runs the MedSynth round.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from medsynth_fl.config import ConfigError, from_flower
from medsynth_fl.package import KeyRing

from .baselines import run_fedavg, run_local_only
from .rounds import RoundSettings, run_medsynth
from .store import RunStore
from .strategy import MedSynthStrategy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CoordinatorSetup:
    """The coordinator's own facts from the run config (flat scalars)."""

    run_id: str
    store_dir: Path
    site_keys_dir: Path
    test_set: Path | None

    @classmethod
    def from_run_config(cls, rc: dict, flower_run_id: int) -> CoordinatorSetup:
        """Read ``run-id``, ``store-dir``, ``site-keys-dir`` and ``test-set``."""
        if "site-keys-dir" not in rc:
            raise ConfigError(
                "run config needs site-keys-dir: "
                "the folder of registered <site>.pub keys"
            )
        test = str(rc.get("test-set", ""))
        return cls(
            run_id=str(rc.get("run-id") or f"flwr-{flower_run_id}"),
            store_dir=Path(str(rc.get("store-dir", "runs/coordinator"))),
            site_keys_dir=Path(str(rc["site-keys-dir"])),
            test_set=Path(test) if test else None,
        )


def check_registered_sites(expected: list[str] | None, trusted: KeyRing) -> None:
    """A config that names a site without a registered key is an error."""
    unknown = sorted(set(expected or []) - set(trusted.site_ids))
    if unknown:
        raise ConfigError(
            f"federation.sites names {unknown}, which have no registered public key "
            f"(registered: {trusted.site_ids})"
        )


def run_coordinator(grid: Grid, rc: dict, flower_run_id: int) -> dict:
    """Resolve config, keys and run store from the run config; run the round."""
    cfg = from_flower(rc)
    setup = CoordinatorSetup.from_run_config(rc, flower_run_id)
    trusted = KeyRing.from_dir(setup.site_keys_dir)
    check_registered_sites(cfg.federation.sites, trusted)
    store = RunStore(setup.store_dir, setup.run_id)
    resumed = store.open_run(cfg.to_yaml())
    log.info(
        "run %s %s; store %s",
        setup.run_id,
        "resumed" if resumed else "started",
        store.dir,
    )
    mode = str(rc.get("mode", "medsynth"))
    if mode == "fedavg":
        metrics = run_fedavg(grid, cfg, store, setup.test_set, cfg.training.seed)
        return _baseline_summary(store, {"central": metrics})
    if mode == "local-only":
        return _baseline_summary(
            store, run_local_only(grid, cfg, store, cfg.training.seed)
        )
    if mode != "medsynth":
        raise ConfigError(
            f"run config mode must be medsynth, fedavg or local-only, not {mode!r}"
        )
    strategy = MedSynthStrategy(
        trusted, cfg.package.max_bytes, cfg.federation.min_sites
    )
    strategy.summary()
    settings = RoundSettings(cfg.federation.timeout_s, setup.test_set)
    return run_medsynth(grid, strategy, store, cfg, settings)


def _baseline_summary(store: RunStore, metrics: dict) -> dict:
    store.set_status("finished")
    return {
        "run_id": store.run_id,
        "run_dir": str(store.dir),
        "metrics": metrics,
        "sites": [],
    }


def create_server_app(
    run_config_defaults: dict | None = None,
    wrap_grid: Callable[[Grid], Grid] | None = None,
) -> ServerApp:
    """Build the ServerApp.

    ``run_config_defaults`` stand in for an empty run config (in-process
    ``run_simulation`` has none); ``wrap_grid`` lets a test observe every message.
    """
    defaults = dict(run_config_defaults or {})
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        """Run (or resume) one MedSynth-FL round and print where its results are."""
        grid = wrap_grid(grid) if wrap_grid else grid
        summary = run_coordinator(
            grid, {**defaults, **dict(context.run_config)}, context.run_id
        )
        print_headline(summary)

    return server_app


def print_headline(summary: dict) -> None:
    """Print where the run store is and the headline metrics."""
    metrics = summary["metrics"]
    accepted = [s["site_id"] for s in summary["sites"] if s["status"] == "accepted"]
    print(
        f"\nMedSynth-FL run {summary['run_id']}: "
        f"{len(accepted)} site(s) contributed: {', '.join(accepted)}"
    )
    print(f"run store: {summary['run_dir']}")
    for scope in ("central", "federated"):
        if scope in metrics:
            m = metrics[scope]
            print(
                f"{scope:>9}: AUC {m.get('auc', float('nan')):.3f}  "
                f"accuracy {m.get('acc', float('nan')):.3f}  "
                f"balanced accuracy {m.get('bal-acc', float('nan')):.3f}"
            )


app = create_server_app()
