"""`streamfuse export --format onnx`: the file is valid ONNX, has dynamic height/width and, run
back by a runtime, gives what PyTorch gives on a real pair of another size."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from streamfuse.checkpoint import save_checkpoint
from streamfuse.cli import main
from streamfuse.export import onnx_runtime_name, run_onnx
from streamfuse.fuser import FusionNet
from streamfuse.model import DIDFuse
from conftest import read_pair
from test_model import randomise_batchnorm

missing_exporter = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
needs_exporter = pytest.mark.skipif(
    bool(missing_exporter), reason=f"{', '.join(missing_exporter)} not installed (pip install 'streamfuse[onnx]')"
)


@pytest.fixture(scope="module")
def model() -> DIDFuse:
    torch.manual_seed(5)
    network = DIDFuse()
    randomise_batchnorm(network, seed=5)
    return network.eval()


@needs_exporter
def test_onnx_file_has_dynamic_size_and_matches_pytorch(model, tmp_path, capsys):
    weights = save_checkpoint(model, tmp_path / "w.pt")
    path = tmp_path / "didfuse.onnx"
    assert main(["export", "--format", "onnx", "-o", str(path), "--weights", str(weights),
                 "--rule", "saliency+cam"]) == 0
    assert "ONNX checker passed" in capsys.readouterr().out

    import onnx

    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["ir", "vis"] and [o.name for o in graph.output] == ["fused"]
    for value in graph.input:
        dims = value.type.tensor_type.shape.dim
        assert [d.dim_value for d in dims[:2]] == [1, 1]
        assert all(d.dim_param and not d.dim_value for d in dims[2:])  # height, width symbolic

    if onnx_runtime_name() is None:
        pytest.skip("onnxruntime/OpenVINO not installed: the file was checked but not run back")
    ir, vis = (image[:77, :101] for image in read_pair("flir-test", 0))
    ir_tensor, vis_tensor = (torch.from_numpy(x).float()[None, None] / 255 for x in (ir, vis))
    with torch.inference_mode():
        expected = FusionNet(model, "saliency+cam").eval()(ir_tensor, vis_tensor).numpy()
    produced = run_onnx(path, ir_tensor.numpy(), vis_tensor.numpy())
    assert produced.shape == (1, 1, 77, 101)
    assert expected.std() > 1e-3
    assert np.abs(produced - expected).max() <= 1e-3


def test_missing_exporter_packages_give_an_install_hint(tmp_path, model, capsys, monkeypatch):
    # Hide the exporter packages from the package lookup, as on a machine without the extra.
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name in ("onnx", "onnxscript") else real_find_spec(name, *args))
    weights = save_checkpoint(model, tmp_path / "w.pt")
    assert main(["export", "-o", str(tmp_path / "x.onnx"), "--weights", str(weights)]) == 2
    error = capsys.readouterr().err.strip()
    assert "pip install 'streamfuse[onnx]'" in error and "\n" not in error
