"""The coordinator's dashboard, rendered from the run store as HTML.

Two views of one run, built from the same sections:

- served (:mod:`coordinator.dashboard_server`): an overview page and one page
  per site (``site/<id>``);
- exported (:func:`render_dashboard`): one self-contained file holding the
  overview and every site's section, for sharing.

Every image is inlined as a data URI, so nothing is fetched from anywhere.
Plots are drawn once per content (their file names carry a digest of what they
show) under ``<run>/plots/``.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from medsynth_fl.privacy import (
    attack_aucs,
    format_with_interval,
    plot_roc_curves,
    roc_curves_from_metrics,
)

from .plots import class_heatmap, confusion_plot, contribution_bars
from .store import CENTRAL_REPORT, CONTRIBUTIONS, RunStore, SiteRecord

ATTACKS = (
    "logan_bb",
    "recovery_pixel",
    "recovery_feature",
    "nn_pixel",
    "nn_embed",
    "density_pixel",
    "density_embed",
)
STYLE = """body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1400px}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px}
th{background:#f3f3f3}.accepted{color:#0a0}.rejected,.unreachable,.error,.quarantined{color:#c00}.late{color:#a60}
img{max-width:100%;border:1px solid #ddd}figure{display:inline-block;margin:.5em}
img.grid{width:680px;image-rendering:pixelated}nav a{margin-right:1em}
section.site{border-top:2px solid #ccc;margin-top:2em}"""

LIVE_REFRESH_S = 5

SiteLink = Callable[[str], str]  # site id → href of its page or section


def served_link(site: str) -> str:
    """The served dashboard's page of ``site`` (relative to the overview)."""
    return f"site/{quote(site, safe='')}"


def anchor_link(site: str) -> str:
    """The exported report's section of ``site``."""
    return f"#{_anchor(site)}"


def _anchor(site: str) -> str:
    return "site-" + quote(site, safe="")


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _img(path: Path, alt: str, css: str = "") -> str:
    klass = f" class='{css}'" if css else ""
    return (
        f"<img{klass} alt='{html.escape(alt)}' "
        f"src='data:image/png;base64,{_b64(path)}'>"
    )


def _plot(store: RunStore, name: str, data: object, draw: Callable) -> Path:
    """``<run>/plots/<name>-<digest>.png``, drawn by ``draw(data, path)`` if absent."""
    digest = hashlib.sha256(
        json.dumps(data, sort_keys=True, default=str).encode()
    ).hexdigest()[:12]
    path = store.dir / "plots" / f"{name}-{digest}.png"
    if not path.is_file():
        draw(data, path)
    return path


def _estimate(e: dict, digits: int = 3) -> str:
    return format_with_interval(e["mean"], (e["ci_low"], e["ci_high"]), digits)


def _site_name(s: SiteRecord) -> str:
    return s.site_id or str(s.node_id)


# -- sections -------------------------------------------------------------------
def _audit(store: RunStore, site: str) -> dict[str, float]:
    return store.metrics(f"audit:{site}").get(f"audit:{site}", {})


def _worst_audit(audit: dict[str, float]) -> str:
    """The highest attack AUC with its 95 % interval and attack name.

    E.g. ``0.523 [0.480, 0.566] (nn_embed)``; ``–`` without an audit.
    """
    aucs = {a: v for a, v in attack_aucs(audit).items() if a in ATTACKS}
    if not aucs:
        return "–"
    attack = max(aucs, key=lambda a: aucs[a][0])
    return f"{format_with_interval(*aucs[attack])} ({html.escape(attack)})"


def _null_control(audit: dict[str, float], attack: str) -> str:
    key = f"audit/{attack}/null_auc"
    if key not in audit:
        return "–"
    low, high = audit.get(key + "_ci95_low"), audit.get(key + "_ci95_high")
    return format_with_interval(
        audit[key], None if low is None or high is None else (low, high)
    )


def _sites_table(store: RunStore, link: SiteLink) -> str:
    rows = []
    for s in store.sites():
        name = _site_name(s)
        local = store.metrics(f"site:{name}").get(f"site:{name}", {})
        rows.append(
            f"<tr><td><a href='{link(name)}'>{html.escape(name)}</a></td>"
            f"<td class='{s.status}'>{s.status}</td><td>{html.escape(s.reason)}</td>"
            f"<td>{s.n_images}</td><td>{', '.join(s.classes_present)}</td>"
            f"<td>{s.bytes_received:,}</td><td>{_worst_audit(_audit(store, name))}</td>"
            f"<td>{_fmt(local.get('bal-acc'))}</td></tr>"
        )
    head = (
        "<tr><th>site</th><th>status</th><th>reason</th><th>training images</th>"
        "<th>classes contributed</th><th>bytes sent</th>"
        "<th>worst audit AUC [95% CI]</th>"
        "<th>shared ViT bal. acc. at the site</th></tr>"
    )
    return f"<table id='sites'>{head}{''.join(rows)}</table>"


def _contributions(store: RunStore, data: dict | None) -> str:
    """Contribution table (macro AUC and bal-acc), bar chart and class heatmap."""
    if data is None:
        return "<p>No contributions: the coordinator holds no test set.</p>"
    auc, bal = data["auc"], data["bal_acc"]
    monte_carlo = auc["method"] == "monte_carlo"
    rows = "".join(
        f"<tr><td>{html.escape(site)}</td><td>{_estimate(v['shapley'])}</td>"
        + (f"<td>{_fmt(v.get('shapley_stderr'))}</td>" if monte_carlo else "")
        + f"<td>{_estimate(v['loo'])}</td><td>{_estimate(v['alone'])}</td>"
        f"<td>{_estimate(bal['sites'][site]['shapley'])}</td></tr>"
        for site, v in auc["sites"].items()
    )
    head = (
        "<tr><th>site</th><th>Shapley (AUC)</th>"
        + ("<th>Monte-Carlo std. error</th>" if monte_carlo else "")
        + "<th>leave-one-out (AUC)</th><th>site alone (AUC)</th>"
        "<th>Shapley (bal. acc.)</th></tr>"
    )
    bars = _plot(store, "contributions", data, contribution_bars)
    heat = _plot(store, "contributions_by_class", data, class_heatmap)
    method = (
        "truncated Monte-Carlo permutation Shapley"
        if monte_carlo
        else f"exact Shapley over {auc['coalitions_trained']} coalitions"
    )
    return (
        f"<p>Value of a set of sites: {html.escape(data['value_function'])} "
        f"({data['n_test']} images); {method}; "
        f"[95 % bootstrap interval over the test set]. "
        f"v(all) = {auc['v_all']:.3f}, v(∅) = {auc['v_empty']:.3f}.</p>"
        f"<table id='contributions'>{head}{rows}</table>"
        f"{_img(bars, 'contribution bars')}{_img(heat, 'contribution by class')}"
    )


def _sample_quality(data: dict | None, link: SiteLink) -> str:
    quality = (data or {}).get("sample_quality")
    if not quality:
        return ""
    rows = "".join(
        f"<tr><td><a href='{link(site)}'>{html.escape(site)}</a></td>"
        f"<td>{_estimate(q['kid'], 4)}</td><td>{_estimate(q['precision'])}</td>"
        f"<td>{_estimate(q['recall'])}</td><td>{q['n_fake']}</td></tr>"
        for site, q in quality.items()
    )
    return (
        "<h3>Sample quality against the test set</h3>"
        "<p>In the shared model's feature space (the contributions' space). "
        "KID: kernel inception distance, lower is closer. Precision: share of a "
        "site's samples that look like real test images; recall: share of the "
        "test images' variety that its samples cover (Kynkäänniemi et al., "
        "k = 3). [95 % intervals]</p>"
        "<table id='sample-quality'><tr><th>site</th><th>KID</th><th>precision</th>"
        f"<th>recall</th><th>samples</th></tr>{rows}</table>"
    )


def _shared_model(store: RunStore) -> str:
    metrics = store.metrics()
    rows = "".join(
        f"<tr><td>{scope}</td><td>{_fmt(m.get('auc'))}</td>"
        f"<td>{_fmt(m.get('acc'))}</td><td>{_fmt(m.get('bal-acc'))}</td>"
        f"<td>{int(m.get('num-examples', 0))}</td></tr>"
        for scope, m in sorted(metrics.items())
        if scope in ("central", "federated")
    )
    out = (
        "<table id='shared-model'><tr><th>evaluation</th><th>AUC</th>"
        "<th>accuracy</th><th>balanced acc.</th><th>images</th></tr>"
        f"{rows}</table>"
    )
    report = store.read_json(CENTRAL_REPORT)
    if report is None:
        return out
    per_class = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{c['support']}</td>"
        f"<td>{_fmt(c['auc'])}</td><td>{_fmt(c['recall'])}</td>"
        f"<td>{_fmt(c['precision'])}</td></tr>"
        for name, c in report["per_class"].items()
    )
    confusion = _plot(store, "confusion", report, confusion_plot)
    return (
        f"{out}<h3>Per class, on the coordinator's held-out test set</h3>"
        "<table id='per-class'><tr><th>class</th><th>test images</th><th>AUC</th>"
        f"<th>recall</th><th>precision</th></tr>{per_class}</table>"
        f"{_img(confusion, 'confusion matrix')}"
    )


def _events(store: RunStore) -> str:
    stages = "".join(
        f"<li>{html.escape(stage)} finished</li>" for stage, _ in store.stages()
    )
    events = "".join(
        f"<li>{u} {lvl}: {html.escape(msg)}</li>" for u, lvl, msg in store.events()
    )
    return f"<h3>Stages</h3><ul>{stages}</ul><h3>Events</h3><ul>{events}</ul>"


def _site_section(store: RunStore, s: SiteRecord, data: dict | None) -> str:
    """One site: status, contribution, sample quality, grids, audit ROC."""
    name = _site_name(s)
    parts = [
        f"<p>status: <span class='{s.status}'>{s.status}</span>"
        + (f" ({html.escape(s.reason)})" if s.reason else "")
        + f"; {s.n_images} training images; classes: "
        f"{html.escape(', '.join(s.classes_present)) or '–'}; "
        f"{s.bytes_received:,} bytes sent.</p>"
    ]
    site_value = (data or {}).get("auc", {}).get("sites", {}).get(name)
    if site_value is not None:
        per_class = data["per_class_shapley"][name]
        cells = "".join(
            f"<td>{html.escape(c)}: {'–' if v is None else f'{v:+.3f}'}</td>"
            for c, v in per_class.items()
        )
        parts.append(
            "<h3>Contribution</h3><table class='site-contribution'>"
            "<tr><th>Shapley (AUC)</th><th>leave-one-out</th><th>alone</th></tr>"
            f"<tr><td>{_estimate(site_value['shapley'])}</td>"
            f"<td>{_estimate(site_value['loo'])}</td>"
            f"<td>{_estimate(site_value['alone'])}</td></tr></table>"
            f"<table><tr><th>Shapley per class</th>{cells}</tr></table>"
        )
    quality = (data or {}).get("sample_quality", {}).get(name)
    if quality is not None:
        parts.append(
            f"<p>Sample quality: KID {_estimate(quality['kid'], 4)}, precision "
            f"{_estimate(quality['precision'])}, recall "
            f"{_estimate(quality['recall'])}.</p>"
        )
    grids = sorted((store.dir / "condensed" / f"{name}_grids").glob("*.png"))
    if grids:
        parts.append(
            "<h3>Samples from the shipped generator, per class</h3>"
            + "".join(
                f"<figure><figcaption>{html.escape(p.stem.split('_', 2)[-1])}"
                f"</figcaption>{_img(p, f'{name} samples', 'grid')}</figure>"
                for p in grids
            )
        )
    audit = _audit(store, name)
    if roc_curves_from_metrics(audit):
        roc = _plot(
            store,
            f"roc_{quote(name, safe='')}",
            audit,
            lambda a, path: plot_roc_curves(
                roc_curves_from_metrics(a), path, f"{name}: federated audit"
            ),
        )
        attacks = "".join(
            f"<tr><td>{html.escape(a)}</td><td>{format_with_interval(*v)}</td>"
            f"<td>{_fmt(audit.get(f'audit/{a}/tpr@1fpr'))}</td>"
            f"<td>{_null_control(audit, a)}</td></tr>"
            for a, v in sorted(attack_aucs(audit).items())
        )
        parts.append(
            "<h3>Membership-inference audit (run at the site, on its own "
            "members)</h3><p>Null control: the same attack on two disjoint halves "
            "of the non-members; it reads chance, and its spread is what noise "
            "alone does to an AUC at this audit's size.</p>"
            "<table class='audit'><tr><th>attack</th><th>AUC [95% CI]</th>"
            "<th>TPR at 1 % FPR</th><th>null control AUC [95% CI]</th></tr>"
            f"{attacks}</table>{_img(roc, f'{name} audit ROC')}"
        )
    elif s.status == "accepted":
        parts.append("<p>No audit ROC: the site sent no ROC points.</p>")
    return "".join(parts)


# -- pages ------------------------------------------------------------------------
def _page(store: RunStore, title: str, body: str, live: bool) -> str:
    status = store.status()
    refresh = (
        f"<meta http-equiv='refresh' content='{LIVE_REFRESH_S}'>"
        if live and status == "running"
        else ""
    )
    return (
        f"<!doctype html><meta charset='utf-8'>{refresh}"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style>"
        f"<h1>{html.escape(title)}</h1><p>status: {html.escape(status)}</p>{body}"
    )


def _overview_body(store: RunStore, link: SiteLink) -> str:
    data = store.read_json(CONTRIBUTIONS)
    return (
        f"<h2>Sites</h2>{_sites_table(store, link)}"
        f"<h2>Contributions</h2>{_contributions(store, data)}"
        f"{_sample_quality(data, link)}"
        f"<h2>Shared ViT</h2>{_shared_model(store)}"
        f"<h2>Rounds and events</h2>{_events(store)}"
    )


def overview_html(store: RunStore, live: bool = False) -> str:
    """The served overview page: sites, contributions, shared model, history.

    ``live``: while the run is still going, the page reloads itself every
    ``LIVE_REFRESH_S`` seconds.
    """
    return _page(
        store,
        f"MedSynth-FL run {store.run_id}",
        _overview_body(store, served_link),
        live,
    )


def site_html(store: RunStore, site: str, live: bool = False) -> str | None:
    """The served page of one site, or None when the run has no such site."""
    record = next((s for s in store.sites() if _site_name(s) == site), None)
    if record is None:
        return None
    body = (
        "<nav><a href='../'>← overview</a></nav>"
        f"{_site_section(store, record, store.read_json(CONTRIBUTIONS))}"
    )
    return _page(store, f"MedSynth-FL run {store.run_id}: site {site}", body, live)


def report_html(store: RunStore) -> str:
    """One self-contained page: the overview, then a section per site."""
    data = store.read_json(CONTRIBUTIONS)
    sections = "".join(
        f"<section class='site' id='{_anchor(_site_name(s))}'>"
        f"<h2>Site {html.escape(_site_name(s))}</h2>{_site_section(store, s, data)}"
        "<p><a href='#sites'>↑ sites</a></p></section>"
        for s in store.sites()
    )
    return _page(
        store,
        f"MedSynth-FL run {store.run_id}",
        _overview_body(store, anchor_link) + sections,
        live=False,
    )


def render_dashboard(store: RunStore, out: Path | None = None) -> Path:
    """Write the report (default ``<run>/dashboard.html``) and return its path."""
    path = out or store.dir / "dashboard.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report_html(store))
    return path
