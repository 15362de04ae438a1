"""The dashboard: served from a run store, exported as one file, its numbers."""

from __future__ import annotations

import json
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
from coordinator.store import RunStore, SiteRecord

CLASSES = ["MEL", "NV", "BCC"]
ACCEPTED = ["HAM_rosendahl", "HAM_vidir_modern"]


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


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> RunStore:
    """A finished run: two accepted sites, one withheld, contributions stored."""
    store = RunStore(tmp_path_factory.mktemp("store"), "demo")
    store.open_run("config: {}")
    for site in ACCEPTED:
        store.record_site(_record(site, "accepted"))
    store.record_site(_record("HAM_vienna_dias", "rejected", "release gate: withheld"))
    store.put_metrics("central", {"auc": 0.7215, "acc": 0.5, "bal-acc": 0.2571})
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 2, (3, 4))
    y_eval = np.repeat(np.arange(3), 20)
    x_eval = centres[y_eval] + rng.normal(size=(60, 4))
    feats = {s: centres[y_eval] + rng.normal(size=(60, 4)) for s in ACCEPTED}
    train = linear_probe_trainer(feats, {s: y_eval for s in ACCEPTED}, x_eval, 3)
    result = compute_contributions(
        CoalitionPredictions(tuple(ACCEPTED), 60, 3, train), y_eval, CLASSES, 10
    )
    record = {"sites": ACCEPTED, "value_function": "probe", "n_test": 60}
    record.update(result.as_record())
    (store.dir / "contributions.json").write_text(json.dumps(record))
    store.log("info", "round finished")
    store.set_status("finished")
    return store


def test_report_names_every_site_and_shows_the_stored_numbers(store, tmp_path):
    out = tmp_path / "report.html"
    assert main(["report", str(store.dir), "--out", str(out)]) == 0
    page = out.read_text()
    for site in [*ACCEPTED, "HAM_vienna_dias"]:
        assert f"<td>{site}</td>" in page
    assert "release gate: withheld" in page
    assert "0.722" in page and "0.257" in page  # central AUC / bal-acc
    shapley = json.loads((store.dir / "contributions.json").read_text())["auc"]
    for v in shapley["sites"].values():
        assert f"{v['shapley']['mean']:.3f} [{v['shapley']['ci_low']:.3f}," in page
    # self-contained: images inlined, nothing fetched from elsewhere
    assert len(re.findall(r"src='data:image/png;base64,", page)) >= 2
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", page)
    assert "http-equiv='refresh'" not in page  # a finished run does not reload


def test_served_page_is_the_report_and_reloads_while_running(store):
    server = make_server(store, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        page = urllib.request.urlopen(base + "/", timeout=10).read().decode()
        assert all(f"<td>{s}</td>" in page for s in ACCEPTED)
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(base + "/../runs.sqlite", timeout=10)
        store.set_status("running")
        live = urllib.request.urlopen(base + "/", timeout=10).read().decode()
        assert "http-equiv='refresh'" in live
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


def _look_in_chromium(url: str, allowed: tuple[str, ...], shot) -> dict:
    """Open ``url`` headless; return what a user would see and every request made."""
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "MEDSYNTH_REQUIRE_BROWSER is set but chromium is not installed"
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("request", lambda r: requests.append(r.url))
        page.goto(url, wait_until="load")
        seen = page.evaluate(
            """() => ({
                sites: [...document.querySelectorAll('table')[0].querySelectorAll('tr')]
                    .slice(1).map(r => r.cells[0].innerText),
                central: [...document.querySelectorAll('td')]
                    .find(td => td.innerText === 'central')
                    .parentElement.innerText,
                images: [...document.images].map(i => i.complete && i.naturalWidth > 0),
            })"""
        )
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    leaving = [u for u in requests if not u.startswith(allowed)]
    return {**seen, "leaving": leaving}


def _check(seen: dict, store: RunStore) -> None:
    assert sorted(seen["sites"]) == sorted([*ACCEPTED, "HAM_vienna_dias"])
    central = store.metrics("central")["central"]
    assert f"{central['auc']:.3f}" in seen["central"]
    assert f"{central['bal-acc']:.3f}" in seen["central"]
    assert len(seen["images"]) >= 2 and all(seen["images"])
    assert seen["leaving"] == []


@needs_browser
def test_the_served_dashboard_in_chromium(store, tmp_path):
    server = make_server(store, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        seen = _look_in_chromium(base, (base, "data:"), tmp_path / "served.png")
    finally:
        server.shutdown()
        server.server_close()
    _check(seen, store)
    assert (tmp_path / "served.png").stat().st_size > 10_000


@needs_browser
def test_the_exported_report_in_chromium(store, tmp_path):
    out = tmp_path / "report.html"
    assert main(["report", str(store.dir), "--out", str(out)]) == 0
    seen = _look_in_chromium(
        out.as_uri(), (out.as_uri(), "data:"), tmp_path / "report.png"
    )
    _check(seen, store)
