"""The shipped default weights: they load, say how they were made, and really reconstruct/fuse."""

import numpy as np
import torch

from conftest import read_pair
from streamfuse.baselines import average_fusion
from streamfuse.checkpoint import load_checkpoint
from streamfuse.fuser import DEFAULT_WEIGHTS, Fuser
from streamfuse.metrics import average_gradient, entropy, standard_deviation


def test_shipped_weights_carry_their_training_record():
    model, metadata = load_checkpoint(DEFAULT_WEIGHTS)
    assert DEFAULT_WEIGHTS.stat().st_size < 2_000_000
    assert metadata["epochs_completed"] >= 1 and metadata["pairs"] == 180
    assert metadata["training"]["optim"]["epochs"] == metadata["epochs_completed"]
    assert "flir-train" in metadata["data"]


def test_shipped_weights_reconstruct_an_unseen_image():
    model, _ = load_checkpoint(DEFAULT_WEIGHTS)
    _, vis = read_pair("flir-test", 3)
    image = torch.from_numpy(vis).float()[None, None] / 255
    with torch.inference_mode():
        reconstructed = model(image)
    mse = float(((reconstructed - image) ** 2).mean())
    psnr = 10 * np.log10(1 / mse)
    assert psnr > 25.0, f"autoencoder PSNR {psnr:.1f} dB on a test image"


def test_default_fusion_has_more_contrast_and_detail_than_averaging():
    ir, vis = read_pair("tno", 4)
    fused = Fuser.from_weights().fuse(ir, vis)
    average = average_fusion(ir, vis)
    assert entropy(fused) > entropy(average)
    assert standard_deviation(fused) > standard_deviation(average)
    assert average_gradient(fused) > average_gradient(average)
