"""MedSynth condensation at one site: phase I → teacher → phase II → signed package.

Runs as one process or under ``torchrun`` (the caller initialises
:mod:`.distributed`). A checkpoint is written every ``training.checkpoint_every``
steps and on SIGTERM; ``resume=True`` continues from it and ends exactly where
an uninterrupted run with the same seed ends.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from safetensors.torch import save_file

from ..config import Config, epoch_steps
from ..data.imageset import ImageSet
from ..models.registry import (
    build_critic,
    build_generator,
    critic_kwargs,
    generator_kwargs,
    save_critic,
)
from ..package import (
    FORMAT_VERSION,
    TrainingSummary,
    create_package,
    write_package,
)
from ..runinfo import write_provenance
from .batches import BatchSampler
from .checkpoint import StopFlag, load_checkpoint, save_checkpoint
from .classifier import ClassifierTrainer
from .distributed import DistInfo, barrier, unwrap, wrap_ddp
from .labels import LabelDistiller
from .loop import LoopContext, run_stage
from .phase1_wgan import GanModels, make_ema, phase1_step, standing_batch_norm_stats
from .phase2_logit_matching import LogitMatchingTask, phase2_step
from .precision import resolve_precision
from .reporting import Reporter

log = logging.getLogger(__name__)

STAGES = ("phase1", "teacher", "phase2", "labels")
PACKAGE_NAME = "generator.msfl"
PHASE1_PACKAGE_NAME = "generator_phase1.msfl"
SNAPSHOT_DIR = "phase1_snapshots"  # under site_local/: training.snapshot_every


@dataclass
class CondenseResult:
    """Where the outputs of a condensation run are."""

    out_dir: Path
    package: Path
    phase1_package: Path
    seconds: dict[str, float] = field(default_factory=dict)


def present_class_counts(train: ImageSet) -> dict[str, int]:
    """Training images per class, for the classes with at least one."""
    counts = train.class_counts()
    return {c: int(n) for c, n in zip(train.class_names, counts, strict=True) if n > 0}


def present_classes(train: ImageSet) -> list[str]:
    """Classes with at least one training image (the generator's classes_present)."""
    return list(present_class_counts(train))


class Condenser:
    """Owns the models and optimisers of one site's condensation run."""

    def __init__(
        self,
        cfg: Config,
        train: ImageSet,
        out_dir: Path,
        key: Ed25519PrivateKey,
        info: DistInfo | None = None,
        stop: StopFlag | None = None,
    ):
        self.cfg, self.train, self.out_dir, self.key = cfg, train, out_dir, key
        self.info = info or DistInfo()
        self.stop = stop or StopFlag()
        self.classes_present = present_classes(train)
        if len(self.classes_present) < 1:
            raise ValueError("no training images: nothing to condense")
        k, size, dev = len(train.class_names), train.image_size, self.info.device
        torch.manual_seed(
            cfg.training.seed
        )  # identical initialisation on every rank and run
        self.arch_kwargs = generator_kwargs(cfg.generator, size, k)
        generator = build_generator(cfg.generator.arch, self.arch_kwargs).to(dev)
        critic = build_critic(cfg.critic, size, k).to(dev)
        p1 = cfg.phase1
        # The label head is trained only by its own stage, from the teacher.
        gan_params = [
            p for n, p in generator.named_parameters() if not n.startswith("label_")
        ]
        self.gan = GanModels(
            wrap_ddp(generator, self.info),
            wrap_ddp(critic, self.info),
            torch.optim.Adam(gan_params, lr=p1.lr, betas=(p1.beta1, p1.beta2)),
            torch.optim.Adam(
                critic.parameters(),
                lr=p1.lr_critic or p1.lr,
                betas=(p1.beta1, p1.beta2),
            ),
            ema=make_ema(generator, cfg.generator.ema_decay),
            precision=resolve_precision(cfg.training.precision, dev),
        )
        self.opt_g2 = torch.optim.Adam(
            gan_params, lr=cfg.phase2.lr, betas=(cfg.phase2.beta1, cfg.phase2.beta2)
        )
        self.teacher = ClassifierTrainer(cfg.teacher, k, self.info, len(train), size)
        world = self.info.world_size
        self.steps = {
            "phase1": epoch_steps(
                cfg.phase1.epochs, len(train), cfg.phase1.batch_size, world
            ),
            "teacher": self.teacher.steps,
            "phase2": epoch_steps(
                cfg.phase2.epochs, len(train), cfg.phase2.batch_size, world
            ),
            "labels": cfg.labels.steps if cfg.generator.label_head else 0,
        }
        self.labels = LabelDistiller(
            self.shipped_generator,
            [train.class_names.index(c) for c in self.classes_present],
            cfg.labels,
        )
        self.x, self.y = train.to_tensors()
        # Exposure per lesion, not per image (docs/decisions.md); without lesion
        # ids every image is its own lesion.
        self.lesion_groups = (
            train.meta.get("lesion_id") if cfg.training.lesion_weighting else None
        )
        self.seconds = {s: 0.0 for s in STAGES}
        self.completed: list[str] = []
        self._running: tuple[str, float] | None = None  # (stage, start time)
        self.ckpt_path = out_dir / "checkpoints" / "last.pt"

    @property
    def shipped_generator(self) -> torch.nn.Module:
        """The generator that is sampled and shipped: its EMA copy when kept."""
        if self.gan.ema is not None:
            return self.gan.ema.module
        return unwrap(self.gan.generator)

    # -- checkpoints ---------------------------------------------------------
    def state_dict(self, stage: str, step: int) -> dict:
        """Everything needed to continue at ``step`` of ``stage``."""
        return {
            "stage": stage,
            "step": step,
            "completed": list(self.completed),
            "seconds": self._seconds_so_far(),
            "generator": unwrap(self.gan.generator).state_dict(),
            "critic": unwrap(self.gan.critic).state_dict(),
            "opt_g": self.gan.opt_g.state_dict(),
            "opt_d": self.gan.opt_d.state_dict(),
            "opt_g2": self.opt_g2.state_dict(),
            "teacher": self.teacher.state_dict(),
            "ema": None if self.gan.ema is None else self.gan.ema.state_dict(),
            "labels": self.labels.state_dict(),
            "config_digest": self.cfg.site_digest(),
            "format_version": FORMAT_VERSION,
        }

    def _seconds_so_far(self) -> dict[str, float]:
        seconds = dict(self.seconds)
        if self._running is not None:
            name, t0 = self._running
            seconds[name] += time.monotonic() - t0
        return seconds

    def load_state_dict(self, state: dict) -> tuple[str, int]:
        """Restore a checkpoint; return the (stage, step) to continue from."""
        if state["config_digest"] != self.cfg.site_digest():
            raise ValueError(
                "checkpoint was written with a different config; refusing to resume"
            )
        found = state.get("format_version", 1)  # format 1 did not record it
        if found != FORMAT_VERSION:
            raise ValueError(
                f"checkpoint holds a generator of package format {found}; this "
                f"release builds format {FORMAT_VERSION}: condense again into a "
                "new folder"
            )
        unwrap(self.gan.generator).load_state_dict(state["generator"])
        unwrap(self.gan.critic).load_state_dict(state["critic"])
        self.gan.opt_g.load_state_dict(state["opt_g"])
        self.gan.opt_d.load_state_dict(state["opt_d"])
        self.opt_g2.load_state_dict(state["opt_g2"])
        self.teacher.load_state_dict(state["teacher"])
        if self.gan.ema is not None:
            self.gan.ema.load_state_dict(state["ema"])
        self.labels.load_state_dict(state["labels"])
        self.seconds.update(state["seconds"])
        self.completed = list(state["completed"])
        return state["stage"], int(state["step"])

    def _save(self, stage: str, step: int) -> None:
        if self.info.is_primary:
            save_checkpoint(self.ckpt_path, self.state_dict(stage, step))
            every = self.cfg.training.snapshot_every
            if stage == "phase1" and every and step % every == 0:
                self._write_snapshot(step)
        barrier(self.info)

    def _write_snapshot(self, step: int) -> None:
        # Site-local, like the teacher: a learning curve of phase I for benches.
        folder = self.out_dir / "site_local" / SNAPSHOT_DIR
        folder.mkdir(parents=True, exist_ok=True)
        # On a copy: the EMA's own buffers keep averaging, as they would unsnapshotted.
        generator = copy.deepcopy(self.shipped_generator)
        self._standing_stats(generator)
        state = {
            k: v.detach().contiguous().cpu() for k, v in generator.state_dict().items()
        }
        save_file(state, folder / f"step_{step:06d}.safetensors")

    def _standing_stats(self, generator: torch.nn.Module) -> None:
        present = [self.train.class_names.index(c) for c in self.classes_present]
        standing_batch_norm_stats(generator, present, self.cfg.training.seed)

    # -- stages --------------------------------------------------------------
    def _phase1(self, ctx: LoopContext, start: int) -> None:
        p1 = self.cfg.phase1
        sampler = BatchSampler(
            self.x,
            self.y,
            len(self.train.class_names),
            p1.class_sampling,
            self.lesion_groups,
        )
        run_stage(
            ctx,
            "phase1",
            self.steps["phase1"],
            start,
            lambda i, r, g: phase1_step(
                self.gan,
                sampler,
                r,
                g,
                p1.batch_size,
                p1.n_critic,
                p1.lambda_gp,
                p1.augment,
                p1.loss,
                p1.diffaugment,
            ),
        )

    def _teacher(self, ctx: LoopContext, start: int) -> None:
        self.teacher.fit(
            self.train, ctx, stage="teacher", start=start, groups=self.lesion_groups
        )

    def _phase2(self, ctx: LoopContext, start: int) -> None:
        p2 = self.cfg.phase2
        task = LogitMatchingTask(
            self.gan.generator,
            self.teacher.model,
            self.gan.critic,
            p2.lambda_g,
            self.cfg.phase1.loss,
        )
        task.prepare_distributed(self.info)
        gan = GanModels(
            task.generator,
            self.gan.critic,
            self.opt_g2,
            self.gan.opt_d,
            ema=self.gan.ema,
            precision=self.gan.precision,
        )
        sampler = BatchSampler(
            self.x,
            self.y,
            len(self.train.class_names),
            p2.class_sampling,
            self.lesion_groups,
        )
        run_stage(
            ctx,
            "phase2",
            self.steps["phase2"],
            start,
            lambda i, r, g: phase2_step(
                task,
                gan,
                sampler,
                r,
                g,
                p2.batch_size,
                p2.critic_steps,
                self.cfg.phase1.lambda_gp,
                p2.augment,
            ),
        )

    def _labels(self, ctx: LoopContext, start: int) -> None:
        teacher = self.teacher.model.eval()
        run_stage(
            ctx,
            "labels",
            self.steps["labels"],
            start,
            lambda i, r, g: self.labels.step(teacher, r, g),
        )

    # -- outputs -------------------------------------------------------------
    def _write_package(self, stage: str, name: str) -> Path:
        cfg = self.cfg
        summary = TrainingSummary(
            stage=stage,
            phase1_steps=self.steps["phase1"],
            phase2_steps=self.steps["phase2"] if stage == "phase2" else 0,
            teacher_steps=self.steps["teacher"] if stage == "phase2" else 0,
            n_images=len(self.train),
            class_counts=present_class_counts(self.train),
            seconds={k: round(v, 2) for k, v in self.seconds.items()},
            config_digest=cfg.site_digest(),
        )
        pkg = create_package(
            self.shipped_generator,
            cfg.generator.arch,
            self.arch_kwargs,
            site_id=cfg.package.site_id,
            class_names=list(self.train.class_names),
            classes_present=self.classes_present,
            training=summary,
            key=self.key,
        )
        return write_package(pkg, self.out_dir / name)

    def _write_site_local_models(self) -> None:
        # Kept at the site for its own audits (white-box LOGAN); never shipped.
        local = self.out_dir / "site_local"
        local.mkdir(parents=True, exist_ok=True)
        critic = unwrap(self.gan.critic)
        kwargs = critic_kwargs(
            self.cfg.critic, self.train.image_size, len(self.train.class_names)
        )
        save_critic(critic, kwargs, local / "critic.safetensors")
        teacher = {
            k: v.contiguous() for k, v in self.teacher.model.state_dict().items()
        }
        save_file(teacher, local / "teacher.safetensors")

    def run(self, resume: bool = False) -> CondenseResult:
        """Run (or continue) every stage and write the packages."""
        stage, step = STAGES[0], 0
        if resume and self.ckpt_path.is_file():
            stage, step = self.load_state_dict(load_checkpoint(self.ckpt_path))
            log.info("resuming at %s step %d", stage, step)
        elif self.info.is_primary:
            write_provenance(self.out_dir, self.cfg, self.info.world_size, self.train)
        reporter = Reporter(
            self.out_dir / "metrics.jsonl",
            self.cfg.training.log_every,
            self.info.is_primary,
        )
        ctx = LoopContext(
            self.info,
            self.cfg.training.seed,
            reporter,
            self.stop,
            self.cfg.training.checkpoint_every,
            self._save,
        )
        runners = {
            "phase1": self._phase1,
            "teacher": self._teacher,
            "phase2": self._phase2,
            "labels": self._labels,
        }
        for name in STAGES:
            if name in self.completed:
                continue
            start = step if name == stage else 0
            self._running = (name, time.monotonic())
            try:
                runners[name](ctx, start)
            finally:
                self.seconds = self._seconds_so_far()
                self._running = None
            if name in ("phase1", "phase2"):
                # Before anything samples it (package, label head, phase II);
                # the checkpoint below stores the result, so resume repeats it.
                self._standing_stats(self.shipped_generator)
            self.completed.append(name)
            if name == "phase1" and self.info.is_primary:
                self._write_package("phase1", PHASE1_PACKAGE_NAME)
            self._save(STAGES[min(STAGES.index(name) + 1, len(STAGES) - 1)], 0)
        if self.info.is_primary:
            self._write_package("phase2", PACKAGE_NAME)
            self._write_site_local_models()
        barrier(self.info)
        return CondenseResult(
            self.out_dir,
            self.out_dir / PACKAGE_NAME,
            self.out_dir / PHASE1_PACKAGE_NAME,
            dict(self.seconds),
        )
