"""Training: the loss terms, repeatable runs, and resume after a kill gives the same weights."""

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from conftest import REPO_ROOT, data_set, read_pair
from streamfuse.checkpoint import load_checkpoint
from streamfuse.cli import main
from streamfuse.config import load_yaml
from streamfuse.errors import StreamFuseError
from streamfuse.losses import LossConfig, didfuse_loss, sobel_gradients, ssim
from streamfuse.metrics import ssim_index
from streamfuse.model import DIDFuse
from streamfuse.train import TrainConfig, learning_rate, OptimConfig


def test_ssim_loss_term_agrees_with_the_numpy_metric_on_a_real_crop():
    ir, vis = read_pair("flir-test", 1)
    a, b = ir[40:104, 60:140], vis[40:104, 60:140]
    as_tensor = lambda x: torch.from_numpy(x.astype(np.float64))[None, None] / 255  # noqa: E731
    assert float(ssim(as_tensor(a), as_tensor(b))) == pytest.approx(ssim_index(a, b), abs=1e-9)
    assert float(ssim(as_tensor(a), as_tensor(a))) == pytest.approx(1.0, abs=1e-12)


def test_sobel_gradient_of_a_ramp():
    ramp = torch.arange(12, dtype=torch.float64).repeat(9, 1)[None, None]  # +1 per column
    gx, gy = sobel_gradients(ramp)
    assert torch.allclose(gx[..., 1:-1], torch.full_like(gx[..., 1:-1], 1.0))
    assert torch.allclose(gy, torch.zeros_like(gy))


def test_loss_terms_follow_equation_5():
    torch.manual_seed(0)
    model = DIDFuse()
    ir, vis = torch.rand(2, 1, 24, 24), torch.rand(2, 1, 24, 24)
    config = LossConfig()
    with torch.no_grad():
        fi, fv = model.encode(ir), model.encode(vis)
        terms = didfuse_loss(ir, vis, fi, fv, model.decode(fi), model.decode(fv), config)
    expected = (terms["base_gap"] - 0.05 * terms["detail_gap"] + 2 * terms["ir_recon"]
                + 2 * terms["vis_recon"] + 10 * terms["vis_gradient"])
    assert float(terms["total"]) == pytest.approx(float(expected), rel=1e-6)
    assert float(terms["base_gap"]) == pytest.approx(float(torch.tanh(((fv.base - fi.base) ** 2).mean())), rel=1e-6)
    # identical inputs reconstructed perfectly: no reconstruction or gradient loss, no gap
    with torch.no_grad():
        same = didfuse_loss(ir, ir, fi, fi, ir, ir, config)
    assert float(same["ir_recon"]) == pytest.approx(0.0, abs=1e-6) and float(same["vis_gradient"]) == 0.0
    assert float(same["base_gap"]) == 0.0


def test_step_schedule():
    optim = OptimConfig()
    assert [learning_rate(optim, e) for e in (0, 39, 40, 79, 80, 119)] == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5])


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """Eight real training pairs, downscaled so a step takes milliseconds."""
    root = tmp_path_factory.mktemp("tiny")
    source = data_set("flir-train")
    for sub in ("ir", "vis"):
        (root / sub).mkdir()
        for path in sorted((source / sub).iterdir())[:8]:
            image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            cv2.imwrite(str(root / sub / f"{path.stem}.png"), cv2.resize(image, (48, 32), interpolation=cv2.INTER_AREA))
    return root


def write_config(path: Path, data: Path, out_dir: Path, epochs: int = 3) -> Path:
    config = {
        "data": {"train_dir": str(data), "crop": 24},
        "optim": {"epochs": epochs, "batch_size": 3, "lr_decay_epochs": [2]},
        "model": {"features": 8},
        "precision": "fp32", "threads": 1, "seed": 5, "out_dir": str(out_dir),
    }
    path.write_text(yaml.safe_dump(config))
    return path


def weights_of(path: Path) -> dict:
    return load_checkpoint(path)[0].state_dict()


def test_run_writes_history_curve_and_checkpoint_and_is_repeatable(tmp_path, tiny_data):
    first = write_config(tmp_path / "a.yaml", tiny_data, tmp_path / "run-a")
    second = write_config(tmp_path / "b.yaml", tiny_data, tmp_path / "run-b")
    assert main(["train", str(first)]) == 0
    assert main(["train", str(second)]) == 0
    rows = list(csv.DictReader(open(tmp_path / "run-a" / "losses.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert {"total", "base_gap", "detail_gap", "ir_recon", "vis_recon", "vis_gradient"} <= set(rows[0])
    assert float(rows[2]["lr"]) == pytest.approx(1e-4)
    curve = cv2.imread(str(tmp_path / "run-a" / "losses.png"))
    assert curve is not None and curve.std() > 0
    a, b = weights_of(tmp_path / "run-a" / "model.pt"), weights_of(tmp_path / "run-b" / "model.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    _, metadata = load_checkpoint(tmp_path / "run-a" / "model.pt")
    assert metadata["epochs_completed"] == 3 and metadata["training"]["optim"]["epochs"] == 3


def test_killed_run_resumes_to_the_same_weights(tmp_path, tiny_data):
    epochs = 4
    reference = write_config(tmp_path / "ref.yaml", tiny_data, tmp_path / "ref", epochs)
    assert main(["train", str(reference)]) == 0
    config = write_config(tmp_path / "killed.yaml", tiny_data, tmp_path / "killed", epochs)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-m", "streamfuse.cli", "train", str(config)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = tmp_path / "killed" / "last.pt"
    deadline = time.monotonic() + 120
    try:
        # Kill as soon as the first epoch is on disk: the process is then inside epoch 2.
        while not state.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    saved_epoch = torch.load(state, weights_only=True)["epoch"]
    assert saved_epoch >= 1 and saved_epoch < epochs, "the kill should land inside the run"
    with pytest.raises(StreamFuseError, match="--resume"):
        main_raising(["train", str(config)])
    assert main(["train", str(config), "--resume"]) == 0
    a, b = weights_of(tmp_path / "ref" / "model.pt"), weights_of(tmp_path / "killed" / "model.pt")
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)
    rows = list(csv.DictReader(open(tmp_path / "killed" / "losses.csv")))
    assert [r["epoch"] for r in rows] == [str(e) for e in range(1, epochs + 1)]


def main_raising(argv):
    from streamfuse.commands.train import run
    from streamfuse.cli import build_parser
    return run(build_parser().parse_args(argv))


def test_bf16_autocast_step_runs_on_this_cpu(tmp_path, tiny_data):
    config = write_config(tmp_path / "bf16.yaml", tiny_data, tmp_path / "bf16", epochs=1)
    assert main(["train", str(config), "--set", "precision=bf16"]) == 0
    assert (tmp_path / "bf16" / "model.pt").is_file()


def test_nothing_to_resume_is_refused_before_any_work(tmp_path, tiny_data):
    config = write_config(tmp_path / "fresh.yaml", tiny_data, tmp_path / "fresh")
    with pytest.raises(StreamFuseError, match=r"fresh/last.pt: nothing to resume"):
        main_raising(["train", str(config), "--resume"])
    assert not (tmp_path / "fresh" / "model.pt").exists()


@pytest.mark.parametrize("setting, message", [
    ("optim.epochs=-1", r"key 'optim.epochs' must be at least 1, got -1"),
    ("optim.batch_size=0", r"key 'optim.batch_size' must be at least 1"),
    ("optim.lr=0", r"key 'optim.lr' must be positive"),
    ("data.crop=4", r"key 'data.crop' must be at least 8"),
])
def test_impossible_settings_are_refused(tmp_path, tiny_data, setting, message):
    config = write_config(tmp_path / "bad.yaml", tiny_data, tmp_path / "bad")
    with pytest.raises(StreamFuseError, match=message):
        main_raising(["train", str(config), "--set", setting])
    assert not (tmp_path / "bad" / "model.pt").exists()


def test_pairs_that_cannot_train_are_named(tmp_path, tiny_data):
    config = write_config(tmp_path / "c.yaml", tiny_data, tmp_path / "run")
    with pytest.raises(StreamFuseError, match=r"is 48x32, smaller than data.crop 40: lower data.crop to at most 32"):
        main_raising(["train", str(config), "--set", "data.crop=40"])
    mixed = tmp_path / "mixed"
    shutil.copytree(tiny_data, mixed)
    first_vis = sorted((mixed / "vis").iterdir())[0]
    cv2.imwrite(str(first_vis), cv2.resize(cv2.imread(str(first_vis), cv2.IMREAD_GRAYSCALE), (50, 32)))
    config = write_config(tmp_path / "m.yaml", mixed, tmp_path / "run")
    with pytest.raises(StreamFuseError, match=rf"is 48x32 but .*{first_vis.name} is 50x32: training needs aligned pairs"):
        main_raising(["train", str(config)])


def test_unwritable_out_dir_fails_before_training(tmp_path, tiny_data):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    config = write_config(tmp_path / "o.yaml", tiny_data, blocker / "run")
    with pytest.raises(StreamFuseError, match=r"out_dir .*file/run: .*file is a file, not a folder"):
        main_raising(["train", str(config)])


def test_config_errors_name_the_key_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  epochs: 10\n  batchsize: 4\n")
    with pytest.raises(StreamFuseError, match=r"bad.yaml:3: unknown key 'optim.batchsize'"):
        load_yaml(TrainConfig, bad)
    bad.write_text("optim:\n  epochs: ten\n")
    with pytest.raises(StreamFuseError, match=r"bad.yaml:2: key 'optim.epochs' must be an integer"):
        load_yaml(TrainConfig, bad)
    shipped = load_yaml(TrainConfig, REPO_ROOT / "configs" / "train.yaml")
    assert shipped.optim.epochs == 120 and shipped.loss.alpha1 == 0.05 and shipped.optim.lr_decay_epochs == [40, 80]
