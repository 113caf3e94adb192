"""Your own PyTorch training loop with ``RecallBalancer``, on a Fashion-MNIST subset.

    python examples/own_loop.py                 # 1,000 images per class, 15 epochs, the closed loop
    python examples/own_loop.py --plain         # the same loop and model with plain cross-entropy
    python examples/own_loop.py --quick         # seconds: 200 images per class, 3 epochs

The data come from adaptive_lb's helpers (IDX files read directly, no torchvision): a training part and a
held-out split cut in two, ``heldout`` (the control half the balancer observes every epoch) and ``select``
(never read by the balancer: the calibration fit and the numbers printed at the end). Prints one line per epoch
and a final JSON line: per-class recall on select, its worst class, and test accuracy with and without the
calibration biases fitted on select.
"""

from __future__ import annotations

import argparse
import json

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from adaptive_lb import RecallBalancer
from adaptive_lb.config import DataConfig
from adaptive_lb.data import build_data
from adaptive_lb.metrics import per_class_recall


def make_model() -> nn.Module:
    """Any classifier of ``(B, 1, 28, 28)`` images to 10 logits will do."""
    def block(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)]
    return nn.Sequential(*block(1, 16), *block(16, 32), nn.Flatten(), nn.Linear(32 * 7 * 7, 10))


def loader(split, mean: float, std: float, shuffle: bool) -> DataLoader:
    """A plain DataLoader of normalised float images ``(B, 1, 28, 28)`` and labels ``(B,)``."""
    return DataLoader(TensorDataset((split.x.float() / 255 - mean) / std, split.y), batch_size=128, shuffle=shuffle)


@torch.no_grad()
def logits_of(model: nn.Module, data: DataLoader) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    z, y = zip(*[(model(x), y) for x, y in data], strict=True)
    return torch.cat(z), torch.cat(y)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--plain", action="store_true", help="no balancer: plain cross-entropy, same loop")
    p.add_argument("--quick", action="store_true", help="200 images per class, 3 epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=15)
    args = p.parse_args()
    torch.set_num_threads(1)
    per_class, epochs = (200, 3) if args.quick else (1000, args.epochs)
    data = build_data(DataConfig(subset_per_class=per_class, heldout_fraction=0.2, test_subset_per_class=300),
                      args.seed)
    mean, std = float(data.mean), float(data.std)
    train, control = loader(data.train, mean, std, True), loader(data.heldout, mean, std, False)
    select, test = loader(data.select, mean, std, False), loader(data.test, mean, std, False)
    torch.manual_seed(args.seed)
    model = make_model()
    # the knobs of configs/fashion_mnist.yaml; "static" = unit weights, no offsets: plain cross-entropy
    balancer = RecallBalancer(10, "static" if args.plain else "damped", class_names=data.class_names,
                              damping=0.3, warmup_epochs=1 if args.quick else 3, margin_gain=0.15)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 0.05, total_steps=epochs * len(train))

    for epoch in range(epochs):
        model.train()
        for x, y in train:
            loss = balancer.loss(model(x), y)  # the weights and logit offsets of the current action
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            for x, y in control:
                balancer.observe(model(x), y)  # held-out logits and labels
        stats = balancer.step()  # controller update; a flat dict for any logger
        k = int(balancer.last_measurement.tpr.argmin())
        print(f"epoch {epoch + 1}/{epochs}: control recall mean {stats['recall_mean']:.3f}, worst "
              f"{stats['recall_worst']:.3f} ({data.class_names[k]}, weight now {balancer.class_weights[k]:.2f})",
              flush=True)

    z_sel, y_sel = logits_of(model, select)
    z_test, y_test = logits_of(model, test)
    balancer.fit_calibration(z_sel, y_sel)  # per-class biases fitted on select, never on test
    r = per_class_recall(z_sel.argmax(1) == y_sel, y_sel, 10)  # (C,)
    print(json.dumps({"method": "plain" if args.plain else "balancer", "seed": args.seed, "epochs": epochs,
                      "select_recall": [round(v, 4) for v in r.tolist()], "select_worst": round(r.min().item(), 4),
                      "select_worst_class": data.class_names[int(r.argmin())],
                      "select_mean": round(r.mean().item(), 4),
                      "test_accuracy": round((z_test.argmax(1) == y_test).float().mean().item(), 4),
                      "test_accuracy_calibrated": round(
                          (balancer.calibrate(z_test).argmax(1) == y_test).float().mean().item(), 4)}))


if __name__ == "__main__":
    main()
