"""The model a run ships: its network, input normalisation and calibration biases in one ``nn.Module``.

``model.pt`` (written at the end of every run) holds plain state only (loaded with ``weights_only=True``):
the model config, its weights, the per-channel mean/std of the training part, the post-hoc biases (fitted on
the ``select`` split; zeros without a post-hoc step), the class names and, for text, the alphabet.
``load_model(run_dir)`` rebuilds a ``CalibratedClassifier`` from it without the dataset:

    model = load_model("runs/fashion_mnist-...")       # calibrated=False for the raw logits
    classes = model.predict(images_uint8)              # (B, 1, 28, 28) uint8 -> (B,) class indices
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from adaptive_lb.config import ModelConfig
from adaptive_lb.config_io import from_dict, to_dict
from adaptive_lb.errors import RunDirError
from adaptive_lb.models import create_model

MODEL = "model.pt"


class CalibratedClassifier(nn.Module):
    """Raw inputs in, calibrated logits out: ``model(normalise(x)) + bias``.

    Images: ``(B, C, H, W)`` uint8 (0-255) or float in [0, 1]; text: ``(B, L)`` int64 character codes.
    """

    def __init__(self, model: nn.Module, mean: torch.Tensor, std: torch.Tensor, bias: torch.Tensor,
                 class_names: list[str], text: bool = False) -> None:
        super().__init__()
        self.model, self.class_names, self.text = model, list(class_names), text
        self.register_buffer("mean", mean.float().view(1, -1, 1, 1))  # (1, C_in, 1, 1)
        self.register_buffer("std", std.float().view(1, -1, 1, 1))
        self.register_buffer("bias", bias.float())                     # (num_classes,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.text:
            x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
            x = (x - self.mean) / self.std
        return self.model(x).float() + self.bias

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Class indices ``(B,)`` (ties to the lowest index, as everywhere in adaptive_lb)."""
        was = self.training
        self.eval()
        try:
            return self(x).argmax(dim=1)
        finally:
            self.train(was)


def model_state(model: nn.Module, model_cfg: ModelConfig, data: Any, bias: list[float] | None) -> dict:
    """What ``model.pt`` holds, from a trained model and its ``DataBundle``."""
    return {"model_config": to_dict(model_cfg), "in_channels": data.in_channels, "class_names": list(data.class_names),
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "mean": data.mean.cpu(), "std": data.std.cpu(), "alphabet": data.alphabet,
            "bias": torch.tensor(bias if bias is not None else [0.0] * data.num_classes)}


def load_model(run_dir: str | Path, calibrated: bool = True) -> CalibratedClassifier:
    """The run's model from ``RUN_DIR/model.pt``, on the CPU, in eval mode; ``calibrated=False`` drops the biases."""
    path = Path(run_dir) / MODEL
    if not path.is_file():
        raise RunDirError(f"'{run_dir}' has no {MODEL}: it is written when a run finishes; finish the run with "
                          f"'adaptive-lb train --resume {run_dir}'")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        cfg = from_dict(ModelConfig, state["model_config"], "model.")
        net = create_model(cfg, state["in_channels"], len(state["class_names"]))
        net.load_state_dict(state["state_dict"])
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        raise RunDirError(f"'{path}' cannot be read ({type(exc).__name__}: damaged, or not made by "
                          "adaptive-lb)") from None
    bias = state["bias"] if calibrated else torch.zeros(len(state["class_names"]))
    return CalibratedClassifier(net, state["mean"], state["std"], bias, state["class_names"],
                                text=bool(state["alphabet"])).eval()
