"""The classifier step's targets: hard labels, soft labels, mixing, any batch source."""

import numpy as np
import torch
import torch.nn.functional as F

from medsynth_fl.config import ClassifierTrainConfig, ConvNetConfig
from medsynth_fl.data.imageset import ImageSet
from medsynth_fl.models.classifiers import build_classifier, classifier_logits
from medsynth_fl.training.batches import BatchSampler, ImageSetSource
from medsynth_fl.training.classifier import classifier_loss, soft_cross_entropy

K = 3
CFG = ClassifierTrainConfig(
    arch="convnet", convnet=ConvNetConfig(width=4, depth=1), augment="none"
)


def soft_set(n=6):
    rng = np.random.default_rng(0)
    soft = rng.dirichlet(np.ones(K), size=n).astype(np.float32)
    images = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    return ImageSet(images, np.arange(n) % K, ("a", "b", "c"), soft_labels=soft)


def test_image_set_source_draws_like_the_batch_sampler_and_carries_soft_rows():
    s = soft_set()
    x, y, soft = ImageSetSource(s, "sqrt").draw(
        np.random.default_rng(1), 16, torch.Generator()
    )
    ref_x, ref_y = BatchSampler(*s.to_tensors(), K, "sqrt").draw(
        np.random.default_rng(1), 16
    )
    assert torch.equal(x, ref_x) and torch.equal(y, ref_y)
    idx = [int(np.flatnonzero((s.to_tensors()[0] == xi).all((1, 2, 3)))[0]) for xi in x]
    assert torch.equal(soft, torch.from_numpy(s.soft_labels[idx]))


def loss(cfg, model, x, y, soft):
    return classifier_loss(
        model, x, y, soft, cfg, K, np.random.default_rng(0), torch.Generator()
    )


def test_label_mode_picks_the_soft_or_the_hard_targets():
    torch.manual_seed(0)
    model = build_classifier(CFG, K, 8)
    x, y, soft = ImageSetSource(soft_set()).draw(
        np.random.default_rng(0), 8, torch.Generator()
    )
    logits = classifier_logits(model, x)
    hard = loss(CFG, model, x, y, soft)
    torch.testing.assert_close(hard, F.cross_entropy(logits, y))
    soft_cfg = CFG.model_copy(update={"label_mode": "soft"})
    torch.testing.assert_close(
        loss(soft_cfg, model, x, y, soft), soft_cross_entropy(logits, soft)
    )
    # soft mode on a batch without soft targets falls back to the labels
    torch.testing.assert_close(loss(soft_cfg, model, x, y, None), hard)
    smooth = CFG.model_copy(update={"label_smoothing": 0.2})
    torch.testing.assert_close(
        loss(smooth, model, x, y, None),
        F.cross_entropy(logits, y, label_smoothing=0.2),
    )
    mixed = CFG.model_copy(update={"mix": "mixup"})
    assert not torch.allclose(loss(mixed, model, x, y, None), hard)
