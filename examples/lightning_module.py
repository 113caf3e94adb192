"""``RecallBalancer`` in a Lightning module, through ``RecallBalancerCallback``, on a Fashion-MNIST subset.

    pip install 'adaptive_lb[lightning]'
    python examples/lightning_module.py           # 1,000 images per class, 10 epochs
    python examples/lightning_module.py --quick   # seconds: 200 images per class, 2 epochs

The module and the callback share one balancer: ``training_step`` returns ``balancer.loss``; ``validation_step``
returns ``{"logits": ..., "y": ...}`` of the held-out (control) split, which the callback observes; it steps the
balancer at the end of every validation epoch, logs per-class recall, weights, intensities and offsets
(``self.log_dict``) and saves the balancer in Lightning's checkpoints. Prints the last stats as JSON.
"""

from __future__ import annotations

import argparse
import json

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from adaptive_lb import RecallBalancer
from adaptive_lb.config import DataConfig
from adaptive_lb.data import build_data
from adaptive_lb.integrations.lightning import RecallBalancerCallback


class Classifier(L.LightningModule):
    def __init__(self, balancer: RecallBalancer, lr: float = 0.05) -> None:
        super().__init__()
        self.balancer, self.lr = balancer, lr
        self.net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Flatten(), nn.Linear(32 * 7 * 7, 10))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return self.balancer.loss(self.net(x), y)  # the current per-class weights and logit offsets

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> dict:
        x, y = batch
        return {"logits": self.net(x), "y": y}  # what RecallBalancerCallback observes

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="200 images per class, 2 epochs")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    per_class, epochs = (200, 2) if args.quick else (1000, 10)
    data = build_data(DataConfig(subset_per_class=per_class, heldout_fraction=0.2), args.seed)
    mean, std = float(data.mean), float(data.std)

    def loader(split, shuffle: bool) -> DataLoader:
        return DataLoader(TensorDataset((split.x.float() / 255 - mean) / std, split.y), batch_size=128,
                          shuffle=shuffle)

    L.seed_everything(args.seed, verbose=False)
    balancer = RecallBalancer(10, "damped", class_names=data.class_names, damping=0.3, margin_gain=0.15,
                              warmup_epochs=1 if args.quick else 3)
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[RecallBalancerCallback(balancer)])
    trainer.fit(Classifier(balancer), loader(data.train, True), loader(data.heldout, False))
    print(json.dumps({"steps": balancer.steps, **{k: round(v, 4) for k, v in balancer.stats().items()}}))


if __name__ == "__main__":
    main()
