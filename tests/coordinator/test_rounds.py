"""The MedSynth round end to end over an in-process grid.

Persistence, resume, failures.
"""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.clientapp import ClientApp

from coordinator import rounds
from coordinator.server_app import run_coordinator
from coordinator.store import RunStore
from medsynth_fl.config import ConfigError
from site_client.client_app import create_client_app

from .fakes import InProcessGrid


def make_grid(run_config, n_sites=4, **kw):
    nodes = {100 + i: {"partition-id": i} for i in range(n_sites)}
    return InProcessGrid(create_client_app(run_config), nodes, run_config, **kw)


def test_round_collects_verifies_samples_trains_and_evaluates(run_config):
    grid = make_grid(run_config)
    summary = run_coordinator(grid, run_config, flower_run_id=1)
    accepted = [s for s in summary["sites"] if s["status"] == "accepted"]
    assert len(accepted) == 4
    assert {"central", "federated"} <= set(summary["metrics"])
    assert 0 <= summary["metrics"]["central"]["auc"] <= 1
    per_site = [k for k in summary["metrics"] if k.startswith("site:")]
    assert len(per_site) == 4
    # A site without AK/SCC images ships a generator that declares them absent,
    # and the coordinator samples only what is present.
    molemax = next(s for s in accepted if s["site_id"] == "HAM_vidir_molemax")
    assert (
        "AK" not in molemax["classes_present"]
        and "SCC" not in molemax["classes_present"]
    )
    store = RunStore(run_config["store-dir"], "test-run")
    condensed = np.load(store.dir / "condensed" / "HAM_vidir_molemax.npz")
    assert len(condensed["labels"]) == 4 * len(molemax["classes_present"])
    assert json.loads((store.dir / "summary.json").read_text())["run_id"] == "test-run"
    page = (store.dir / "dashboard.html").read_text()
    assert "HAM_vidir_molemax" in page and "data:image/png;base64," in page
    assert "alt='contribution bars'" in page and "Shapley (AUC)" in page
    # per-site sections: the federated audit's ROC, drawn from the points sent
    assert page.count(" audit ROC'") == 4 and "alt='confusion matrix'" in page
    per_class = json.loads((store.dir / "central_eval.json").read_text())
    assert sum(c["support"] for c in per_class["per_class"].values()) == sum(
        map(sum, per_class["confusion"])
    )
    # each accepted site's worst federated-audit AUC, with its 95 % interval
    assert len(re.findall(r"\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\] \(\w+\)", page)) == 4
    assert all(s["bytes_received"] > 0 for s in accepted)
    # every accepted site valued, and the Shapley values add up
    contributions = json.loads((store.dir / "contributions.json").read_text())
    auc = contributions["auc"]
    assert set(auc["sites"]) == {s["site_id"] for s in accepted}
    assert auc["method"] == "exact" and auc["coalitions_trained"] == 2**4 - 1
    total = sum(v["shapley"]["mean"] for v in auc["sites"].values())
    assert total == pytest.approx(auc["v_all"] - auc["v_empty"], abs=1e-9)


def test_restart_after_a_kill_while_recording_packages_asks_only_the_missing_sites(
    run_config, monkeypatch
):
    calls = {"n": 0}
    original = RunStore.record_site

    def dying_record_site(self, rec):
        calls["n"] += 1
        if calls["n"] > 2:
            raise KeyboardInterrupt("coordinator killed")
        original(self, rec)

    monkeypatch.setattr(RunStore, "record_site", dying_record_site)
    with pytest.raises(KeyboardInterrupt):
        run_coordinator(make_grid(run_config), run_config, flower_run_id=1)
    monkeypatch.setattr(RunStore, "record_site", original)
    store = RunStore(run_config["store-dir"], "test-run")
    delivered = {r.node_id for r in store.sites("accepted")}
    assert len(delivered) == 2
    grid = make_grid(run_config)
    summary = run_coordinator(grid, run_config, flower_run_id=1)
    asked = {m.metadata.dst_node_id for m in grid.sent_of_type("train")}
    assert (
        asked == set(grid.node_configs) - delivered
    )  # verified packages are not requested again
    assert len([s for s in summary["sites"] if s["status"] == "accepted"]) == 4


def test_restart_mid_training_resumes_the_shared_vit_and_matches(
    run_config, tmp_path, monkeypatch
):
    reference_cfg = dict(
        run_config, **{"store-dir": str(tmp_path / "ref"), "run-id": "ref"}
    )
    ref = run_coordinator(make_grid(reference_cfg), reference_cfg, flower_run_id=1)

    from medsynth_fl.training import classifier

    original, seen = classifier.classifier_step, {"n": 0}

    def dying_step(*args, **kwargs):
        seen["n"] += 1
        if seen["n"] == 3:  # after the checkpoint at step 2 (tiny: checkpoint_every=2)
            raise KeyboardInterrupt("coordinator killed")
        return original(*args, **kwargs)

    monkeypatch.setattr(classifier, "classifier_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        run_coordinator(make_grid(run_config), run_config, flower_run_id=1)
    monkeypatch.setattr(classifier, "classifier_step", original)
    grid = make_grid(run_config)
    summary = run_coordinator(grid, run_config, flower_run_id=1)
    assert grid.sent_of_type("train") == []
    assert summary["metrics"]["central"] == ref["metrics"]["central"]


def test_unreachable_and_late_sites_are_recorded_and_the_round_goes_on(run_config):
    grid = make_grid(run_config, unreachable={103}, late={102})
    summary = run_coordinator(grid, run_config, flower_run_id=1)
    status = {s["node_id"]: s["status"] for s in summary["sites"]}
    assert status[103] == "unreachable"
    assert sum(v == "accepted" for v in status.values()) == 2
    # the late site's package came after the timeout: verified, stored, not used
    late = next(s for s in summary["sites"] if s["node_id"] == 102)
    assert late["status"] == "late" and "after the timeout" in late["reason"]
    assert Path(late["package_path"]).is_file() and late["weights_sha256"]
    store = RunStore(run_config["store-dir"], "test-run")
    condensed = {p.stem for p in (store.dir / "condensed").glob("*.npz")}
    assert late["site_id"] not in condensed and len(condensed) == 2
    assert grid.held == {}  # the coordinator pulled the late reply
    # a rerun of the finished run asks nobody and keeps the late record
    again = make_grid(run_config)
    run_coordinator(again, run_config, flower_run_id=1)
    assert again.sent == []
    assert {r.node_id: r.status for r in store.sites()}[102] == "late"


def garbage_app() -> ClientApp:
    app = ClientApp()

    @app.train()
    def train(msg, context):
        return Message(
            RecordDict(
                {
                    "generator": ArrayRecord(
                        {"w": Array(np.zeros((3, 64, 64), np.float32))}
                    ),
                    "package": ConfigRecord({"manifest": "{}", "signature": "AAAA"}),
                }
            ),
            reply_to=msg,
        )

    return app


def test_garbage_reply_is_refused_with_a_reason_and_too_few_sites_stop_cleanly(
    run_config,
):
    nodes = {100: {"partition-id": 0}, 101: {"partition-id": 1}}
    grid = InProcessGrid(create_client_app(run_config), nodes, run_config)
    bad = garbage_app()
    real = grid.client_app
    grid.client_app = lambda msg, ctx: (
        bad if msg.metadata.dst_node_id == 101 else real
    )(msg, ctx)
    with pytest.raises(rounds.NotEnoughSites, match="1 verified package"):
        run_coordinator(
            grid,
            run_config,
            flower_run_id=1,  # min-sites 2 (the fixture's)
        )
    store = RunStore(run_config["store-dir"], "test-run")
    refused = store.sites("rejected")
    assert [r.node_id for r in refused] == [101]
    assert "schema" in refused[0].reason or "format" in refused[0].reason


def test_site_failure_becomes_an_error_reply_not_a_crash(run_config):
    nodes = {100: {"partition-id": 0}, 101: {"partition-id": 99}}  # 99: no such site
    grid = InProcessGrid(create_client_app(run_config), nodes, run_config)
    with pytest.raises(rounds.NotEnoughSites):
        run_coordinator(grid, run_config, flower_run_id=1)
    refused = RunStore(run_config["store-dir"], "test-run").sites("rejected")
    assert "partition 99 has no site folder" in refused[0].reason


def test_config_naming_an_unknown_site_is_an_error(run_config):
    cfg = dict(
        run_config,
        overrides=run_config["overrides"]
        + '; federation.sites=["HAM_rosendahl", "St_Nowhere"]',
    )
    with pytest.raises(ConfigError, match="St_Nowhere"):
        run_coordinator(make_grid(run_config), cfg, flower_run_id=1)


def test_a_finished_run_reruns_without_any_message(run_config):
    run_coordinator(make_grid(run_config), run_config, flower_run_id=1)
    grid = make_grid(run_config)
    run_coordinator(grid, run_config, flower_run_id=1)
    assert grid.sent == []
