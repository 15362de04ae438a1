"""The coordinator's verbs of the ``medsynth-fl`` command line.

``dashboard`` serves a run's dashboard; ``report`` writes it as one file. They
extend the core command line (:mod:`medsynth_fl.cli`), which knows nothing of
the coordinator.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medsynth_fl import cli as core_cli


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Serve RUN_DIR's dashboard until interrupted."""
    from .dashboard_server import make_server
    from .store import RunStore

    server = make_server(
        RunStore.open_existing(Path(args.run_dir)), args.host, args.port
    )
    host, port = server.server_address[:2]
    print(f"dashboard of {args.run_dir} at http://{host}:{port}/  (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Write RUN_DIR's dashboard as one self-contained HTML file."""
    from .dashboard import render_dashboard
    from .store import RunStore

    out = render_dashboard(RunStore.open_existing(Path(args.run_dir)), Path(args.out))
    print(f"report written to {out}")
    return 0


def add_coordinator_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``dashboard`` and ``report`` on the core parser's subcommands."""
    p = sub.add_parser("dashboard", help="serve a run's dashboard from its run store")
    p.add_argument("run_dir", help="the run folder, <store-dir>/<run-id>")
    p.add_argument("--port", type=int, default=8050)
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to bind (default: localhost only)",
    )
    p.set_defaults(func=cmd_dashboard)

    p = sub.add_parser("report", help="write a run's dashboard as one HTML file")
    p.add_argument("run_dir", help="the run folder, <store-dir>/<run-id>")
    p.add_argument("--out", required=True, help="the HTML file to write")
    p.set_defaults(func=cmd_report)


def main(argv: list[str] | None = None) -> int:
    """``medsynth-fl``: the core verbs plus the coordinator's."""
    return core_cli.main(argv, extra_commands=(add_coordinator_commands,))
