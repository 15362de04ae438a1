"""The attack models a coordinator builds from a generator alone, and their state.

:class:`AttackModels` bundles the shadow critic (black-box LOGAN), the two
recovery encoders, the feature network φ and the generated reference samples
with their embeddings. ``to_state`` flattens it into numpy arrays plus flat,
JSON-able metadata (scalars and lists only, so it maps one-to-one onto a
Flower ``ArrayRecord`` and ``ConfigRecord``); no pickle is involved. The
generator itself is not part of the state: the site already holds it, and
``from_state`` takes it back as an argument.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, get_args

import numpy as np
import torch
from torch import nn

from ..data.imageset import ImageSet
from ..models.critic import Critic
from ._utils import noise_shape
from .attacks.logan import ShadowLoss, shadow_critic_kwargs
from .attacks.recovery import LatentEncoder, encoder_kwargs
from .features import RandomConvFeatures

STATE_FORMAT = "medsynth-fl/attack-models"
STATE_VERSION = 2  # 2: shadow_loss (the hinge shadow critic is spectrally normalised)
MetaValue = int | float | str | bool | list[int] | list[str]


class AttackStateError(ValueError):
    """An attack-model state is malformed or does not fit the generator."""


@dataclass
class AttackModels:
    """Everything built from the shipped generator, without any patient image.

    Attributes
    ----------
    generator : the audited generator (not serialised).
    classes_present : the classes the generator was trained on.
    feature_net : the fixed random feature network φ.
    shadow_critic : critic of the shadow GAN trained on generated samples
        (None for the reference-only attacks a site runs before release).
    shadow_width : ``ndf`` of the shadow critic.
    shadow_loss : the shadow GAN's loss (``"hinge"``: SN critic; ``"wgan-gp"``).
    encoder_pixel : recovery encoder trained with φ = identity (or None).
    encoder_feature : recovery encoder trained with φ = ``feature_net`` (or None).
    generated : reference samples of the generator, with their labels.
    generated_embeddings : ``feature_net.embed`` of ``generated``, float32.
    density_k : k of the k-NN density (distribution attacks).
    seed : seed everything was built from.
    build_seconds : wall seconds of each part of the build (not serialised).
    """

    generator: nn.Module
    classes_present: tuple[str, ...]
    feature_net: RandomConvFeatures
    shadow_critic: Critic | None
    shadow_width: int
    encoder_pixel: LatentEncoder | None
    encoder_feature: LatentEncoder | None
    generated: ImageSet
    generated_embeddings: np.ndarray
    density_k: int
    seed: int
    shadow_loss: str = "hinge"
    build_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def class_names(self) -> tuple[str, ...]:
        """The generator's full label space."""
        return self.generated.class_names

    @property
    def has_models(self) -> bool:
        """True when the shadow critic and recovery encoders were built."""
        parts = (self.shadow_critic, self.encoder_pixel, self.encoder_feature)
        return all(p is not None for p in parts)

    def _modules(self) -> dict[str, nn.Module]:
        if not self.has_models:
            raise AttackStateError("reference-only attacks have no models to ship")
        return {
            "shadow_critic": self.shadow_critic,
            "encoder_pixel": self.encoder_pixel,
            "encoder_feature": self.encoder_feature,
            "feature_net": self.feature_net,
        }

    def to_state(self) -> tuple[dict[str, np.ndarray], dict[str, MetaValue]]:
        """Flatten into ``(arrays, meta)``: numpy arrays and flat JSON-able metadata.

        Returns
        -------
        tuple
            ``arrays`` maps ``"<part>.<param>"`` and ``"generated.*"`` to arrays;
            ``meta`` holds the format, label space, shapes and settings.
        """
        arrays = {
            f"{part}.{name}": t.detach().cpu().numpy().copy()
            for part, module in self._modules().items()
            for name, t in module.state_dict().items()
        }
        arrays["generated.images"] = self.generated.images
        arrays["generated.labels"] = self.generated.labels.astype(np.int64)
        arrays["generated.embeddings"] = self.generated_embeddings.astype(np.float32)
        meta: dict[str, MetaValue] = {
            "format": STATE_FORMAT,
            "format_version": STATE_VERSION,
            "class_names": list(self.class_names),
            "classes_present": list(self.classes_present),
            "image_size": self.generated.image_size,
            "noise_shape": [int(d) for d in noise_shape(self.generator)],
            "shadow_width": self.shadow_width,
            "shadow_loss": self.shadow_loss,
            "feature_width": self.feature_net.width,
            "feature_grid": self.feature_net.grid,
            "density_k": self.density_k,
            "seed": self.seed,
        }
        return arrays, meta

    @classmethod
    def from_state(
        cls,
        arrays: dict[str, np.ndarray],
        meta: dict[str, Any],
        generator: nn.Module,
    ) -> AttackModels:
        """Rebuild from :meth:`to_state`'s output; strict about keys and shapes.

        Parameters
        ----------
        arrays : the arrays of :meth:`to_state`.
        meta : the metadata of :meth:`to_state`.
        generator : the audited generator (its noise shape must match).

        Returns
        -------
        AttackModels
            Models on the generator's device, in eval mode.
        """
        _check_meta(meta, generator)
        size, k = int(meta["image_size"]), len(meta["class_names"])
        modules: dict[str, nn.Module] = {
            "shadow_critic": Critic(
                **shadow_critic_kwargs(
                    size, k, int(meta["shadow_width"]), meta["shadow_loss"]
                )
            ),
            "encoder_pixel": LatentEncoder(
                **encoder_kwargs(size, noise_shape(generator))
            ),
            "encoder_feature": LatentEncoder(
                **encoder_kwargs(size, noise_shape(generator))
            ),
            "feature_net": RandomConvFeatures(
                int(meta["feature_width"]), int(meta["feature_grid"])
            ),
        }
        _load_modules(modules, arrays)
        device = next(generator.parameters()).device
        for module in modules.values():
            module.to(device).eval()
        return cls(
            generator=generator,
            classes_present=tuple(meta["classes_present"]),
            shadow_width=int(meta["shadow_width"]),
            shadow_loss=str(meta["shadow_loss"]),
            generated=_generated_set(arrays, meta),
            generated_embeddings=np.asarray(arrays["generated.embeddings"], np.float32),
            density_k=int(meta["density_k"]),
            seed=int(meta["seed"]),
            **modules,  # type: ignore[arg-type]
        )


def _check_meta(meta: dict[str, Any], generator: nn.Module) -> None:
    """Raise if the metadata is of another format or does not fit ``generator``."""
    if (
        meta.get("format") != STATE_FORMAT
        or meta.get("format_version") != STATE_VERSION
    ):
        raise AttackStateError(
            f"not a {STATE_FORMAT} v{STATE_VERSION} state: "
            f"{meta.get('format')!r} v{meta.get('format_version')!r}"
        )
    if list(meta["noise_shape"]) != list(noise_shape(generator)):
        raise AttackStateError(
            f"state built for noise {meta['noise_shape']}, "
            f"generator draws {list(noise_shape(generator))}"
        )
    if meta.get("shadow_loss") not in get_args(ShadowLoss):
        raise AttackStateError(f"unknown shadow loss {meta.get('shadow_loss')!r}")
    if set(meta["classes_present"]) - set(meta["class_names"]):
        raise AttackStateError("classes_present names a class outside class_names")


def _load_modules(modules: dict[str, nn.Module], arrays: dict[str, np.ndarray]) -> None:
    """Load each module's weights from ``arrays``; extra or missing keys fail."""
    expected = {f"{p}.{n}" for p, m in modules.items() for n in m.state_dict()}
    expected |= {"generated.images", "generated.labels", "generated.embeddings"}
    if set(arrays) != expected:
        extra, missing = set(arrays) - expected, expected - set(arrays)
        raise AttackStateError(
            f"state keys differ: unexpected {sorted(extra)[:5]}, "
            f"missing {sorted(missing)[:5]}"
        )
    for part, module in modules.items():
        prefix = f"{part}."
        state = {
            key[len(prefix) :]: torch.from_numpy(np.ascontiguousarray(value))
            for key, value in arrays.items()
            if key.startswith(prefix)
        }
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise AttackStateError(f"{part}: {err}") from err


def _generated_set(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> ImageSet:
    """Rebuild the generated reference samples, checked against the metadata."""
    images = np.asarray(arrays["generated.images"])
    size = int(meta["image_size"])
    if images.shape[1:] != (size, size, 3):
        raise AttackStateError(f"generated images of shape {images.shape}, size {size}")
    emb = arrays["generated.embeddings"]
    if emb.ndim != 2 or len(emb) != len(images):
        raise AttackStateError("one embedding per generated image is required")
    return ImageSet(
        images,
        np.asarray(arrays["generated.labels"]).astype(np.int64),
        tuple(meta["class_names"]),
    )
