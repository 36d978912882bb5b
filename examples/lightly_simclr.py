"""GenView with lightly's SimCLR model: GenView pairs and weights, and one line swapped for the loss.

lightly's `NTXentLoss` returns the batch mean, which cannot be weighted per pair; GenView's `nt_xent` is the
same loss per pair, so Eq. 14 is `weighted_loss(nt_xent(z0, z1, t), w)`.

    genview serve &                                   # generator + scorer on :8000
    python examples/lightly_simclr.py --images DIR
"""

from __future__ import annotations

import torch
from genview_data import example_args, genview_loader, log_epoch, resnet18_backbone
from lightly.models.modules import SimCLRProjectionHead
from torch import nn

from genview import normalise, nt_xent, quality_weights, to_pairs, weighted_loss


class SimCLR(nn.Module):
    """lightly's SimCLR model: a backbone and its projection head."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.projection_head = SimCLRProjectionHead(512, 512, 128)

    def forward(self, x):
        return self.projection_head(self.backbone(x).flatten(start_dim=1))


def main() -> None:
    args = example_args(__doc__)
    loader, scorer = genview_loader(args)
    model = SimCLR(resnet18_backbone())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.06)
    for epoch in range(args.epochs):
        for (x0, x1), _index, _generated, _fell_back in loader:
            w = quality_weights(scorer.q(to_pairs(x0, x1)))
            z0, z1 = model(normalise(x0)), model(normalise(x1))
            # loss = lightly.loss.NTXentLoss(temperature=0.5)(z0, z1)    # lightly: one mean, no weights
            loss = weighted_loss(nt_xent(z0, z1, temperature=0.5), w)     # GenView: per pair, weighted (Eq. 14)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        log_epoch(epoch, loss, w)


if __name__ == "__main__":
    main()
