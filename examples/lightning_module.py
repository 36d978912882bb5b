"""GenView in a Lightning `LightningModule`: the quality weights are computed in `training_step`.

    genview serve &                                   # generator + scorer on :8000
    python examples/lightning_module.py --images DIR
"""

from __future__ import annotations

import lightning as L
import torch
from genview_data import example_args, genview_loader, log_epoch, resnet18_backbone
from torch import nn

from genview import QualityScorer, normalise, nt_xent, quality_weights, to_pairs, weighted_loss


class GenViewSimCLR(L.LightningModule):
    """SimCLR whose loss is weighted per pair by GenView's quality scores."""

    def __init__(self, scorer: QualityScorer, temperature: float = 0.1):
        super().__init__()
        self.scorer, self.temperature = scorer, temperature
        self.model = nn.Sequential(resnet18_backbone(), nn.Linear(512, 128))

    def training_step(self, batch, batch_idx):
        (x1, x2), _index, _generated, _fell_back = batch
        w = quality_weights(self.scorer.q(to_pairs(x1, x2).cpu())).to(self.device)   # Eq. 13
        z1, z2 = self.model(normalise(x1)), self.model(normalise(x2))
        loss = weighted_loss(nt_xent(z1, z2, self.temperature), w)                    # Eq. 14
        self.last = (loss.detach(), w)
        self.log("loss", loss, prog_bar=True)
        return loss

    def on_train_epoch_end(self) -> None:
        log_epoch(self.current_epoch, *self.last)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.06, momentum=0.9, weight_decay=5e-4)


def main() -> None:
    args = example_args(__doc__)
    loader, scorer = genview_loader(args)
    trainer = L.Trainer(max_epochs=args.epochs, logger=False, enable_checkpointing=False,
                        enable_model_summary=False, enable_progress_bar=False)
    trainer.fit(GenViewSimCLR(scorer), loader)


if __name__ == "__main__":
    main()
