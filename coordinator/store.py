"""The coordinator's run store: SQLite for facts, one folder per run for files.

Everything a run learns is written here as soon as it is known, so a killed
coordinator restarted with the same run id continues where it stopped: verified
packages are not requested again, finished stages are not repeated.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, created_utc TEXT, config_yaml TEXT, status TEXT
);
-- Flower node ids are unsigned 64-bit: stored as text.
CREATE TABLE IF NOT EXISTS sites (
    run_id TEXT, node_id TEXT, site_id TEXT, status TEXT, reason TEXT,
    package_path TEXT, weights_sha256 TEXT, n_images INTEGER, classes_present TEXT,
    bytes_received INTEGER, seconds REAL, recorded_utc TEXT,
    PRIMARY KEY (run_id, node_id)
);
CREATE TABLE IF NOT EXISTS stages (
    run_id TEXT, stage TEXT, detail TEXT, finished_utc TEXT, PRIMARY KEY (run_id, stage)
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT, scope TEXT, name TEXT, value REAL, recorded_utc TEXT,
    PRIMARY KEY (run_id, scope, name)
);
CREATE TABLE IF NOT EXISTS events (
    run_id TEXT, utc TEXT, level TEXT, message TEXT
);
"""


# JSON documents of a run, in its folder (read by the dashboard)
CONTRIBUTIONS = "contributions.json"  # site contributions and sample quality
CENTRAL_REPORT = "central_eval.json"  # shared model: per-class metrics, confusion
PENDING_REQUESTS = "pending_requests.json"  # generator requests not answered in time


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class SiteRecord:
    """What the coordinator knows about one node's contribution."""

    node_id: int
    site_id: str
    status: str  # accepted | rejected | error | unreachable
    reason: str
    package_path: str
    weights_sha256: str
    n_images: int
    classes_present: list[str]
    bytes_received: int
    seconds: float


class RunStore:
    """SQLite database plus ``<root>/<run_id>/`` folders.

    The folders hold packages, samples, models.
    """

    def __init__(self, root: Path, run_id: str):
        if not run_id or "/" in run_id or run_id.startswith("."):
            raise ValueError(f"invalid run id {run_id!r}")
        self.root = Path(root)
        self.run_id = run_id
        self.dir = self.root / run_id
        for sub in ("packages", "condensed", "models", "logs"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self.db_path = self.root / "runs.sqlite"
        with self._db() as db:
            db.executescript(SCHEMA)

    @classmethod
    def open_existing(cls, run_dir: Path) -> RunStore:
        """The store of an existing run folder ``<root>/<run_id>`` (never made)."""
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise FileNotFoundError(f"no run folder at {run_dir}")
        db_path = run_dir.parent / "runs.sqlite"
        if not db_path.is_file():
            raise FileNotFoundError(
                f"{run_dir} is not in a run store (no {db_path.name} beside it)"
            )
        with closing(sqlite3.connect(db_path, timeout=30)) as db:
            known = db.execute(
                "SELECT 1 FROM runs WHERE run_id=?", (run_dir.name,)
            ).fetchone()
        if known is None:
            raise FileNotFoundError(f"run {run_dir.name!r} is not in {db_path}")
        return cls(run_dir.parent, run_dir.name)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.db_path, timeout=30)
        try:
            with db:  # commit on success, roll back on error
                yield db
        finally:
            db.close()

    # -- run ------------------------------------------------------------------
    def open_run(self, config_yaml: str) -> bool:
        """Register the run (idempotent); True when it already existed (a resume)."""
        with self._db() as db:
            row = db.execute(
                "SELECT config_yaml FROM runs WHERE run_id=?", (self.run_id,)
            ).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO runs VALUES (?,?,?,?)",
                    (self.run_id, _now(), config_yaml, "running"),
                )
                return False
        if row[0] != config_yaml:
            raise ValueError(
                f"run {self.run_id!r} exists with a different config; use a new run id"
            )
        return True

    def set_status(self, status: str) -> None:
        """Mark the run running / finished / failed."""
        with self._db() as db:
            db.execute("UPDATE runs SET status=? WHERE run_id=?", (status, self.run_id))

    def status(self) -> str:
        """The run's status."""
        with self._db() as db:
            row = db.execute(
                "SELECT status FROM runs WHERE run_id=?", (self.run_id,)
            ).fetchone()
        return row[0] if row else "unknown"

    # -- sites ----------------------------------------------------------------
    def record_site(self, rec: SiteRecord) -> None:
        """Insert or replace what a node contributed (or why it did not)."""
        with self._db() as db:
            db.execute(
                "INSERT OR REPLACE INTO sites VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    self.run_id,
                    str(rec.node_id),
                    rec.site_id,
                    rec.status,
                    rec.reason,
                    rec.package_path,
                    rec.weights_sha256,
                    rec.n_images,
                    json.dumps(rec.classes_present),
                    rec.bytes_received,
                    rec.seconds,
                    _now(),
                ),
            )

    def sites(self, status: str | None = None) -> list[SiteRecord]:
        """Site records of this run, optionally with one status."""
        query = (
            "SELECT node_id, site_id, status, reason, package_path, "
            "weights_sha256, n_images, "
            "classes_present, bytes_received, seconds FROM sites WHERE run_id=?"
        )
        args: tuple = (self.run_id,)
        if status is not None:
            query += " AND status=?"
            args += (status,)
        with self._db() as db:
            rows = db.execute(query + " ORDER BY site_id, node_id", args).fetchall()
        return [
            SiteRecord(
                int(r[0]),
                r[1],
                r[2],
                r[3],
                r[4],
                r[5],
                r[6],
                json.loads(r[7]),
                r[8],
                r[9],
            )
            for r in rows
        ]

    # -- stages, metrics, events ---------------------------------------------
    def finish_stage(self, stage: str, detail: dict | None = None) -> None:
        """Record that ``stage`` is done (with a small JSON detail)."""
        with self._db() as db:
            db.execute(
                "INSERT OR REPLACE INTO stages VALUES (?,?,?,?)",
                (self.run_id, stage, json.dumps(detail or {}), _now()),
            )

    def stage_done(self, stage: str) -> dict | None:
        """The detail of a finished stage, or None if it has not finished."""
        with self._db() as db:
            row = db.execute(
                "SELECT detail FROM stages WHERE run_id=? AND stage=?",
                (self.run_id, stage),
            ).fetchone()
        return json.loads(row[0]) if row else None

    def stages(self) -> list[tuple[str, str]]:
        """(stage, finished_utc) of every finished stage, in the order they finished."""
        with self._db() as db:
            return db.execute(
                "SELECT stage, finished_utc FROM stages WHERE run_id=? "
                "ORDER BY finished_utc, rowid",
                (self.run_id,),
            ).fetchall()

    def put_metrics(self, scope: str, values: dict[str, float]) -> None:
        """Store metrics under a scope (``central``, ``federated``, ``site:<id>``…)."""
        with self._db() as db:
            db.executemany(
                "INSERT OR REPLACE INTO metrics VALUES (?,?,?,?,?)",
                [(self.run_id, scope, k, float(v), _now()) for k, v in values.items()],
            )

    def metrics(self, scope: str | None = None) -> dict[str, dict[str, float]]:
        """Metrics by scope."""
        query, args = (
            "SELECT scope, name, value FROM metrics WHERE run_id=?",
            (self.run_id,),
        )
        if scope is not None:
            query, args = query + " AND scope=?", args + (scope,)
        out: dict[str, dict[str, float]] = {}
        with self._db() as db:
            for s, name, value in db.execute(query, args):
                out.setdefault(s, {})[name] = value
        return out

    # -- JSON documents ---------------------------------------------------------
    def write_json(self, name: str, data: dict) -> Path:
        """Write ``<run>/<name>`` atomically (a served dashboard never reads half)."""
        path = self.dir / name
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, allow_nan=False))
        tmp.replace(path)
        return path

    def read_json(self, name: str) -> dict | None:
        """``<run>/<name>`` as a dict, or None when it has not been written."""
        path = self.dir / name
        return json.loads(path.read_text()) if path.is_file() else None

    def log(self, level: str, message: str) -> None:
        """Append an event to the run's log."""
        with self._db() as db:
            db.execute(
                "INSERT INTO events VALUES (?,?,?,?)",
                (self.run_id, _now(), level, message),
            )

    def events(self) -> list[tuple[str, str, str]]:
        """(utc, level, message) of every event, oldest first."""
        with self._db() as db:
            return db.execute(
                "SELECT utc, level, message FROM events WHERE run_id=? ORDER BY rowid",
                (self.run_id,),
            ).fetchall()
