"""Fuzz the package loader: ≥ 10,000 mutated packages, each one refused by name.

Seeds: two packages of the tiny preset's generator architecture, signed by two
sites (``medsynth_fl.package.fuzz.make_seeds``). Each case applies one mutator
(byte flips, truncation, extension, splicing, header rewrites, manifest edits
with or without re-signing, duplicate keys, tensor swaps and recasts, wrong or
unknown signing keys) and is judged by the oracle: a named refusal, or a
verified package identical to one its site signed. Anything else is a crash;
a case over the time limit is a hang.

Writes bench/results/fuzz_package.json: cases, refusals by reason and by
mutator, crashes (must be 0), hangs (must be 0), peak RSS, wall time.

    python bench/fuzz_package.py              # 10,000 cases, ~1 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from medsynth_fl.config import load_config  # noqa: E402
from medsynth_fl.package.fuzz import MUTATORS, make_seeds, run_cases  # noqa: E402
from medsynth_fl.runinfo import git_revision, machine_description  # noqa: E402


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--time-limit-s", type=float, default=10.0)
    parser.add_argument("--max-rss-mib", type=float, default=2048.0)
    parser.add_argument(
        "--out", default=str(REPO / "bench" / "results" / "fuzz_package.json")
    )
    args = parser.parse_args()
    cfg = load_config(args.preset)
    seeds, ring, stranger = make_seeds(cfg)
    rss_before = _rss_mib()
    t0 = time.monotonic()
    step = max(1, args.cases // 20)

    def progress(index: int) -> None:
        if (index + 1) % step == 0:
            print(f"{index + 1}/{args.cases} cases, {time.monotonic() - t0:.0f} s")

    report = run_cases(
        seeds,
        ring,
        stranger,
        args.cases,
        seed=args.seed,
        time_limit_s=args.time_limit_s,
        progress=progress,
    )
    wall = time.monotonic() - t0
    peak = _rss_mib()
    out = {
        **report.as_dict(),
        "mutators": sorted(MUTATORS),
        "seed_package_bytes": [len(s.data) for s in seeds],
        "generator": cfg.generator.arch,
        "preset": args.preset,
        "time_limit_per_case_s": args.time_limit_s,
        "max_rss_mib": round(peak, 1),
        "rss_before_cases_mib": round(rss_before, 1),
        "max_rss_cap_mib": args.max_rss_mib,
        "rss_within_cap": peak <= args.max_rss_mib,
        "wall_s": round(wall, 1),
        "cases_per_s": round(report.cases / wall, 1),
        "machine": machine_description(),
        "commit": git_revision(),
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(
        f"{report.cases} cases in {wall:.0f} s: {report.accepted} identical, "
        f"{sum(report.refusals.values())} refused by name, "
        f"{len(report.crashes)} crashes, {len(report.hangs)} hangs; "
        f"peak RSS {peak:.0f} MiB → {path}"
    )
    ok = not report.crashes and not report.hangs and peak <= args.max_rss_mib
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
