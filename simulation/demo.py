"""``make demo``: a MedSynth-FL consortium simulated on one machine with ``flwr run``.

The embedded ISIC subset is split into sites by natural centre; each site
condenses its images and ships only its signed generator; the coordinator
verifies, samples, trains and evaluates the shared ViT. At the end the script
prints where the run store is and the headline metrics, and stops the
background SuperLink that ``flwr run`` started.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

from medsynth_fl.config import load_config

from .flower_env import (
    PROJECT_ROOT,
    flower_env,
    free_port,
    stop_local_superlink,
    toml_value,
    write_local_federation,
)
from .prepare import prepare_simulation

log = logging.getLogger("simulation.demo")


def run_flower_simulation(run_config: dict, num_sites: int, root: Path) -> int:
    """``flwr run . local --stream`` with a project-local Flower home.

    Return its exit code.
    """
    flwr_home = PROJECT_ROOT / ".flwr_home"
    write_local_federation(flwr_home, num_sites, cpus_per_client=1)
    env = flower_env(flwr_home, free_port())
    overrides = " ".join(f"{k}={toml_value(v)}" for k, v in run_config.items())
    cmd = [
        "flwr",
        "run",
        str(PROJECT_ROOT),
        "local",
        "--stream",
        "--run-config",
        overrides,
    ]
    log.info("%s", " ".join(cmd))
    try:
        with open(root / "flower.log", "w") as logfile:
            proc = subprocess.Popen(
                cmd,
                env=env,
                cwd=PROJECT_ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for line in proc.stdout:  # show Flower's stream and keep a copy
                sys.stdout.write(line)
                logfile.write(line)
            return proc.wait()
    finally:
        stopped = stop_local_superlink(flwr_home)
        log.info("stopped %d background SuperLink process(es)", stopped)


def print_summary(summary_path: Path) -> None:
    """Print the run store location, the sites and the headline metrics."""
    summary = json.loads(summary_path.read_text())
    print("\n=== MedSynth-FL demo ===")
    print(
        f"run store: {summary['run_dir']}  "
        f"(SQLite: {Path(summary['run_dir']).parent / 'runs.sqlite'})"
    )
    for site in summary["sites"]:
        print(
            f"  site {site['site_id'] or site['node_id']}: {site['status']}"
            f"{' (' + site['reason'] + ')' if site['reason'] else ''}, "
            f"{site['bytes_received']:,} bytes sent"
        )
    for scope, m in summary["metrics"].items():
        if scope in ("central", "federated"):
            print(
                f"  {scope:>9} evaluation: AUC {m['auc']:.3f}, "
                f"accuracy {m['acc']:.3f}, "
                f"balanced accuracy {m['bal-acc']:.3f} "
                f"on {int(m['num-examples'])} real test images"
            )
    contributions = Path(summary["run_dir"]) / "contributions.json"
    if contributions.is_file():
        auc = json.loads(contributions.read_text())["auc"]
        print(f"  contributions to the AUC ({auc['method']} Shapley, 95 % interval):")
        for site, v in auc["sites"].items():
            sh = v["shapley"]
            print(
                f"    {site}: {sh['mean']:+.3f} [{sh['ci_low']:+.3f}, "
                f"{sh['ci_high']:+.3f}], leave-one-out {v['loo']['mean']:+.3f}"
            )
    print(f"\nsee the dashboard: .venv/bin/medsynth-fl dashboard {summary['run_dir']}")
    print(
        "  or share one file: .venv/bin/medsynth-fl report "
        f"{summary['run_dir']} --out report.html"
    )


def write_demo_summary(summary_path: Path, wall_s: float, out: Path) -> dict:
    """Write the demo's headline (central metrics, wall time, machine) to ``out``."""
    from medsynth_fl.runinfo import git_revision, machine_description

    summary = json.loads(summary_path.read_text())
    central = summary["metrics"].get("central", {})
    record = {
        "central": {
            "bal_acc": central.get("bal-acc"),
            "auc": central.get("auc"),
            "acc": central.get("acc"),
            "n": central.get("num-examples"),
        },
        "sites": [
            {"site": s["site_id"] or s["node_id"], "status": s["status"]}
            for s in summary["sites"]
        ],
        "wall_s": round(wall_s, 1),
        "run_dir": summary["run_dir"],
        "machine": machine_description(),
        "commit": git_revision(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
    return record


def main(argv: list[str] | None = None) -> int:
    """Prepare the sites, run the Flower simulation, print the summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo")
    parser.add_argument(
        "--root", default="runs/demo", help="folder for sites, keys and the run store"
    )
    parser.add_argument(
        "--run-id", default=None, help="reuse to resume an interrupted run"
    )
    parser.add_argument(
        "--summary-out",
        default="bench/results/demo_summary.json",
        help="where the headline figures go ('' to skip)",
    )
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    root = (PROJECT_ROOT / args.root).resolve()
    layout = prepare_simulation(load_config(args.preset), root)
    run_id = args.run_id or dt.datetime.now().strftime("demo-%Y%m%d-%H%M%S")
    run_config = layout.run_config(args.preset, **{"run-id": run_id})
    code = run_flower_simulation(run_config, len(layout.sites), root)
    summary = Path(run_config["store-dir"]) / run_id / "summary.json"
    if code != 0 or not summary.is_file():
        print(
            f"the simulation failed (exit code {code}); "
            f"Flower's log: {root / 'flower.log'}",
            file=sys.stderr,
        )
        return code or 1
    print_summary(summary)
    if args.summary_out:
        out = PROJECT_ROOT / args.summary_out
        record = write_demo_summary(summary, time.monotonic() - t0, out)
        print(f"headline → {out} (wall {record['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
