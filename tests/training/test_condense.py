"""End-to-end condensation at tiny scale: outputs, resume equivalence, SIGTERM, DDP."""

import os
import signal
import subprocess
import sys

import pytest

from medsynth_fl.evaluation import evaluate_classifier
from medsynth_fl.package import FORMAT_VERSION, KeyRing, read_package, weights_sha256
from medsynth_fl.sampling import sample_condensed_set
from medsynth_fl.training.checkpoint import (
    StopFlag,
    StopRequested,
    load_checkpoint,
    save_checkpoint,
)
from medsynth_fl.training.classifier import train_classifier
from medsynth_fl.training.condense import Condenser

from ..conftest import REPO


class StopAtStep(StopFlag):
    """Requests a stop once the loop has asked ``n`` times (i.e. after n steps)."""

    def __init__(self, n):
        super().__init__()
        self.left = n

    @property
    def requested(self):
        self.left -= 1
        return self.left < 0

    @requested.setter
    def requested(self, value):
        pass


def test_tiny_condense_sample_evaluate(tmp_path, tiny_cfg, tiny_data, site_key):
    key, pub = site_key
    train, test = tiny_data
    result = Condenser(tiny_cfg, train, tmp_path / "run", key).run()
    pkg = read_package(result.package, KeyRing.single(key.public_key()))
    assert pkg.manifest.training.stage == "phase2"
    assert read_package(result.phase1_package).manifest.training.stage == "phase1"
    for name in (
        "config.yaml",
        "provenance.json",
        "metrics.jsonl",
        "site_local/critic.safetensors",
    ):
        assert (tmp_path / "run" / name).is_file(), name
    condensed = sample_condensed_set(
        pkg.build_generator(),
        pkg.manifest.class_names,
        pkg.manifest.classes_present,
        ipc=4,
    )
    assert len(condensed) == 4 * len(pkg.manifest.classes_present)
    metrics = evaluate_classifier(
        train_classifier(condensed, tiny_cfg.classifier), test
    )
    assert 0.0 <= metrics.auc <= 1.0 and metrics.n == len(test)


@pytest.mark.parametrize("stop_after", [3, 5, 9])  # inside phase1, teacher, phase2
def test_resume_ends_where_an_uninterrupted_run_ends(
    tmp_path, tiny_cfg, tiny_data, site_key, stop_after
):
    key, _ = site_key
    train, _ = tiny_data
    reference = Condenser(tiny_cfg, train, tmp_path / "ref", key).run()
    with pytest.raises(StopRequested):
        Condenser(
            tiny_cfg, train, tmp_path / "cut", key, stop=StopAtStep(stop_after)
        ).run()
    assert (tmp_path / "cut" / "checkpoints" / "last.pt").is_file()
    resumed = Condenser(tiny_cfg, train, tmp_path / "cut", key).run(resume=True)
    ref = read_package(reference.package).tensors
    res = read_package(resumed.package).tensors
    assert weights_sha256(ref) == weights_sha256(res)


def _interrupt_after_two_steps(cfg, train, out, key):
    """Leave a checkpoint in ``out`` by stopping a run after two steps."""
    with pytest.raises(StopRequested):
        Condenser(cfg, train, out, key, stop=StopAtStep(2)).run()


def test_resume_refuses_a_checkpoint_of_another_config(
    tmp_path, tiny_cfg, tiny_data, site_key
):
    key, _ = site_key
    train, _ = tiny_data
    _interrupt_after_two_steps(tiny_cfg, train, tmp_path / "cut", key)
    other = tiny_cfg.model_copy(
        update={"phase1": tiny_cfg.phase1.model_copy(update={"epochs": 0.5})}
    )
    with pytest.raises(ValueError, match="different config"):
        Condenser(other, train, tmp_path / "cut", key).run(resume=True)


def test_resume_refuses_a_checkpoint_of_another_package_format(
    tmp_path, tiny_cfg, tiny_data, site_key
):
    key, _ = site_key
    train, _ = tiny_data
    _interrupt_after_two_steps(tiny_cfg, train, tmp_path / "cut", key)
    ckpt = tmp_path / "cut" / "checkpoints" / "last.pt"
    state = load_checkpoint(ckpt)
    state["format_version"] = FORMAT_VERSION - 1
    save_checkpoint(ckpt, state)
    with pytest.raises(ValueError, match="package format"):
        Condenser(tiny_cfg, train, tmp_path / "cut", key).run(resume=True)


def _cli(*args):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    return [sys.executable, "-m", "medsynth_fl.cli", *args], env


@pytest.mark.slow
def test_sigterm_checkpoints_and_resume_matches(tmp_path):
    common = [
        "condense",
        "--config",
        "tiny",
        "--set",
        "phase1.epochs=0.13",
        "--set",
        f"data.cache_dir={tmp_path}/cache",
    ]
    cmd, env = _cli(*common, "--out", str(tmp_path / "ref"))
    subprocess.run(cmd, env=env, check=True, capture_output=True, cwd=REPO)
    cmd, env = _cli(*common, "--out", str(tmp_path / "cut"))
    proc = subprocess.Popen(
        cmd,
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    for line in proc.stdout:  # stop as soon as phase I has started
        if "phase1: steps" in line:
            proc.send_signal(signal.SIGTERM)
            break
    rest, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, rest
    assert "continue with --resume" in rest
    cmd, env = _cli(
        *common,
        "--out",
        str(tmp_path / "cut"),
        "--resume",
        "--key",
        str(tmp_path / "cut" / "site_key.pem"),
    )
    subprocess.run(cmd, env=env, check=True, capture_output=True, cwd=REPO)
    ref = read_package(tmp_path / "ref" / "generator.msfl").tensors
    res = read_package(tmp_path / "cut" / "generator.msfl").tensors
    assert weights_sha256(ref) == weights_sha256(res)


@pytest.mark.ddp
@pytest.mark.slow
def test_two_process_gloo_ddp_runs_to_a_clean_exit(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "medsynth_fl.cli",
        "condense",
        "--config",
        "tiny",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "ddp"),
        "--set",
        f"data.cache_dir={tmp_path}/cache",
    ]
    proc = subprocess.run(
        cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    pkg = read_package(tmp_path / "ddp" / "generator.msfl")
    assert pkg.manifest.training.stage == "phase2"
    assert 'world_size": 2' in (tmp_path / "ddp" / "provenance.json").read_text()


CGAN = [
    "generator.arch=cbn_resnet",
    "generator.ngf=4",
    "generator.z_dim=8",
    "generator.label_head=true",
    "generator.ema_decay=0.5",
    "critic.arch=projection_resnet",
    "critic.ndf=4",
    "phase1.loss=hinge",
    "phase1.lambda_gp=0",
    "phase1.diffaugment=true",
    "phase2.epochs=0",
    "teacher.arch=convnet",
    "teacher.convnet.width=8",
    "teacher.convnet.depth=2",
    "labels.steps=3",
    "labels.batch_size=8",
    "training.precision=bf16",
]


def test_cgan_with_label_head_ships_ema_and_resumes_inside_labels(
    tmp_path, tiny_data, site_key
):
    from medsynth_fl.config import load_config

    cfg = load_config("tiny", [f"data.cache_dir={tmp_path / 'cache'}", *CGAN])
    key, _ = site_key
    train, _ = tiny_data
    reference = Condenser(cfg, train, tmp_path / "ref", key).run()
    shipped = read_package(reference.package)
    phase1 = read_package(reference.phase1_package).tensors
    assert shipped.manifest.architecture.name == "cbn_resnet"
    head = [k for k in shipped.tensors if k.startswith("label_")]
    image = [k for k in shipped.tensors if not k.startswith("label_")]
    assert head and image
    # Stage "labels" trains the head only; the images are phase I's EMA weights.
    assert all((shipped.tensors[k] == phase1[k]).all() for k in image)
    assert any((shipped.tensors[k] != phase1[k]).any() for k in head)
    parts = (
        shipped.build_generator()
        .eval()
        .forward_parts(
            shipped.build_generator().sample_noise(3),
            __import__("torch").tensor([0, 1, 2]),
        )
    )
    assert parts["label_logits"].shape == (3, len(shipped.manifest.class_names))
    # phase I 4 steps + teacher 4 → step 9 is inside the labels stage
    with pytest.raises(StopRequested):
        Condenser(cfg, train, tmp_path / "cut", key, stop=StopAtStep(9)).run()
    resumed = Condenser(cfg, train, tmp_path / "cut", key).run(resume=True)
    assert weights_sha256(shipped.tensors) == weights_sha256(
        read_package(resumed.package).tensors
    )


def test_phase1_snapshots_stay_site_local_and_end_at_the_phase1_package(
    tmp_path, tiny_data, site_key
):
    from safetensors.torch import load_file

    from medsynth_fl.config import load_config
    from medsynth_fl.training.condense import SNAPSHOT_DIR

    cfg = load_config(
        "tiny",
        [
            f"data.cache_dir={tmp_path / 'cache'}",
            *CGAN,
            "training.checkpoint_every=2",
            "training.snapshot_every=2",
        ],
    )
    key, _ = site_key
    train, _ = tiny_data
    result = Condenser(cfg, train, tmp_path / "run", key).run()
    folder = tmp_path / "run" / "site_local" / SNAPSHOT_DIR
    # phase I has 4 steps in the tiny preset: a snapshot after steps 2 and 4
    assert sorted(p.name for p in folder.iterdir()) == [
        "step_000002.safetensors",
        "step_000004.safetensors",
    ]
    first = load_file(folder / "step_000002.safetensors")
    last = load_file(folder / "step_000004.safetensors")
    phase1 = read_package(result.phase1_package).tensors
    assert set(last) == set(phase1)
    assert all((last[k] == phase1[k]).all() for k in phase1)
    assert any((first[k] != last[k]).any() for k in last)
