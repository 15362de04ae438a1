"""The dashboard: served from a run store, exported as one file, its numbers."""

from __future__ import annotations

import os
import re
import shutil
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest

from coordinator.cli import main
from coordinator.contributions import (
    CoalitionPredictions,
    compute_contributions,
    linear_probe_trainer,
)
from coordinator.dashboard_server import make_server
from coordinator.sample_quality import sample_quality
from coordinator.store import CENTRAL_REPORT, CONTRIBUTIONS, RunStore, SiteRecord
from medsynth_fl.evaluation import per_class_report

CLASSES = ["MEL", "NV", "BCC"]
ACCEPTED = ["HAM_rosendahl", "HAM_vidir_modern"]
ALL_SITES = [*ACCEPTED, "HAM_vienna_dias"]


def _record(site: str, status: str, reason: str = "") -> SiteRecord:
    return SiteRecord(
        node_id=abs(hash(site)) % 1000,
        site_id=site,
        status=status,
        reason=reason,
        package_path="",
        weights_sha256="",
        n_images=120,
        classes_present=CLASSES,
        bytes_received=1000 if status == "accepted" else 0,
        seconds=1.0,
    )


def _audit_metrics(rng) -> dict[str, float]:
    """What a site's federated audit sends: summary, interval, sizes, ROC points."""
    from medsynth_fl.privacy.audit import AuditReport
    from medsynth_fl.privacy.metrics import evaluate_attack, null_control
    from medsynth_fl.privacy.report import audit_metrics

    results = {
        name: evaluate_attack(name, rng.normal(shift, 1, 80), rng.normal(0, 1, 90))
        for name, shift in (("nn_embed", 0.0), ("logan_bb", 0.3))
    }
    null = {name: null_control(name, rng.normal(0, 1, 90)) for name in results}
    return audit_metrics(AuditReport(results, {}, {}, 0.5, {}, null_control=null))


def _grid(path, rng) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (34, 68, 3), dtype=np.uint8)).save(path)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> RunStore:
    """A finished run: two accepted sites, one withheld, every document stored."""
    store = RunStore(tmp_path_factory.mktemp("store"), "demo")
    store.open_run("config: {}")
    rng = np.random.default_rng(0)
    for site in ACCEPTED:
        store.record_site(_record(site, "accepted"))
        store.put_metrics(f"audit:{site}", _audit_metrics(rng))
        for k, c in enumerate(CLASSES):
            _grid(store.dir / "condensed" / f"{site}_grids" / f"grid_{k}_{c}.png", rng)
    store.record_site(_record("HAM_vienna_dias", "rejected", "release gate: withheld"))
    store.put_metrics("central", {"auc": 0.7215, "acc": 0.5, "bal-acc": 0.2571})
    y_eval = np.repeat(np.arange(3), 20)
    proba = rng.dirichlet(np.ones(3), 60)
    store.write_json(CENTRAL_REPORT, per_class_report(y_eval, proba, CLASSES))
    centres = rng.normal(0, 2, (3, 4))
    x_eval = centres[y_eval] + rng.normal(size=(60, 4))
    feats = {s: centres[y_eval] + rng.normal(size=(60, 4)) for s in ACCEPTED}
    train = linear_probe_trainer(feats, {s: y_eval for s in ACCEPTED}, x_eval, 3)
    result = compute_contributions(
        CoalitionPredictions(tuple(ACCEPTED), 60, 3, train), y_eval, CLASSES, 10
    )
    record = {"sites": ACCEPTED, "value_function": "probe", "n_test": 60}
    record.update(result.as_record())
    record["sample_quality"] = {
        s: sample_quality(x_eval, f, n_bootstrap=5) for s, f in feats.items()
    }
    store.write_json(CONTRIBUTIONS, record)
    store.finish_stage("collect")
    store.log("info", "round finished")
    store.set_status("finished")
    return store


def _site_rows(page: str) -> list[str]:
    table = page.split("<table id='sites'>")[1].split("</table>")[0]
    return re.findall(r"<tr><td><a href='[^']*'>([^<]+)</a></td>", table)


def test_report_names_every_site_and_shows_the_stored_numbers(store, tmp_path):
    out = tmp_path / "report.html"
    assert main(["report", str(store.dir), "--out", str(out)]) == 0
    page = out.read_text()
    assert sorted(_site_rows(page)) == sorted(ALL_SITES)
    assert "release gate: withheld" in page
    assert "0.722" in page and "0.257" in page  # central AUC / bal-acc
    stored = store.read_json(CONTRIBUTIONS)
    for v in stored["auc"]["sites"].values():
        assert f"{v['shapley']['mean']:.3f} [{v['shapley']['ci_low']:.3f}," in page
    for q in stored["sample_quality"].values():
        assert f"{q['precision']['mean']:.3f} [{q['precision']['ci_low']:.3f}," in page
    per_class = store.read_json(CENTRAL_REPORT)["per_class"]
    for name, c in per_class.items():
        assert f"<td>{name}</td><td>{c['support']}</td><td>{c['auc']:.3f}</td>" in page
    for site in ALL_SITES:  # a section per site, linked from its row
        assert f"id='site-{site}'" in page and f"href='#site-{site}'" in page
    # self-contained: images inlined, nothing fetched from elsewhere
    assert "alt='confusion matrix'" in page
    assert page.count("alt='HAM_rosendahl audit ROC'") == 1
    audit = store.metrics("audit:HAM_rosendahl")["audit:HAM_rosendahl"]
    null = audit["audit/nn_embed/null_auc"]
    assert f"<td>{null:.3f} [{audit['audit/nn_embed/null_auc_ci95_low']:.3f}," in page
    assert page.count("alt='HAM_rosendahl samples'") == len(CLASSES)
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", page)
    assert "http-equiv='refresh'" not in page  # a finished run does not reload


def _get(url: str) -> str:
    return urllib.request.urlopen(url, timeout=10).read().decode()


def test_served_pages_come_from_the_store_and_reload_while_running(store):
    server = make_server(store, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        page = _get(base + "/")
        assert sorted(_site_rows(page)) == sorted(ALL_SITES)
        assert "href='site/HAM_rosendahl'" in page
        site = _get(base + "/site/HAM_rosendahl")
        assert "alt='HAM_rosendahl audit ROC'" in site
        withheld = _get(base + "/site/HAM_vienna_dias")
        assert "release gate: withheld" in withheld and "audit ROC" not in withheld
        for bad in ("/site/nobody", "/../runs.sqlite", "/site/a/b", "/plots/x.png"):
            with pytest.raises(urllib.error.HTTPError, match="404"):
                urllib.request.urlopen(base + bad, timeout=10)
        store.set_status("running")
        assert "http-equiv='refresh'" in _get(base + "/")
        assert "http-equiv='refresh'" in _get(base + "/site/HAM_rosendahl")
    finally:
        store.set_status("finished")
        server.shutdown()
        server.server_close()


def test_a_missing_or_foreign_run_folder_is_a_clear_error(store, tmp_path, capsys):
    assert (
        main(["report", str(tmp_path / "nope"), "--out", str(tmp_path / "r.html")]) == 2
    )
    assert "no run folder" in capsys.readouterr().err
    (tmp_path / "lonely").mkdir()
    assert main(["dashboard", str(tmp_path / "lonely")]) == 2
    assert "not in a run store" in capsys.readouterr().err
    other = store.root / "other"
    other.mkdir()
    assert main(["report", str(other), "--out", str(tmp_path / "r.html")]) == 2
    assert "not in" in capsys.readouterr().err


# -- in a real browser ----------------------------------------------------------
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_browser = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("MEDSYNTH_REQUIRE_BROWSER"),
    reason="no chromium here (apt-get install chromium); CI installs it and "
    "sets MEDSYNTH_REQUIRE_BROWSER=1, which turns this skip into a failure",
)


def _look_in_chromium(urls: dict[str, str], allowed: tuple[str, ...], shots) -> dict:
    """Open each URL headless; what a user would see on it and every request made.

    One full-page screenshot per page is kept under ``shots`` (the test's tmp
    dir: CI's artefacts).
    """
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "MEDSYNTH_REQUIRE_BROWSER is set but chromium is not installed"
    requests: list[str] = []
    seen = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("request", lambda r: requests.append(r.url))
        for name, url in urls.items():
            page.goto(url, wait_until="load")
            seen[name] = page.evaluate(
                """() => ({
                    sites: [...document.querySelectorAll('#sites tr')].slice(1)
                        .map(r => r.cells[0].innerText),
                    central: [...document.querySelectorAll('td')]
                        .filter(td => td.innerText === 'central')
                        .map(td => td.parentElement.innerText),
                    images: [...document.images].map(
                        i => [i.alt, i.complete && i.naturalWidth > 0]),
                })"""
            )
            page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
        browser.close()
    leaving = [u for u in requests if not u.startswith(allowed)]
    return {"pages": seen, "leaving": leaving}


def _check_overview(seen: dict, store: RunStore) -> None:
    assert sorted(seen["sites"]) == sorted(ALL_SITES)
    central = store.metrics("central")["central"]
    assert f"{central['auc']:.3f}" in seen["central"][0]
    assert f"{central['bal-acc']:.3f}" in seen["central"][0]
    alts = [alt for alt, _ in seen["images"]]
    assert {"contribution bars", "contribution by class", "confusion matrix"} <= set(
        alts
    )
    assert all(loaded for _, loaded in seen["images"])


@needs_browser
def test_the_served_dashboard_in_chromium(store, tmp_path):
    server = make_server(store, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    urls = {"overview": base} | {site: f"{base}site/{site}" for site in ALL_SITES}
    try:
        seen = _look_in_chromium(urls, (base, "data:"), tmp_path)
    finally:
        server.shutdown()
        server.server_close()
    _check_overview(seen["pages"]["overview"], store)
    for site in ACCEPTED:
        images = seen["pages"][site]["images"]
        assert [a for a, ok in images if ok].count(f"{site} samples") == len(CLASSES)
        assert (f"{site} audit ROC", True) in [tuple(i) for i in images]
    assert seen["pages"]["HAM_vienna_dias"]["images"] == []  # withheld: nothing
    assert seen["leaving"] == []
    for name in urls:
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000


@needs_browser
def test_the_exported_report_in_chromium(store, tmp_path):
    out = tmp_path / "report.html"
    assert main(["report", str(store.dir), "--out", str(out)]) == 0
    seen = _look_in_chromium(
        {"report": out.as_uri()}, (out.as_uri(), "data:"), tmp_path
    )
    _check_overview(seen["pages"]["report"], store)
    alts = [alt for alt, _ in seen["pages"]["report"]["images"]]
    assert all(f"{site} audit ROC" in alts for site in ACCEPTED)
    assert seen["leaving"] == []
