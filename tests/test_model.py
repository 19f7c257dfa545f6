"""The DIDFuse network: layer layout as method-notes, any size in, same size out, BN folding."""

import pytest
import torch
from torch import nn

from streamfuse.model import DIDFuse, fold_model
from conftest import read_pair


def randomise_batchnorm(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial BatchNorm statistics and affine parameters, so folding is really exercised."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.2)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)


def test_layer_layout_matches_method_notes():
    model = DIDFuse()
    convs = {name: layer.conv for name, layer in [*model.encoder.named_children(), *model.decoder.named_children()]}
    assert {name: (c.in_channels, c.out_channels) for name, c in convs.items()} == {
        "conv1": (1, 64), "conv2": (64, 64), "conv3": (64, 64), "conv4": (64, 64),
        "conv5": (128, 64), "conv6": (128, 64), "conv7": (128, 1),
    }
    assert isinstance(model.encoder.conv1[0], nn.ReflectionPad2d)
    assert isinstance(model.decoder.conv7[0], nn.ReflectionPad2d)
    for layer in (model.encoder.conv2, model.encoder.conv3, model.encoder.conv4, model.decoder.conv5, model.decoder.conv6):
        assert isinstance(layer[0], nn.ZeroPad2d)
    assert isinstance(model.decoder.conv7[2], nn.BatchNorm2d) and model.decoder.conv7[2].num_features == 1
    assert [type(layer[3]) for layer in model.encoder.children()] == [nn.PReLU, nn.PReLU, nn.Tanh, nn.Tanh]
    assert [type(layer[3]) for layer in model.decoder.children()] == [nn.PReLU, nn.PReLU, nn.Sigmoid]
    assert all(p.num_parameters == 1 for p in model.modules() if isinstance(p, nn.PReLU))


@pytest.mark.parametrize("size", [(8, 8), (9, 13), (37, 53), (64, 48)])
def test_any_size_in_same_size_out(size):
    model = DIDFuse().eval()
    image = torch.rand(2, 1, *size)
    with torch.no_grad():
        features = model.encode(image)
        output = model.decode(features)
    assert output.shape == image.shape
    assert all(f.shape == (2, 64, *size) for f in features)
    assert float(output.min()) >= 0.0 and float(output.max()) <= 1.0
    assert float(features.base.abs().max()) <= 1.0  # tanh


def test_folded_network_matches_unfolded_on_random_and_real_input():
    torch.manual_seed(1)
    model = DIDFuse()
    randomise_batchnorm(model)
    model.eval()
    folded = fold_model(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    ir, vis = read_pair("tno", 4)
    real = torch.from_numpy(ir[:96, :120]).float()[None, None] / 255
    for image in (torch.rand(3, 1, 31, 45), real):
        with torch.no_grad():
            reference, fast = model(image), folded(image)
            reference_features, fast_features = model.encode(image), folded.encode(image)
        assert float((reference - fast).abs().max()) <= 1e-5
        for a, b in zip(reference_features, fast_features):
            assert float((a - b).abs().max()) <= 1e-5
