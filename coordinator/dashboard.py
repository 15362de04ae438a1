"""A static HTML dashboard of a run, in one self-contained file.

It shows what each site contributed, how each generator was audited, and how the
shared model does; no server is needed.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from medsynth_fl.privacy import attack_aucs, format_with_interval

from .contribution_plots import class_heatmap, contribution_bars
from .store import RunStore

ATTACKS = (
    "logan_bb",
    "recovery_pixel",
    "recovery_feature",
    "nn_pixel",
    "nn_embed",
    "density_pixel",
    "density_embed",
)
STYLE = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px}
th{background:#f3f3f3}.accepted{color:#0a0}.rejected,.unreachable,.quarantined{color:#c00}
img{max-width:100%;border:1px solid #ddd}figure img{image-rendering:pixelated}"""


LIVE_REFRESH_S = 5


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _worst_audit(audit: dict[str, float]) -> str:
    """The highest attack AUC with its 95 % interval and attack name.

    E.g. ``0.523 [0.480, 0.566] (nn_embed)``; ``–`` without an audit.
    """
    aucs = {a: v for a, v in attack_aucs(audit).items() if a in ATTACKS}
    if not aucs:
        return "–"
    attack = max(aucs, key=lambda a: aucs[a][0])
    return f"{format_with_interval(*aucs[attack])} ({html.escape(attack)})"


def _sites_table(store: RunStore) -> str:
    rows = []
    for s in store.sites():
        audit = store.metrics(f"audit:{s.site_id}").get(f"audit:{s.site_id}", {})
        local = store.metrics(f"site:{s.site_id}").get(f"site:{s.site_id}", {})
        rows.append(
            f"<tr><td>{html.escape(s.site_id or str(s.node_id))}</td>"
            f"<td class='{s.status}'>{s.status}</td><td>{html.escape(s.reason)}</td>"
            f"<td>{s.n_images}</td><td>{', '.join(s.classes_present)}</td>"
            f"<td>{s.bytes_received:,}</td><td>{_worst_audit(audit)}</td>"
            f"<td>{_fmt(local.get('bal-acc'))}</td></tr>"
        )
    head = (
        "<tr><th>site</th><th>status</th><th>reason</th><th>training images</th>"
        "<th>classes contributed</th><th>bytes sent</th>"
        "<th>worst audit AUC [95% CI]</th>"
        "<th>shared ViT bal. acc. at the site</th></tr>"
    )
    return f"<table>{head}{''.join(rows)}</table>"


def _metrics_table(store: RunStore) -> str:
    metrics = store.metrics()
    rows = [
        f"<tr><td>{scope}</td><td>{_fmt(m.get('auc'))}</td>"
        f"<td>{_fmt(m.get('acc'))}</td><td>{_fmt(m.get('bal-acc'))}</td>"
        f"<td>{int(m.get('num-examples', 0))}</td></tr>"
        for scope, m in sorted(metrics.items())
        if scope in ("central", "federated")
    ]
    head = (
        "<tr><th>evaluation</th><th>AUC</th><th>accuracy</th>"
        "<th>balanced acc.</th><th>images</th></tr>"
    )
    return f"<table>{head}{''.join(rows)}</table>"


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _grids(store: RunStore) -> str:
    parts = []
    for folder in sorted((store.dir / "condensed").glob("*_grids")):
        site = folder.name.removesuffix("_grids")
        images = "".join(
            f"<figure><figcaption>{html.escape(p.stem.split('_', 2)[-1])}</figcaption>"
            f"<img src='data:image/png;base64,{_b64(p)}'></figure>"
            for p in sorted(folder.glob("*.png"))
        )
        parts.append(
            f"<details><summary>{html.escape(site)}</summary>{images}</details>"
        )
    return "".join(parts)


def _estimate(e: dict) -> str:
    return format_with_interval(e["mean"], (e["ci_low"], e["ci_high"]))


def _contributions(store: RunStore) -> str:
    """Contribution table (macro AUC and bal-acc), bar chart and class heatmap."""
    path = store.dir / "contributions.json"
    if not path.is_file():
        return "<p>No contributions: the coordinator holds no test set.</p>"
    data = json.loads(path.read_text())
    auc, bal = data["auc"], data["bal_acc"]
    rows = "".join(
        f"<tr><td>{html.escape(site)}</td><td>{_estimate(v['shapley'])}</td>"
        f"<td>{_estimate(v['loo'])}</td><td>{_estimate(v['alone'])}</td>"
        f"<td>{_estimate(bal['sites'][site]['shapley'])}</td></tr>"
        for site, v in auc["sites"].items()
    )
    head = (
        "<tr><th>site</th><th>Shapley (AUC)</th><th>leave-one-out (AUC)</th>"
        "<th>site alone (AUC)</th><th>Shapley (bal. acc.)</th></tr>"
    )
    plots = store.dir / "plots"
    bars, heat = plots / "contributions.png", plots / "contributions_by_class.png"
    stamp = path.stat().st_mtime
    if not (bars.is_file() and bars.stat().st_mtime >= stamp):  # drawn once
        contribution_bars(data, bars)
    if not (heat.is_file() and heat.stat().st_mtime >= stamp):
        class_heatmap(data, heat)
    return (
        f"<p>Value of a set of sites: {html.escape(data['value_function'])} "
        f"({data['n_test']} images); [95 % bootstrap interval over the test set]. "
        f"v(all) = {auc['v_all']:.3f}, v(∅) = {auc['v_empty']:.3f}.</p>"
        f"<table>{head}{rows}</table>"
        f"<img alt='contribution bars' src='data:image/png;base64,{_b64(bars)}'>"
        f"<img alt='contribution by class' src='data:image/png;base64,{_b64(heat)}'>"
    )


def dashboard_html(store: RunStore, live: bool = False) -> str:
    """The whole page as one self-contained HTML string (images inlined).

    ``live``: while the run is still going, the page reloads itself every
    ``LIVE_REFRESH_S`` seconds (the served dashboard).
    """
    events = "".join(
        f"<li>{u} {lvl}: {html.escape(msg)}</li>" for u, lvl, msg in store.events()
    )
    status = store.status()
    refresh = (
        f"<meta http-equiv='refresh' content='{LIVE_REFRESH_S}'>"
        if live and status == "running"
        else ""
    )
    return (
        f"<!doctype html><meta charset='utf-8'>{refresh}"
        f"<title>MedSynth-FL {html.escape(store.run_id)}</title>"
        f"<style>{STYLE}</style><h1>MedSynth-FL run {html.escape(store.run_id)}</h1>"
        f"<p>status: {html.escape(status)}</p><h2>Sites</h2>{_sites_table(store)}"
        f"<h2>Contributions</h2>{_contributions(store)}"
        f"<h2>Shared ViT</h2>{_metrics_table(store)}"
        f"<h2>Condensed samples (from the shipped generators)</h2>{_grids(store)}"
        f"<h2>Events</h2><ul>{events}</ul>"
    )


def render_dashboard(store: RunStore, out: Path | None = None) -> Path:
    """Write the page (default ``<run>/dashboard.html``) and return its path."""
    path = out or store.dir / "dashboard.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dashboard_html(store))
    return path
