"""One whole Flower simulation (Ray backend, in-process run_simulation) with 2 sites:
every message the sites sent is inspected at the coordinator.
"""

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from flwr.serverapp import Grid
from flwr.simulation import run_simulation

from coordinator.server_app import create_server_app
from medsynth_fl.config import load_config
from medsynth_fl.models.registry import build_generator
from medsynth_fl.package import read_package
from medsynth_fl.package.manifest import parse_manifest
from medsynth_fl.wire import METRIC_KEYS, PACKAGE_CONFIG_KEYS
from simulation.flower_env import ray_tmpdir
from simulation.prepare import prepare_simulation
from site_client.client_app import create_client_app
from site_client.egress import AUDIT_METRIC_SUFFIXES


class RecordingGrid(Grid):
    """Delegates to Flower's grid and keeps every reply a site sent."""

    def __init__(self, inner: Grid):
        self.inner = inner
        self.received = []

    def set_run(self, run):
        self.inner.set_run(run)

    @property
    def run(self):
        return self.inner.run

    def create_message(self, *args, **kwargs):
        return self.inner.create_message(*args, **kwargs)

    def get_node_ids(self):
        return self.inner.get_node_ids()

    def get_nodes(self):
        return self.inner.get_nodes()

    def push_messages(self, messages):
        return self.inner.push_messages(messages)

    def pull_messages(self, message_ids):
        replies = list(self.inner.pull_messages(message_ids))
        self.received.extend(replies)
        return replies

    def send_and_receive(self, messages, *, timeout=None):
        replies = list(self.inner.send_and_receive(messages, timeout=timeout))
        self.received.extend(replies)
        return replies


@pytest.mark.flower
@pytest.mark.slow
def test_simulation_sites_send_only_generator_weights_and_metrics(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("RAY_TMPDIR", str(ray_tmpdir()))  # AF_UNIX paths ≤ 107 bytes
    cfg = load_config(
        "tiny",
        ["data.empty_class=skip", "federation.sites=[HAM_rosendahl, HAM_vidir_modern]"],
    )
    layout = prepare_simulation(cfg, tmp_path / "sim")
    rc = layout.run_config(
        "tiny", overrides="data.empty-class=skip", **{"run-id": "sim"}
    )
    recorders = []

    def wrap(grid):
        recorders.append(RecordingGrid(grid))
        return recorders[-1]

    run_simulation(
        create_server_app(rc, wrap_grid=wrap),
        create_client_app(rc),
        num_supernodes=2,
        backend_config={
            "client_resources": {"num_cpus": 2},
            "init_args": {"num_cpus": 2},
        },
    )
    received = recorders[0].received
    # 2 packages + 2 replies to the federated audit + 2 evaluation replies
    assert len(received) == 6
    packages = [m for m in received if "generator" in m.content]
    assert len(packages) == 2
    image_size = cfg.data.image_size
    for msg in received:
        assert not msg.has_error(), msg.error
        content = msg.content
        arrays = [r for r in content.values() if isinstance(r, ArrayRecord)]
        for name, record in content.items():
            if isinstance(record, ConfigRecord):
                assert name == "package" and set(record) <= PACKAGE_CONFIG_KEYS
            if isinstance(record, MetricRecord):  # aggregate metrics only
                assert all(
                    k in METRIC_KEYS
                    or (k.startswith("audit/") and k.endswith(AUDIT_METRIC_SUFFIXES))
                    for k in record
                ), sorted(record)
        if not arrays:
            continue
        assert list(content) == ["generator", "package", "metrics"]
        manifest = parse_manifest(str(content["package"]["manifest"]))
        kw = dict(manifest.architecture.kwargs)
        expected = build_generator(manifest.architecture.name, kw).state_dict()
        sent = content["generator"]
        assert set(sent) == set(expected)  # nothing outside the generator's state dict
        # the independent oracle: key for key, what the site sent is the state
        # dict of the generator it condensed (its own package file on disk)
        site = str(content["package"]["site-id"])
        (own_path,) = (layout.sites_dir / site / "work").glob("*/generator.msfl")
        own = read_package(own_path).build_generator().state_dict()
        assert set(sent) == set(own)
        for key, array in sent.items():
            np.testing.assert_array_equal(array.numpy(), own[key].numpy(), key)
        for key, array in sent.items():
            a = array.numpy()
            assert a.shape == tuple(expected[key].shape)
            assert not (a.ndim >= 3 and a.shape[-2:] == (image_size, image_size)), (
                key
            )  # no image
            assert not any(
                w in key for w in ("critic", "teacher", "opt", "grad", "exp_avg")
            )
        assert np.isfinite(sum(float(np.abs(a.numpy()).sum()) for a in sent.values()))
    summary = layout.root / "coordinator" / "store" / "sim" / "summary.json"
    assert summary.is_file()
