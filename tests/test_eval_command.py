"""`streamfuse eval`: the table's numbers are the metrics of the images each method produces."""

import json
import shutil

import cv2
import numpy as np
import pytest
import torch

from streamfuse.baselines import average_fusion
from streamfuse.checkpoint import save_checkpoint
from streamfuse.cli import main
from streamfuse.fuser import Fuser
from streamfuse.metrics import METRICS, evaluate
from streamfuse.model import DIDFuse
from conftest import read_pair


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalset")
    (root / "data" / "ir").mkdir(parents=True)
    (root / "data" / "vis").mkdir(parents=True)
    pairs = {}
    for index in range(3):
        ir, vis = read_pair("tno", index)
        ir, vis = ir[100:164, 200:272].copy(), vis[100:164, 200:272].copy()
        cv2.imwrite(str(root / "data" / "ir" / f"{index:03d}.png"), ir)
        cv2.imwrite(str(root / "data" / "vis" / f"{index:03d}.png"), vis)
        pairs[f"{index:03d}"] = (ir, vis)
    torch.manual_seed(11)
    weights = save_checkpoint(DIDFuse(), root / "w.pt")
    return root, pairs, weights


def test_table_cells_are_metrics_of_each_methods_output(small_set, capsys):
    root, pairs, weights = small_set
    report = root / "report.json"
    assert main(["eval", "--data", str(root / "data"), "--rules", "sum,saliency+cam,pixel-average",
                 "--weights", str(weights), "--json", str(report), "--csv", str(root / "t.csv")]) == 0
    printed = capsys.readouterr().out
    assert "saliency+cam" in printed and "± " in printed and all(m in printed for m in METRICS)
    result = json.loads(report.read_text())
    assert result["methods"] == ["sum", "saliency+cam", "pixel-average"]
    fuser = Fuser.from_weights(weights, "saliency+cam")
    expected = [evaluate(fuser.fuse(ir, vis), ir, vis) for ir, vis in pairs.values()]
    expected_average = [evaluate(average_fusion(ir, vis), ir, vis) for ir, vis in pairs.values()]
    for metric in METRICS:
        assert np.allclose(result["per_pair"]["saliency+cam"][metric], [e[metric] for e in expected])
        assert np.allclose(result["per_pair"]["pixel-average"][metric], [e[metric] for e in expected_average])
        values = result["per_pair"]["sum"][metric]
        assert result["summary"]["sum"][metric]["mean"] == pytest.approx(np.mean(values))
        assert result["summary"]["sum"][metric]["std"] == pytest.approx(np.std(values))
    assert (root / "t.csv").read_text().splitlines()[0].startswith("metric,sum mean,sum std")


def test_scores_already_fused_images(small_set):
    root, pairs, weights = small_set
    fused_dir = root / "mine"
    fused_dir.mkdir()
    for stem, (ir, vis) in pairs.items():
        cv2.imwrite(str(fused_dir / f"{stem}.png"), np.maximum(ir, vis))
    report = root / "fused.json"
    assert main(["eval", "--data", str(root / "data"), "--fused", str(fused_dir), "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    assert result["methods"] == ["mine"]
    expected = [evaluate(np.maximum(ir, vis), ir, vis)["EN"] for ir, vis in pairs.values()]
    assert np.allclose(result["per_pair"]["mine"]["EN"], expected)


def test_unknown_rule_and_missing_fused_image(small_set, capsys):
    root, pairs, weights = small_set
    assert main(["eval", "--data", str(root / "data"), "--rules", "max"]) == 2
    assert "max" in capsys.readouterr().err
    empty = root / "empty"
    empty.mkdir(exist_ok=True)
    assert main(["eval", "--data", str(root / "data"), "--fused", str(empty)]) == 2
    assert "no fused image for pair '000'" in capsys.readouterr().err


def test_bad_pairs_are_left_out_and_named_not_fatal(small_set, tmp_path, capsys):
    root, pairs, weights = small_set
    data = tmp_path / "data"
    shutil.copytree(root / "data", data)
    (data / "ir" / "001.png").write_bytes(b"not a png")  # corrupt
    ir, vis = pairs["002"]
    cv2.imwrite(str(data / "vis" / "002.png"), cv2.resize(vis, (80, 64)))  # another size
    cv2.imwrite(str(data / "ir" / "003.png"), ir)  # no visible partner
    report = tmp_path / "r.json"
    assert main(["eval", "--data", str(data), "--rules", "pixel-average", "--json", str(report)]) == 1
    captured = capsys.readouterr()
    assert ": 1 pairs (3 left out, listed below)" in captured.out
    assert "001.png: cannot decode the image" in captured.err
    assert "002.png is 72x64 but" in captured.err and "is 80x64" in captured.err
    assert "003: only in one of ir/ and vis/" in captured.err
    result = json.loads(report.read_text())
    assert result["pairs"] == ["000"] and len(result["skipped"]) == 3
    ir0, vis0 = pairs["000"]
    assert result["per_pair"]["pixel-average"]["EN"] == pytest.approx([evaluate(average_fusion(ir0, vis0), ir0, vis0)["EN"]])


def test_unwritable_report_fails_before_scoring(small_set, tmp_path, capsys):
    root, _, _ = small_set
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["eval", "--data", str(root / "data"), "--rules", "pixel-average", "--csv", str(blocker / "t.csv")]) == 2
    captured = capsys.readouterr()
    assert "--csv" in captured.err and "is a file, not a folder" in captured.err
    assert "pairs" not in captured.out  # no table: nothing was scored
