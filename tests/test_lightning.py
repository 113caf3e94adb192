"""RecallBalancerCallback in a real ``lightning.Trainer`` on CPU: observes validation, steps once per validation
epoch (not in the sanity check), logs per-class stats, checkpoints the balancer with the callback."""

import importlib
import sys

import pytest
import torch

from adaptive_lb import RecallBalancer

L = pytest.importorskip("lightning")
C = 3


def blobs(n, seed):
    """2-d points of 3 classes; class 2 overlaps class 1, so it is the hard one."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % C
    centres = torch.tensor([[-2.0, 0.0], [1.5, 0.0], [2.0, 0.5]])
    return torch.utils.data.TensorDataset(centres[y] + 0.8 * torch.randn(n, 2, generator=g), y)


class Module(L.LightningModule):
    def __init__(self, balancer, tuple_output=False):
        super().__init__()
        self.net, self.balancer, self.tuple_output = torch.nn.Linear(2, C), balancer, tuple_output

    def training_step(self, batch, batch_idx):
        x, y = batch
        return self.balancer.loss(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        return (logits, y) if self.tuple_output else {"logits": logits, "y": y}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(balancer, epochs, tmp_path, ckpt_path=None, tuple_output=False):
    from adaptive_lb.integrations.lightning import RecallBalancerCallback

    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=2,
                        default_root_dir=tmp_path, callbacks=[RecallBalancerCallback(balancer)])
    loader = torch.utils.data.DataLoader
    trainer.fit(Module(balancer, tuple_output), loader(blobs(300, 0), batch_size=30, shuffle=True),
                loader(blobs(150, 1), batch_size=50), ckpt_path=ckpt_path)
    return trainer


def test_the_callback_steps_logs_and_resumes(tmp_path):
    torch.manual_seed(0)  # damping 1: the weights follow the last recall alone
    balancer = RecallBalancer(C, warmup_epochs=0, margin_gain=0.5, damping=1.0)
    trainer = fit(balancer, 2, tmp_path, tuple_output=True)
    assert balancer.steps == 2  # two validation epochs; the sanity check observed nothing
    metrics = trainer.callback_metrics
    assert {f"{k}/{c}" for k in ("recall", "weight", "aug", "offset") for c in range(C)} <= set(metrics)
    assert torch.allclose(torch.stack([metrics[f"weight/{c}"] for c in range(C)]), balancer.class_weights)
    recall = torch.stack([metrics[f"recall/{c}"] for c in range(C)])
    assert recall.min() == metrics["recall_worst"] < metrics["recall/0"]  # an overlapping class is the worst ...
    assert int(balancer.class_weights.argmax()) == int(recall.argmin())   # ... and gets the largest weight

    trainer.save_checkpoint(tmp_path / "last.ckpt")
    resumed = RecallBalancer(C, warmup_epochs=0, margin_gain=0.5, damping=1.0)
    fit(resumed, 3, tmp_path, ckpt_path=tmp_path / "last.ckpt")
    assert resumed.steps == 3  # 2 restored from the checkpoint + 1 more
    assert not torch.equal(resumed.class_weights, torch.ones(C))


def test_missing_lightning_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "lightning", None)
    monkeypatch.setitem(sys.modules, "lightning.pytorch", None)
    monkeypatch.delitem(sys.modules, "adaptive_lb.integrations.lightning", raising=False)
    with pytest.raises(ImportError, match=r"pip install adaptive_lb\[lightning\]"):
        importlib.import_module("adaptive_lb.integrations.lightning")
    monkeypatch.delitem(sys.modules, "adaptive_lb.integrations.lightning", raising=False)


def test_validation_outputs_of_another_shape_are_refused():
    from adaptive_lb.integrations.lightning import logits_and_labels

    z, y = torch.zeros(2, C), torch.zeros(2, dtype=torch.long)
    assert logits_and_labels({"logits": z, "y": y})[0] is z and logits_and_labels((z, y))[1] is y
    with pytest.raises(TypeError, match="'logits'"):
        logits_and_labels(z)
    with pytest.raises(ValueError, match="observe needs logits"):
        RecallBalancer(C).observe(z[:, :2], y)
