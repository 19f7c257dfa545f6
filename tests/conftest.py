"""Shared fixtures: where the real image pairs live and small helpers to read them."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
# The data sets sit beside the checkout (../shared/data); STREAMFUSE_DATA overrides.
DATA_ROOT = Path(os.environ.get("STREAMFUSE_DATA", REPO_ROOT.parent / "shared" / "data"))


def data_set(name: str) -> Path:
    path = DATA_ROOT / name
    if not (path / "ir").is_dir():
        pytest.skip(f"real pairs not found at {path} (set STREAMFUSE_DATA to ../shared/data)")
    return path


def read_pair(set_name: str, index: int) -> tuple[np.ndarray, np.ndarray]:
    """One real aligned pair as two (H, W) uint8 arrays, the index-th pair of a data set."""
    root = data_set(set_name)
    ir_path = sorted((root / "ir").iterdir())[index]
    vis_path = next((root / "vis").glob(ir_path.stem + ".*"))
    ir = cv2.imread(str(ir_path), cv2.IMREAD_GRAYSCALE)
    vis = cv2.imread(str(vis_path), cv2.IMREAD_GRAYSCALE)
    return ir, vis


@pytest.fixture
def tno_pair() -> tuple[np.ndarray, np.ndarray]:
    return read_pair("tno", 4)


@pytest.fixture
def flir_pair() -> tuple[np.ndarray, np.ndarray]:
    return read_pair("flir-test", 0)


@pytest.fixture(scope="module")
def single_thread():
    """One torch thread for a module of tiny tensors: on 2 shared cores, intra-op threads only
    add contention. Use with ``pytestmark = pytest.mark.usefixtures("single_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
