"""Typed configuration: one model per section, defaults in one place.

Presets are overrides. The defaults below are seed 000's settings (the ``paper``
preset only adds the pretrained checkpoint and the image size); ``configs/*.yaml``
override only what differs. Every section rejects unknown keys and wrong types
with an error that names the dotted key, so a typo in a hospital's YAML never
silently falls back to a default.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

log = logging.getLogger(__name__)

CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"
ISIC_CLASSES = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC"]


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class DataConfig(_Section):
    """Where the images come from and how they are split."""

    source: Literal["embedded", "shards", "isic_raw", "npz"] = "embedded"
    path: str | None = None  # shards folder, ISIC root or .npz; None for embedded
    image_size: int = Field(64, ge=16, le=512)
    classes: list[str] = Field(default_factory=lambda: list(ISIC_CLASSES))
    centers: list[str] | None = None  # keep only these centres (None: all)
    split: Literal["flamby", "lesion"] = "flamby"  # FLamby fold, or our own
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)  # used by split=lesion
    split_seed: int = 0
    on_corrupt: Literal["skip", "error"] = "skip"
    empty_class: Literal["error", "skip"] = "error"
    cache_dir: str = ".cache/medsynth/images"


class GeneratorConfig(_Section):
    """The site's generator: seed 000's attention generator or the cGAN."""

    # attention: seed 000 §3.1; cbn_resnet: conditional-BN ResNet (models/cgan.py)
    arch: Literal["attention", "cbn_resnet"] = "attention"
    ngf: int = Field(64, ge=4)  # channels of the first encoder stage
    n_res_blocks: int = Field(6, ge=1)  # residual attention blocks in the transition
    use_mask: bool = True  # eq. (1) blend; False: s = g (ablation)
    canvas_downsample: int = Field(4, ge=1)  # noise canvas is image_size / this
    embed_dim: int = Field(16, ge=1)  # class-embedding channels fed to the encoder
    spectral_norm: bool = True
    z_dim: int = Field(128, ge=1)  # cbn_resnet: size of the noise vector
    attention: bool = True  # cbn_resnet: one self-attention layer at 16 px
    label_head: bool = False  # cbn_resnet: distilled soft-label head (stage "labels")
    ema_decay: float = Field(0.0, ge=0.0, lt=1.0)  # EMA of the weights, shipped; 0: off


class CriticConfig(_Section):
    """Discriminator F_a: seed 000's 9 conv + 2 FC layers, or the projection ResNet."""

    arch: Literal["paper9", "projection_resnet"] = "paper9"
    ndf: int = Field(64, ge=4)
    fc_hidden: int = Field(256, ge=8)
    spectral_norm: bool = False  # WGAN-GP already constrains the critic


GanLoss = Literal["wgan-gp", "lsgan", "hinge"]


class Phase1Config(_Section):
    """WGAN-GP pre-training, eqs. (2)-(3)."""

    epochs: float = Field(150.0, ge=0)  # passes over the site's images (paper: 150)
    batch_size: int = Field(32, ge=2)
    lr: float = Field(1.0e-4, gt=0)
    beta1: float = Field(0.9, ge=0, lt=1)  # "momentum 0.9" (seed 000 §4.2)
    beta2: float = Field(0.999, ge=0, lt=1)
    n_critic: int = Field(5, ge=1)
    lr_critic: float | None = Field(None, gt=0)  # TTUR: the critic's own lr (None: lr)
    lambda_gp: float = Field(10.0, ge=0)
    # lsgan: the unregularised objective that memorises (positive control only)
    loss: GanLoss = "wgan-gp"
    class_sampling: Literal["natural", "sqrt", "balanced"] = "sqrt"
    augment: bool = (
        True  # flips/90° rotations of real batches (False: positive control)
    )
    diffaugment: bool = False  # random differentiable transforms before the critic


class Phase2Config(_Section):
    """Phase II: seed 000's logit matching, or class-wise distribution matching."""

    # logit_matching: eqs. (4)-(5) against the ViT teacher; distribution_matching:
    # class-wise feature moments against a pool of online-trained ConvNets (DM/DiM)
    objective: Literal["logit_matching", "distribution_matching"] = "logit_matching"
    epochs: float = Field(30.0, ge=0)  # 0 skips phase II
    batch_size: int = Field(32, ge=2)
    lr: float = Field(1.0e-4, gt=0)
    # phase II's own Adam betas (it used to reuse phase I's without saying so)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)
    lambda_g: float = Field(0.01, ge=0)  # weight of the adversarial term L_g
    critic_steps: int = Field(1, ge=0)  # critic updates per step (0: frozen)
    class_sampling: Literal["natural", "sqrt", "balanced"] = "balanced"
    # One random differentiable transform per real/synthetic pair before the
    # teacher (DSA), so that the match survives flips, shifts, zoom and colour.
    # (distribution matching: one independent transform per image of each batch)
    augment: bool = True
    # distribution_matching only:
    pool_size: int = Field(4, ge=1)  # ConvNets in the teacher pool
    pool_width: int = Field(64, ge=1)  # channels of each pool ConvNet
    pool_depth: int = Field(3, ge=1)  # conv blocks (image_size divisible by 2**depth)
    pool_lr: float = Field(0.01, gt=0)  # SGD (momentum 0.9) lr of the pool members
    # pool steps between re-initialisations of one member, in turn (0: never)
    pool_reinit_every: int = Field(100, ge=0)
    lambda_logits: float = Field(1.0, ge=0)  # weight of the log-softmax moment loss
    lambda_embed: float = Field(1.0, ge=0)  # weight of the embedding moment loss
    second_moment: float = Field(1.0, ge=0)  # weight of E[f²] beside the mean (0: DM)


class ViTConfig(_Section):
    """A timm ViT, adapted with LoRA (peft) or fully trained."""

    model: str = "vit_base_patch16_224"
    img_size: int | None = None  # None: the model's own; inputs are resized to it
    patch_size: int | None = None  # None: the model's own
    embed_dim: int | None = None  # None: the model's own (set for small CPU ViTs)
    depth: int | None = None
    num_heads: int | None = None
    pretrained: str | None = None  # local checkpoint path, "hub", or None
    adaptation: Literal["lora", "full"] = "lora"
    lora_rank: int = Field(8, ge=1)
    lora_alpha: float = Field(16.0, gt=0)
    lora_dropout: float = Field(0.0, ge=0, lt=1)


class ConvNetConfig(_Section):
    """The small ConvNet of dataset-distillation work (``models/convnet.py``)."""

    width: int = Field(128, ge=4)  # channels of every convolution
    depth: int = Field(3, ge=1)  # conv blocks; image_size must divide by 2**depth


class ClassifierTrainConfig(_Section):
    """Training of a classifier (the site's teacher or the downstream model)."""

    arch: Literal["vit", "convnet", "resnet18"] = "vit"  # models/classifiers.py
    vit: ViTConfig = Field(default_factory=ViTConfig)  # arch=vit
    convnet: ConvNetConfig = Field(default_factory=ConvNetConfig)  # arch=convnet
    steps: int = Field(3000, ge=1)  # optimiser steps, unless epochs is set
    epochs: float | None = Field(
        None, gt=0
    )  # when set: steps = epochs × images / batch
    batch_size: int = Field(32, ge=2)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.01, gt=0)  # seed 000 §4.2
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(0, ge=0)
    class_sampling: Literal["natural", "sqrt", "balanced"] = "sqrt"
    # none | dihedral (flips and 90° rotations: dermoscopy has no orientation) |
    # strong (dihedral + resized crop, small rotation, mild colour jitter)
    augment: Literal["none", "dihedral", "strong"] = "dihedral"
    mix: Literal["none", "mixup", "cutmix", "both"] = "none"  # on the targets too
    mix_alpha: float = Field(1.0, gt=0)  # Beta(alpha, alpha) of the mixing weight
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    # soft: train on a batch's soft targets (ImageSet.soft_labels, a generator's
    # label head) where it has them; hard: on the integer labels
    label_mode: Literal["hard", "soft"] = "hard"

    @field_validator("augment", mode="before")
    @classmethod
    def _augment_from_bool(cls, value: Any) -> Any:
        # YAML written before the modes existed says true / false.
        if isinstance(value, bool):
            return "dihedral" if value else "none"
        return value


class SamplingConfig(_Section):
    """Drawing the coordinator's condensed sets (their size: ``federation.ipc``)."""

    seed: int = 0


class PackageConfig(_Section):
    """Generator package limits and identity."""

    site_id: str = "site"
    max_bytes: int = Field(512 * 1024 * 1024, ge=1024)


class TrainingConfig(_Section):
    """Cross-phase run settings: seed, checkpoints, logging, exposure per lesion."""

    seed: int = 0
    checkpoint_every: int = Field(200, ge=1)  # steps
    # Site-local copies of the shipped (EMA) generator during phase I, every
    # this many steps (0: none), for learning curves; never shipped.
    snapshot_every: int = Field(0, ge=0)
    log_every: int = Field(50, ge=1)
    # condensation draws every lesion as often as one image (phase I, teacher, II)
    lesion_weighting: bool = True
    # bf16: autocast of the GAN's forwards; auto: bf16 only where the hardware
    # computes it natively (training/precision.py: emulated bf16 is ~10x slower)
    precision: Literal["auto", "fp32", "bf16"] = "fp32"


class LabelsConfig(_Section):
    """Distilling the site teacher's soft labels into the generator's label head."""

    steps: int = Field(300, ge=0)  # 0 skips the stage (only with a label head)
    batch_size: int = Field(64, ge=2)
    lr: float = Field(1.0e-3, gt=0)  # Adam
    temperature: float = Field(1.0, gt=0)  # softens the teacher's logits


class AuditConfig(_Section):
    """Membership-inference audits and the site's release gate."""

    max_auc: float = Field(0.60, gt=0.5, le=1.0)  # gate: refuse above this
    # gate: refuse a TPR at 1 % FPR whose 95 % interval lies above this (None: off)
    max_tpr_at_1pct_fpr: float | None = Field(None, gt=0.0, lt=1.0)
    n_generated: int = Field(2000, ge=10)  # samples for distance attacks
    shadow_steps: int = Field(1000, ge=0)
    encoder_steps: int = Field(1000, ge=0)
    max_candidates: int = Field(1000, ge=10)  # per side (members / non-members)
    batch_size: int = Field(32, ge=2)  # shadow-GAN and recovery-encoder batches
    shadow_width: int = Field(32, ge=4)  # ngf and ndf of the black-box shadow GAN
    shadow_n_critic: int = Field(5, ge=1)  # critic updates per shadow-GAN step
    # hinge + spectral norm: no gradient penalty, half the cost (decisions.md)
    shadow_loss: Literal["hinge", "wgan-gp"] = "hinge"
    shadow_lr: float = Field(1.0e-4, gt=0)  # Adam, as in phase I
    encoder_lr: float = Field(1.0e-3, gt=0)  # Adam, recovery encoders
    # shadow GAN and encoders: auto = bf16 autocast where the CPU/GPU has bf16 units
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    density_k: int = Field(5, ge=1)  # k of the k-NN density (distribution attack)
    n_bootstrap: int = Field(1000, ge=0)  # resamples of each attack's 95 % intervals
    n_permutations: int = Field(1000, ge=1)  # label permutations of the chance level


class FederationConfig(_Section):
    """How simulated sites are carved from the data and what the coordinator asks."""

    sites: list[str] | None = (
        None  # sites the coordinator expects (None: all registered)
    )
    partition: Literal["natural", "dirichlet", "iid"] = "natural"
    num_sites: int = Field(4, ge=1)  # dirichlet / iid only
    alpha: float = Field(0.5, gt=0)  # Dirichlet concentration
    min_sites: int = Field(2, ge=1)
    timeout_s: float = Field(3600.0, gt=0)
    ipc: int = Field(50, ge=1)
    baseline_rounds: int = Field(10, ge=1)  # FedAvg baseline: rounds
    baseline_local_steps: int = Field(
        50, ge=1
    )  # FedAvg baseline: local steps per round
    # fixed: train the shared model on the union of the sampled IPC sets;
    # stream: on fresh samples of the accepted generators at every step
    downstream: Literal["fixed", "stream"] = "fixed"
    # stream only: how often each site of a class is drawn. images: in
    # proportion to its training images of the class (as pooled data would);
    # uniform: every holder alike (a site with 3 images of a class made half)
    site_weighting: Literal["images", "uniform"] = "images"


class ContributionsConfig(_Section):
    """What each site contributed (coordinator/contributions.py), after the round."""

    enabled: bool = True
    n_bootstrap: int = Field(200, ge=0)  # evaluation-set resamples for intervals
    permutations: int = Field(200, ge=2)  # Monte-Carlo Shapley beyond 8 sites
    truncation_tol: float = Field(0.0, ge=0)  # TMC-Shapley; 0: untruncated
    probe_max_iter: int = Field(300, ge=10)  # the value function's probe fit


def epoch_steps(
    epochs: float, n_images: int, batch_size: int, world_size: int = 1
) -> int:
    """Optimiser steps for ``epochs`` passes over ``n_images`` (0 epochs: 0 steps)."""
    if epochs <= 0 or n_images <= 0:
        return 0
    return max(1, math.ceil(epochs * n_images / (batch_size * world_size)))


# The sections that determine a site's generator (Config.site_digest). The
# release gate's thresholds live in ``audit``, which the coordinator shares; the
# site keys its cached gate decision on that section separately.
SITE_SECTIONS = (
    "data",
    "generator",
    "critic",
    "phase1",
    "phase2",
    "teacher",
    "labels",
    "package",
    "training",
)


class Config(_Section):
    """The whole resolved configuration."""

    data: DataConfig = Field(default_factory=DataConfig)
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    critic: CriticConfig = Field(default_factory=CriticConfig)
    phase1: Phase1Config = Field(default_factory=Phase1Config)
    phase2: Phase2Config = Field(default_factory=Phase2Config)
    teacher: ClassifierTrainConfig = Field(default_factory=ClassifierTrainConfig)
    classifier: ClassifierTrainConfig = Field(default_factory=ClassifierTrainConfig)
    labels: LabelsConfig = Field(default_factory=LabelsConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    package: PackageConfig = Field(default_factory=PackageConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    federation: FederationConfig = Field(default_factory=FederationConfig)
    contributions: ContributionsConfig = Field(default_factory=ContributionsConfig)

    def digest(self) -> str:
        """Return a short sha256 of the whole resolved config (run provenance)."""
        return self.section_digest(*type(self).model_fields)

    def section_digest(self, *sections: str) -> str:
        """A short sha256 over the named top-level sections only."""
        dumped = self.model_dump(mode="json")
        blob = json.dumps({k: dumped[k] for k in sections}, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def site_digest(self) -> str:
        """What determines a site's generator: its data, models, phases and seed.

        It names the site's work folder, checkpoints and package, so a change to
        the coordinator's settings alone (IPC, classifier, audit sizes,
        contributions) re-uses every site's package instead of re-condensing.
        """
        return self.section_digest(*SITE_SECTIONS)

    def coordinator_digest(self) -> str:
        """Everything :meth:`site_digest` leaves out: the coordinator's settings."""
        return self.section_digest(
            *(k for k in type(self).model_fields if k not in SITE_SECTIONS)
        )

    def to_yaml(self) -> str:
        """Render the resolved config as YAML (written into every run folder)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _deep_merge(base: dict[str, Any], over: dict[str, Any], where: str = "") -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value, f"{where}{key}.")
        else:
            out[key] = value
    return out


def _format_validation_error(err: ValidationError, origin: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown key")
        else:
            lines.append(f"{key}: {e['msg']} (got {e.get('input')!r})")
    return f"invalid configuration from {origin}:\n  " + "\n  ".join(lines)


def resolve_preset(name_or_path: str | Path) -> Path:
    """Map a preset name (``cpu``) or a YAML path to an existing file."""
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml"}:
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        return path
    candidate = CONFIGS_DIR / f"{name_or_path}.yaml"
    if not candidate.is_file():
        known = sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml"))
        raise ConfigError(f"unknown preset {name_or_path!r}; known presets: {known}")
    return candidate


def read_yaml(path: Path) -> dict[str, Any]:
    """Read one YAML mapping with ``yaml.safe_load``; errors name the file."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    return data


def parse_override(item: str) -> dict[str, Any]:
    """Turn ``phase1.epochs=10`` into ``{"phase1": {"epochs": 10}}``.

    The value is read as YAML.
    """
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.key=value")
    dotted, raw = item.split("=", 1)
    keys = dotted.strip().replace("-", "_").split(".")
    try:
        value: Any = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {item!r}: value is not valid YAML") from exc
    for key in reversed(keys):
        value = {key: value}
    return value


def load_config(
    preset: str | Path | None = None, overrides: list[str] | dict | None = None
) -> Config:
    """Build a validated :class:`Config` from defaults, a preset and overrides.

    Parameters
    ----------
    preset
        A preset name from ``configs/`` or a path to a YAML file; None for defaults.
    overrides
        Dotted ``key=value`` strings, or an already nested mapping.

    Returns
    -------
    Config
        The resolved, frozen configuration.
    """
    merged: dict[str, Any] = {}
    origin = "defaults"
    if preset is not None:
        path = resolve_preset(preset)
        merged = read_yaml(path)
        origin = str(path)
    if isinstance(overrides, dict):
        merged = _deep_merge(merged, overrides)
    else:
        for item in overrides or []:
            merged = _deep_merge(merged, parse_override(item))
        if overrides:
            log.info("config overrides: %s", ", ".join(overrides))
    try:
        return Config.model_validate(merged)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, origin)) from None


OVERRIDES_KEY = "overrides"  # the run-config key that carries setting overrides


def from_flower(run_config: dict[str, Any], extra: list[str] | None = None) -> Config:
    """Build the config inside a Flower app from its flat run config.

    Run config carries ``preset`` and ``overrides``: ``;``-separated dotted
    settings, values read as YAML (``"phase2.lambda-g=0.1; classifier.steps=200"``).
    ``flwr run --run-config`` accepts only the keys declared in pyproject.toml,
    so the settings travel in that one declared string rather than as keys of
    their own. Other run-config keys (paths, run ids) are the apps' own and are
    ignored here. Site facts arrive as ``extra`` overrides built from the node
    config. An empty run config gives the defaults, so an in-process
    ``run_simulation`` behaves like ``flwr run``.
    """
    dotted = sorted(key for key in run_config if "." in key)
    if dotted:  # flwr run would refuse them; say where they belong
        raise ConfigError(
            f"run config keys {dotted} are settings: pass them as "
            f'{OVERRIDES_KEY}="{dotted[0]}=...; ..." instead'
        )
    preset = run_config.get("preset")
    raw = str(run_config.get(OVERRIDES_KEY) or "")
    overrides = [item.strip() for item in raw.split(";") if item.strip()]
    return load_config(str(preset) if preset else None, overrides + list(extra or []))
