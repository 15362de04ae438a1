"""Stage "labels": distil the site teacher's soft labels into the generator's head.

Soft labels are the largest single lever of dataset condensation (seed 002;
the CPU measurements in docs/decisions.md: 0.590 vs 0.427 balanced accuracy for
the same 8,000 samples). The coordinator cannot query the site's teacher, and
the teacher must not leave the site. So the site teaches the generator's
*label head* (:class:`~medsynth_fl.models.cgan.ConditionalResNetGenerator`) to
predict, from the generator's own features, what its teacher says about each
generated sample. Only the generator's images are ever shown to the teacher.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import LabelsConfig
from ..models.classifiers import classifier_logits


def label_head_parameters(generator: nn.Module) -> list[nn.Parameter]:
    """The parameters of the label head (every name starting with ``label_``)."""
    return [p for n, p in generator.named_parameters() if n.startswith("label_")]


class LabelDistiller:
    """Trains a generator's label head towards the teacher on fresh samples.

    Parameters
    ----------
    generator : the generator that will be shipped (its EMA copy when kept).
    classes : label indices the site has images of (samples are drawn among them).
    cfg : the ``labels`` config section.
    """

    def __init__(self, generator: nn.Module, classes: list[int], cfg: LabelsConfig):
        self.generator, self.cfg = generator, cfg
        self.classes = torch.tensor(classes, dtype=torch.long)
        params = label_head_parameters(generator)
        self.opt = torch.optim.Adam(params, lr=cfg.lr) if params else None

    def state_dict(self) -> dict:
        """Optimiser state (the head's weights live in the generator)."""
        return {"opt": None if self.opt is None else self.opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""
        if self.opt is not None and state["opt"] is not None:
            self.opt.load_state_dict(state["opt"])

    def step(
        self,
        teacher: nn.Module,
        np_rng: np.random.Generator,
        torch_rng: torch.Generator,
    ) -> dict[str, float]:
        """One KL(teacher ‖ head) step on a class-balanced batch of fresh samples.

        The generator runs in eval mode, as the coordinator samples it, and its
        features are computed without grad: the images do not change.
        """
        gen = self.generator
        n = self.cfg.batch_size
        y = self.classes[torch.from_numpy(np_rng.integers(0, len(self.classes), n))]
        y = y.to(gen.device)
        gen.eval()
        with torch.no_grad():
            h = gen.features(gen.sample_noise(n, torch_rng), y)
            target = F.softmax(
                classifier_logits(teacher, torch.tanh(gen.to_rgb(h)))
                / self.cfg.temperature,
                dim=1,
            )
        logits = gen.label_logits_from(h, y)
        loss = F.kl_div(F.log_softmax(logits, dim=1), target, reduction="batchmean")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        agree = (logits.argmax(1) == target.argmax(1)).float().mean()
        return {"loss/labels/kl": loss.item(), "labels/agreement": agree.item()}
