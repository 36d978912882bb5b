"""Methods without negatives (negative cosine, Eq. 3): BYOL and SimSiam."""

from __future__ import annotations

from torch import Tensor

from genview.method.losses import byol_loss, negative_cosine
from trainer.backbones import mlp
from trainer.methods.base import SSLMethod
from trainer.methods.config import MethodConfig
from trainer.methods.contrastive import PredictedTarget


class BYOL(PredictedTarget):
    """BYOL: projector and predictor Linear–BN–ReLU–Linear (with biases), 2 − 2cos per sample, symmetrised."""

    def __init__(self, config: MethodConfig):
        c = config
        super().__init__(c, [c.hidden, c.dim], [c.dim, c.pred_hidden, c.dim])

    def loss(self, crops: list[Tensor]) -> Tensor:
        p1, p2, z1, z2 = self.predictions_and_targets(crops[0], crops[1])
        return byol_loss(p1, z2) + byol_loss(p2, z1)


class SimSiam(SSLMethod):
    """SimSiam: 3-layer projector with last BN, bottleneck predictor (fixed lr), −cos with stop-gradient, halved."""

    def __init__(self, config: MethodConfig):
        super().__init__(config)
        c = config
        self.online = self.make_encoder([c.hidden, c.hidden, c.dim], bias=False, last_bn="plain")
        self.predictor = mlp([c.dim, c.pred_hidden, c.dim], bias=False, last_bias=True)

    def loss(self, crops: list[Tensor]) -> Tensor:
        z1, z2 = self.online(crops[0]), self.online(crops[1])
        p1, p2 = self.predictor(z1), self.predictor(z2)
        return 0.5 * (negative_cosine(p1, z2) + negative_cosine(p2, z1))
