"""GenView in a plain PyTorch loop: SimCLR on GenView pairs with the quality-weighted loss (Eq. 14).

    genview serve &                                   # generator + scorer on :8000
    python examples/plain_loop.py --images DIR
"""

from __future__ import annotations

import torch
from genview_data import example_args, genview_loader, log_epoch, resnet18_backbone
from torch import nn

from genview import normalise, nt_xent, quality_weights, to_pairs, weighted_loss


def main() -> None:
    args = example_args(__doc__)
    loader, scorer = genview_loader(args)
    model = nn.Sequential(resnet18_backbone(), nn.Linear(512, 128))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.06, momentum=0.9, weight_decay=5e-4)
    for epoch in range(args.epochs):
        for (x1, x2), _index, _generated, _fell_back in loader:
            w = quality_weights(scorer.q(to_pairs(x1, x2)))                  # Eq. 13 on the uint8 crops
            z1, z2 = model(normalise(x1)), model(normalise(x2))
            loss = weighted_loss(nt_xent(z1, z2, temperature=0.1), w)        # Eq. 14: mean_i w_i L_i
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        log_epoch(epoch, loss, w)


if __name__ == "__main__":
    main()
