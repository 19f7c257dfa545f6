"""`streamfuse fuse` end to end: files and folders, colour, sizes, and bad input."""

import cv2
import numpy as np
import pytest
import torch

from streamfuse.checkpoint import save_checkpoint
from streamfuse.cli import main
from streamfuse.fuser import Fuser, merge_luma, split_luma
from streamfuse.model import DIDFuse
from conftest import read_pair
from pipeline_helpers import HEIGHT, WIDTH, decode_video, ir_scene, vis_scene, write_video
from test_checkpoint import write_authors_pair


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(7)
    return save_checkpoint(DIDFuse(), tmp_path_factory.mktemp("w") / "random.pt")


def small_real_pair(set_name="tno", index=4, size=(96, 72)):
    ir, vis = read_pair(set_name, index)
    return ir[: size[1], : size[0]].copy(), vis[: size[1], : size[0]].copy()


def write_pair(folder, stem, ir, vis, ext=".png"):
    (folder / "ir").mkdir(parents=True, exist_ok=True)
    (folder / "vis").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / "ir" / f"{stem}{ext}"), ir)
    cv2.imwrite(str(folder / "vis" / f"{stem}{ext}"), vis)
    return folder / "ir" / f"{stem}{ext}", folder / "vis" / f"{stem}{ext}"


def test_imported_weights_and_sum_rule_give_a_png_of_the_input_size(tmp_path):
    write_authors_pair(tmp_path)
    assert main(["import-weights", "--encoder", str(tmp_path / "Encoder_weight_IJCAI.pkl"),
                 "--decoder", str(tmp_path / "Decoder_weight_IJCAI.pkl"), "-o", str(tmp_path / "w.pt")]) == 0
    ir, vis = small_real_pair("flir-test", 0, (101, 77))
    ir_path, vis_path = write_pair(tmp_path, "a", ir, vis, ".jpg")
    out = tmp_path / "fused.png"
    assert main(["fuse", "--ir", str(ir_path), "--vis", str(vis_path), "-o", str(out),
                 "--weights", str(tmp_path / "w.pt"), "--rule", "sum"]) == 0
    fused = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert fused.shape == (77, 101) and fused.dtype == np.uint8


def test_output_is_rounded_network_output(tmp_path, weights):
    ir, vis = small_real_pair()
    ir_path, vis_path = write_pair(tmp_path, "p", ir, vis)
    assert main(["fuse", "--ir", str(ir_path), "--vis", str(vis_path), "-o", str(tmp_path / "o.png"),
                 "--weights", str(weights), "--rule", "saliency+cam"]) == 0
    written = cv2.imread(str(tmp_path / "o.png"), cv2.IMREAD_UNCHANGED)
    fuser = Fuser.from_weights(weights, "saliency+cam")
    as_float = fuser.fuse_tensors(torch.from_numpy(ir)[None, None].float() / 255,
                                  torch.from_numpy(vis)[None, None].float() / 255)[0, 0].numpy()
    assert np.array_equal(written, np.round(as_float.astype(np.float64) * 255).astype(np.uint8))
    assert written.std() > 1.0  # a real image, not a constant


def test_colour_visible_keeps_its_colour(tmp_path, weights):
    ir, vis_gray = small_real_pair()
    # A colour visible frame: the real visible image with a mild colour cast (saturated colours
    # would leave the RGB gamut once the luminance changes, and clipping then shifts Y).
    gray3 = cv2.cvtColor(vis_gray, cv2.COLOR_GRAY2BGR)
    vis_colour = cv2.addWeighted(gray3, 0.85, cv2.applyColorMap(vis_gray, cv2.COLORMAP_JET), 0.15, 0)
    ir_path, vis_path = write_pair(tmp_path, "c", ir, vis_colour)
    out = tmp_path / "colour.png"
    assert main(["fuse", "--ir", str(ir_path), "--vis", str(vis_path), "-o", str(out),
                 "--weights", str(weights), "--rule", "saliency+cam"]) == 0
    fused = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert fused.shape == vis_colour.shape
    fused_ycrcb = cv2.cvtColor(fused, cv2.COLOR_BGR2YCrCb).astype(int)
    vis_ycrcb = cv2.cvtColor(vis_colour, cv2.COLOR_BGR2YCrCb).astype(int)
    fuser = Fuser.from_weights(weights, "saliency+cam")
    luma, chroma = split_luma(vis_colour)
    expected_luma = fuser.fuse(ir, luma)
    assert np.array_equal(fused, merge_luma(expected_luma, chroma))
    # BGR holds YCrCb only up to rounding (and gamut clipping at the extremes).
    assert np.mean(np.abs(fused_ycrcb[..., 0] - expected_luma)) < 1.0
    assert np.mean(np.abs(fused_ycrcb[..., 1:] - vis_ycrcb[..., 1:])) < 1.5
    assert np.array_equal(merge_luma(*split_luma(vis_gray)), vis_gray)


def test_gray_in_gray_out_on_a_tno_pair(tmp_path, weights):
    ir, vis = read_pair("tno", 4)
    ir_path, vis_path = write_pair(tmp_path, "t", ir, vis)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    assert main(["fuse", "--ir", str(ir_path), "--vis", str(vis_path), "-o", str(out_dir),
                 "--weights", str(weights)]) == 0
    fused = cv2.imread(str(out_dir / "t.png"), cv2.IMREAD_UNCHANGED)
    assert fused.shape == vis.shape


def test_size_mismatch_is_named_or_resized(tmp_path, weights, capsys):
    ir, vis = small_real_pair()
    ir_path, vis_path = write_pair(tmp_path, "m", cv2.resize(ir, (48, 36)), vis)
    args = ["fuse", "--ir", str(ir_path), "--vis", str(vis_path), "-o", str(tmp_path / "m.png"), "--weights", str(weights)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "48x36" in err and "96x72" in err and "--resize" in err and len(err.splitlines()) == 1
    assert main(args + ["--resize"]) == 0
    assert cv2.imread(str(tmp_path / "m.png"), cv2.IMREAD_UNCHANGED).shape == (72, 96)


def test_images_and_folders_register_with_a_calibration(tmp_path, weights, capsys):
    from streamfuse.calibration import (
        Calibration, IrRegistrar, save_calibration, visible_outside_ir_view, warp_valid_mask,
    )

    # A narrower IR camera at 2/3 of the visible resolution: it sees the visible frame's centre.
    ir, vis = small_real_pair()
    narrow_ir = cv2.resize(ir[12:60, 16:80], (48, 36), interpolation=cv2.INTER_AREA)
    calibration = Calibration(ir_size=(48, 36), vis_size=(96, 72),
                              homography=np.array([[4 / 3, 0, 16], [0, 4 / 3, 12], [0, 0, 1.0]]))
    save_calibration(calibration, tmp_path / "pair.yaml")
    ir_path, vis_path = write_pair(tmp_path / "in", "p", narrow_ir, vis)
    base = ["fuse", "--weights", str(weights), "--calibration", str(tmp_path / "pair.yaml")]
    assert main(base + ["--ir", str(ir_path), "--vis", str(vis_path), "-o", str(tmp_path / "o.png")]) == 0
    assert main(base + ["--ir", str(tmp_path / "in" / "ir"), "--vis", str(tmp_path / "in" / "vis"),
                        "-o", str(tmp_path / "folder")]) == 0
    registrar = IrRegistrar(calibration)
    fused = Fuser.from_weights(weights).fuse(registrar(narrow_ir), vis)
    expected = visible_outside_ir_view(fused, vis, registrar.view_weight)
    outside = ~warp_valid_mask(calibration)
    for written in (tmp_path / "o.png", tmp_path / "folder" / "p.png"):
        image = cv2.imread(str(written), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(image, expected)
        assert outside.sum() > 1000 and np.array_equal(image[outside], vis[outside])
    # An IR image of another size than the calibration's, and --resize beside --calibration.
    wrong_path, _ = write_pair(tmp_path / "wrong", "w", ir, vis)
    capsys.readouterr()
    assert main(base + ["--ir", str(wrong_path), "--vis", str(vis_path), "-o", str(tmp_path / "w.png")]) == 2
    error = capsys.readouterr().err.strip()
    assert str(wrong_path) in error and "ir_size is 48x36" in error and len(error.splitlines()) == 1
    assert main(base + ["--ir", str(ir_path), "--vis", str(vis_path), "-o", str(tmp_path / "r.png"),
                        "--resize"]) == 2
    assert "pass one" in capsys.readouterr().err


def test_folder_run_goes_on_past_bad_pairs_and_reports_them(tmp_path, weights, capsys):
    data = tmp_path / "data"
    for index, stem in enumerate(["001", "002", "003"]):
        write_pair(data, stem, *small_real_pair("flir-test", index, (64, 48)))
    (data / "vis" / "002.png").write_bytes(b"not a png at all")
    cv2.imwrite(str(data / "ir" / "004.png"), np.full((48, 64), 9, np.uint8))  # no visible partner
    out = tmp_path / "out"
    code = main(["fuse", "--ir", str(data / "ir"), "--vis", str(data / "vis"), "-o", str(out), "--weights", str(weights)])
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == ["001.png", "003.png"]
    err = capsys.readouterr().err
    assert err.count("002.png: cannot decode") == 1 and err.count("004: only in one") == 1


def test_missing_file_and_unknown_rule_are_one_line_errors(tmp_path, weights, capsys):
    ir, vis = small_real_pair()
    ir_path, vis_path = write_pair(tmp_path, "x", ir, vis)
    assert main(["fuse", "--ir", str(tmp_path / "nope.png"), "--vis", str(vis_path), "-o", str(tmp_path / "o.png"),
                 "--weights", str(weights)]) == 2
    err = capsys.readouterr().err.strip()
    assert "nope.png" in err and len(err.splitlines()) == 1
    assert main(["fuse", "--ir", str(ir_path), "--vis", str(vis_path), "-o", str(tmp_path / "o.png"),
                 "--weights", str(weights), "--rule", "median"]) == 2
    err = capsys.readouterr().err.strip()
    assert "median" in err and "saliency+cam" in err and len(err.splitlines()) == 1


def test_output_where_no_folder_can_be_made_is_a_one_line_error(tmp_path, weights, capsys):
    ir, vis = small_real_pair()
    ir_path, vis_path = write_pair(tmp_path, "x", ir, vis)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    code = main(["fuse", "--ir", str(ir_path), "--vis", str(vis_path), "-o", str(blocker / "sub" / "o.png"),
                 "--weights", str(weights)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err == (f"streamfuse fuse: error: -o {blocker / 'sub' / 'o.png'}: {blocker} is a file, "
                   "not a folder; name a path in a folder")


def test_unwritable_outputs_fail_before_any_work(tmp_path, weights, capsys):
    data = tmp_path / "data"
    write_pair(data, "001", *small_real_pair("flir-test", 0, (64, 48)))
    video = write_video(tmp_path / "ir.mp4", [([ir_scene(i / 10) for i in range(3)], 10)])
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    for inputs, output in [((data / "ir", data / "vis"), blocker / "fused"),
                           ((video, video), blocker / "fused.mp4")]:
        code = main(["fuse", "--ir", str(inputs[0]), "--vis", str(inputs[1]), "-o", str(output),
                     "--weights", str(weights)])
        captured = capsys.readouterr()
        assert code == 2 and f"error: -o {output}: {blocker} is a file" in captured.err
        assert "fusing" not in captured.err  # no progress bar: it failed before the work


def test_a_corrupt_image_gives_our_one_line_only(tmp_path, weights, capfd):
    # OpenCV's PNG decoder logs its own lines to the process's stderr: capfd sees them.
    ir, vis = small_real_pair()
    _, vis_path = write_pair(tmp_path, "x", ir, vis)
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    assert main(["fuse", "--ir", str(garbage), "--vis", str(vis_path), "-o", str(tmp_path / "o.png"),
                 "--weights", str(weights)]) == 2
    assert capfd.readouterr().err.strip().splitlines() == [
        f"streamfuse fuse: error: {garbage}: cannot decode the image (corrupt or unsupported format)"]


def test_folder_arguments_that_cannot_work_are_named(tmp_path, weights, capsys):
    data = tmp_path / "data"
    write_pair(data, "001", *small_real_pair("flir-test", 0, (64, 48)))
    (tmp_path / "empty" / "ir").mkdir(parents=True)
    (tmp_path / "empty" / "vis").mkdir()
    for arguments, message in [
        (["--ir", tmp_path / "missing", "--vis", data / "vis", "-o", tmp_path / "o"],
         f"--ir {tmp_path / 'missing'}: no such image, folder or video"),
        (["--ir", data / "ir", "--vis", data / "vis", "-o", tmp_path / "o.png"],
         "folders of pairs are fused into a folder"),
        (["--ir", tmp_path / "empty" / "ir", "--vis", tmp_path / "empty" / "vis", "-o", tmp_path / "o"],
         "hold no images (.bmp, .jpeg"),
    ]:
        assert main(["fuse", *map(str, arguments), "--weights", str(weights)]) == 2
        error = capsys.readouterr().err.strip()
        assert message in error and "\n" not in error
    assert not (tmp_path / "o.png").exists() and not (tmp_path / "o").exists()


def test_two_videos_fuse_into_one_video_frame_by_frame(tmp_path):
    # Real PyAV encode and decode on both sides; the CLI runs the streaming pipeline.
    ir_path = write_video(tmp_path / "ir.mp4", [([ir_scene(i / 10) for i in range(12)], 10)])
    vis_path = write_video(tmp_path / "vis.mkv", [([vis_scene(i / 10) for i in range(12)], 10)], codec="mpeg4")
    out = tmp_path / "fused.mp4"
    assert main(["fuse", "--ir", str(ir_path), "--vis", str(vis_path), "-o", str(out),
                 "--engine", "eager", "--precision", "fp32"]) == 0
    times, fused = decode_video(out, fmt="bgr24")
    (_, ir_frames), (_, vis_frames) = decode_video(ir_path), decode_video(vis_path, fmt="bgr24")
    assert len(fused) == 12 and fused[0].shape == (48, 64, 3)
    assert times == pytest.approx([i / 10 for i in range(12)])
    fuser = Fuser.from_weights(None, "saliency+cam")  # the shipped weights, as the CLI's default
    for k in (0, 6, 11):
        # H.264 at crf 20 in 4:2:0 is lossy (3-5 levels on this saturated colour checker):
        # compare the mean error, and against pairing the IR frame one off (about 50 levels).
        error = np.abs(fused[k].astype(float) - fuser.fuse(ir_frames[k], vis_frames[k])).mean()
        one_off = np.abs(fused[k].astype(float) - fuser.fuse(ir_frames[(k + 1) % 12], vis_frames[k])).mean()
        assert error < 8 and one_off > 5 * error


def test_video_arguments_that_cannot_work_are_one_line_errors(tmp_path, capsys):
    video = write_video(tmp_path / "ir.mp4", [([ir_scene(i / 10) for i in range(3)], 10)])
    image = tmp_path / "vis.png"
    cv2.imwrite(str(image), vis_scene(0))
    for arguments, message in [
        (["--ir", video, "--vis", image, "-o", tmp_path / "o.mp4"], f"--vis {image} is not a video"),
        (["--ir", video, "--vis", tmp_path / "none.mp4", "-o", tmp_path / "o.mp4"], "none.mp4: no such video file"),
        (["--ir", video, "--vis", video, "-o", tmp_path / "o.png"], "videos are fused into a video file"),
        (["--ir", video, "--vis", video, "-o", tmp_path / "o.mp4", "--resize"], "pass --calibration"),
        (["--ir", image, "--vis", image, "-o", tmp_path / "o.png", "--calibration", tmp_path / "c.yaml"],
         "c.yaml: calibration file not found"),
        # Videos give the flags' own errors too, not the pipeline config's ("inference.weights").
        (["--ir", video, "--vis", video, "-o", tmp_path / "o.mp4", "--calibration", tmp_path / "c.yaml"],
         f"error: {tmp_path / 'c.yaml'}: calibration file not found"),
        (["--ir", video, "--vis", video, "-o", tmp_path / "o.mp4", "--weights", tmp_path / "w.pt"],
         f"error: {tmp_path / 'w.pt'}: no such checkpoint file (give --weights a .pt file)"),
    ]:
        assert main(["fuse", *map(str, arguments)]) == 2
        error = capsys.readouterr().err.strip()
        assert error.startswith("streamfuse fuse: error: ") and message in error and "\n" not in error
    assert not (tmp_path / "o.mp4").exists()


def test_videos_of_different_sizes_without_calibration_name_both_files(tmp_path, capsys):
    ir_video = write_video(tmp_path / "ir.mp4", [([ir_scene(i / 10) for i in range(3)], 10)])
    vis_video = write_video(tmp_path / "vis.mp4",
                            [([vis_scene(i / 10, 32, 48) for i in range(3)], 10)])
    assert main(["fuse", "--ir", str(ir_video), "--vis", str(vis_video), "-o",
                 str(tmp_path / "o.mp4")]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"streamfuse fuse: error: {ir_video} + {vis_video}: IR frames are "
                            f"{WIDTH}x{HEIGHT} but visible frames are 48x32")
    assert "--calibration" in error
