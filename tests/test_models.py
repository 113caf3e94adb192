import pytest
import torch

from adaptive_lb.config import TEXT_MODELS, ModelConfig
from adaptive_lb.errors import ConfigError
from adaptive_lb.models import MODELS, create_model


@pytest.mark.parametrize("name", sorted(set(MODELS) - set(TEXT_MODELS)))
@pytest.mark.parametrize("in_channels, size", [(1, 28), (3, 32)])
def test_every_model_maps_images_to_logits(name, in_channels, size):
    model = create_model(ModelConfig(name=name, width=8), in_channels, 7)
    out = model(torch.randn(2, in_channels, size, size))
    assert out.shape == (2, 7) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", TEXT_MODELS)
def test_every_text_model_maps_codes_to_logits(name):
    model = create_model(ModelConfig(name=name, width=8), 40, 7)  # 40 codes: 0 = padding, 1..39 characters
    out = model(torch.tensor([[5, 9, 39, 0], [1, 0, 0, 0]]))
    assert out.shape == (2, 7) and torch.isfinite(out).all()


@pytest.mark.parametrize("depth, params", [("resnet20", 0.27e6), ("resnet32", 0.46e6)])
def test_cifar_resnets_have_the_papers_size(depth, params):
    n = sum(p.numel() for p in create_model(ModelConfig(name=depth), 3, 10).parameters())
    assert n == pytest.approx(params, rel=0.03)


def test_torchvision_model_by_name_takes_grey_images():
    model = create_model(ModelConfig(name="tv:resnet18"), 1, 10)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("name, fragment", [("vgg99", "unknown model 'vgg99'"),
                                            ("tv:not_a_model", "not a torchvision classifier")])
def test_unknown_model_names(name, fragment):
    with pytest.raises(ConfigError, match=fragment):
        create_model(ModelConfig(name=name), 1, 10)
