"""Engine graph rewrites (streamfuse.engines.optimize): same function as the plain network."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from streamfuse.engines.optimize import (
    ConcatFreeDecoder,
    LeakyReLU,
    fold_zero_padding,
    pad_input_channels,
    prelu_as_leaky_relu,
    TapPlanesLayer,
    TapSumLayer,
    rewrite_for_graph_compiler,
    taps_for_narrow_convs,
)
from streamfuse.fuser import FusionNet
from streamfuse.model import ConvLayer, DIDFuse, Features, fold_model
from conftest import read_pair
from test_model import randomise_batchnorm

TOLERANCE = 1e-5  # float32 summation order only


def random_model(seed: int) -> DIDFuse:
    """A model with random convs, BatchNorm statistics and PReLU slopes (not the 0.25 default),
    so a rewrite that dropped a slope, a bias or a channel half would show."""
    torch.manual_seed(seed)
    model = DIDFuse().eval()
    randomise_batchnorm(model, seed)
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.PReLU):
            module.weight.data.uniform_(-0.5, 0.9, generator=generator)
    return model


def real_input(height: int = 96, width: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    ir, vis = read_pair("tno", 2)
    crop = (slice(0, height), slice(0, width))
    return tuple(torch.from_numpy(np.ascontiguousarray(x[crop])).float()[None, None] / 255 for x in (ir, vis))


def random_input(seed: int, height: int = 37, width: int = 53) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.rand(2, 1, height, width, generator=generator) for _ in range(2))


@pytest.mark.parametrize("inputs", ["random", "real"])
def test_rewritten_network_matches_plain_network(inputs):
    plain = FusionNet(fold_model(random_model(seed=3)), "saliency+cam").eval()
    rewritten = rewrite_for_graph_compiler(copy.deepcopy(plain))
    ir, vis = random_input(seed=4) if inputs == "random" else real_input()
    with torch.no_grad():
        expected, actual = plain(ir, vis), rewritten(ir, vis)
    assert expected.std() > 1e-3  # varies across the frame: not a constant image
    torch.testing.assert_close(actual, expected, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("inputs", ["random", "real"])
def test_input_channel_padding_keeps_the_function(inputs):
    # The CUDA engines' rewrite, checked here on the CPU: zero weights add exact zeros.
    plain = FusionNet(fold_model(random_model(seed=5)), "saliency+cam").eval()
    padded = pad_input_channels(copy.deepcopy(plain))
    convs = [layer.conv for layer in padded.modules() if isinstance(layer, ConvLayer)]
    assert [c.in_channels % 8 for c in convs] == [0] * len(convs)
    assert convs[0].in_channels == 8  # conv1 of the shared encoder read 1 channel
    ir, vis = random_input(seed=6) if inputs == "random" else real_input()
    with torch.no_grad():
        expected, actual = plain(ir, vis), padded(ir, vis)
    assert actual.shape == expected.shape and expected.std() > 1e-3
    torch.testing.assert_close(actual, expected, rtol=0, atol=TOLERANCE)


def tap_rewritten(seed: int) -> tuple[FusionNet, FusionNet]:
    plain = fold_zero_padding(FusionNet(fold_model(random_model(seed=seed)), "saliency+cam").eval())
    return plain, taps_for_narrow_convs(copy.deepcopy(plain))


@pytest.mark.parametrize("inputs", ["random", "real"])
def test_narrow_convs_as_taps_keep_the_function(inputs):
    # The CUDA engines' rewrite of conv1 (one input channel) and conv7 (one output channel).
    plain, rewritten = tap_rewritten(seed=8)
    assert isinstance(rewritten.encoder.conv1, TapSumLayer)
    assert isinstance(rewritten.decoder.conv7, TapPlanesLayer)
    assert isinstance(rewritten.encoder.conv2, ConvLayer)  # 64 channels both sides: untouched
    ir, vis = random_input(seed=9) if inputs == "random" else real_input()
    with torch.no_grad():
        expected, actual = plain(ir, vis), rewritten(ir, vis)
    assert actual.shape == expected.shape and expected.std() > 1e-3
    torch.testing.assert_close(actual, expected, rtol=0, atol=TOLERANCE)


def test_tap_layers_match_their_conv_layers_with_zero_and_reflection_padding():
    generator = torch.Generator().manual_seed(10)
    x_narrow = torch.randn(2, 2, 11, 13, generator=generator)
    x_wide = torch.randn(2, 24, 11, 13, generator=generator)
    for padding in ("zero", "reflection"):
        narrow_in = ConvLayer(2, 16, padding, nn.PReLU()).eval()
        narrow_out = ConvLayer(24, 1, padding, nn.Sigmoid()).eval()
        for layer in (narrow_in, narrow_out):
            randomise_batchnorm(layer, seed=11)
        fold_zero_padding(narrow_out)  # the conv's own padding=1 is handled too
        with torch.no_grad():
            torch.testing.assert_close(TapSumLayer(narrow_in)(x_narrow), narrow_in(x_narrow),
                                       rtol=0, atol=TOLERANCE)
            torch.testing.assert_close(TapPlanesLayer(narrow_out)(x_wide), narrow_out(x_wide),
                                       rtol=0, atol=TOLERANCE)


def test_tap_rewrites_compile_and_follow_autocast():
    plain, rewritten = tap_rewritten(seed=12)
    ir, vis = real_input(height=48, width=64)
    compiled = torch.compile(rewritten, fullgraph=True, dynamic=False)
    with torch.no_grad():
        expected = plain(ir, vis)
        torch.testing.assert_close(compiled(ir, vis), expected, rtol=0, atol=TOLERANCE)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            f1 = rewritten.encoder.conv1(ir)
            reduced = rewritten(ir, vis)
    assert f1.dtype == torch.bfloat16  # what the conv it replaces returns under autocast
    assert (reduced.float() - expected).abs().max() < 4 / 255


def test_prelu_becomes_leaky_relu_with_the_learned_slope():
    model = fold_model(random_model(seed=5))
    slopes = [float(m.weight.detach()) for m in model.modules() if isinstance(m, nn.PReLU)]
    prelu_as_leaky_relu(model)
    assert not any(isinstance(m, nn.PReLU) for m in model.modules())
    assert [m.slope for m in model.modules() if isinstance(m, LeakyReLU)] == pytest.approx(slopes)
    x = torch.randn(1, 64, 5, 5)
    layer = model.encoder.conv2
    assert torch.equal(layer[3](x), torch.where(x >= 0, x, layer[3].slope * x))


def test_concat_free_decoder_matches_and_has_no_concatenation():
    model = fold_model(random_model(seed=6))
    fold_zero_padding(model)
    decoder = ConcatFreeDecoder(model.decoder).eval()
    generator = torch.Generator().manual_seed(7)
    features = Features(*(torch.randn(1, 64, 19, 23, generator=generator) for _ in range(4)))
    with torch.no_grad():
        torch.testing.assert_close(decoder(features), model.decoder(features), rtol=0, atol=TOLERANCE)
    program = torch.export.export(decoder, (features,))
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert not any("cat" in target for target in targets)
    assert sum("conv2d" in str(node.target) for node in program.graph.nodes) == 6
