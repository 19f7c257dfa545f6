"""Every command that writes a file proves it can before its work, with a one-line error naming
the option and the fix (not after minutes of fusing, training or timing)."""

import time

import pytest

from conftest import REPO_ROOT
from streamfuse.cli import main
from streamfuse.errors import StreamFuseError
from streamfuse.outputs import check_writable_file, check_writable_folder


@pytest.fixture
def blocker(tmp_path):
    """A plain file where a command would need a folder."""
    path = tmp_path / "a-file"
    path.write_text("not a folder\n")
    return path


def test_missing_folders_are_made_and_the_probe_leaves_nothing(tmp_path):
    target = tmp_path / "new" / "deeper" / "out.json"
    assert check_writable_file(target, "-o") == target
    assert target.parent.is_dir() and list(target.parent.iterdir()) == []
    folder = check_writable_folder(tmp_path / "frames", "sinks.folder.path")
    assert folder.is_dir() and list(folder.iterdir()) == []


def test_what_cannot_be_written_is_named(tmp_path, blocker):
    with pytest.raises(StreamFuseError, match=rf"^-o {tmp_path}: this is a folder; name a file in it$"):
        check_writable_file(tmp_path, "-o")
    with pytest.raises(StreamFuseError, match=rf"^--csv {blocker / 'x' / 't.csv'}: {blocker} is a file, not a folder"):
        check_writable_file(blocker / "x" / "t.csv", "--csv")
    with pytest.raises(StreamFuseError, match=rf"^out_dir {blocker}: this is a file, not a folder"):
        check_writable_folder(blocker, "out_dir")
    # /proc takes no new files even for root, whom permission bits do not stop.
    with pytest.raises(StreamFuseError, match=r"^-o /proc/fused.mp4: cannot write in /proc \(.*\); name a path"):
        check_writable_file("/proc/fused.mp4", "-o")


@pytest.mark.parametrize("command, flag", [
    (["run", str(REPO_ROOT / "configs" / "demo.yaml"), "--stats", "{out}/stats.json"], "--stats"),
    (["run", str(REPO_ROOT / "configs" / "demo.yaml"), "--set", "sinks.video.path={out}/f.mp4"], "sinks.video.path"),
    (["run", str(REPO_ROOT / "configs" / "demo.yaml"), "--set", "sinks.folder.path={out}/frames"], "sinks.folder.path"),
    (["bench", "--resolutions", "64x48", "--engines", "eager", "--precisions", "fp32", "-o", "{out}/b.json"], "-o"),
    (["export", "-o", "{out}/net.onnx"], "-o"),
    (["record", "tcp://127.0.0.1:1", "--timeout", "30", "-o", "{out}/rec.mp4"], "-o"),
])
def test_commands_refuse_an_unwritable_output_at_once(blocker, capsys, command, flag):
    started = time.monotonic()
    code = main([part.replace("{out}", str(blocker)) for part in command])
    elapsed = time.monotonic() - started
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2
    assert f"error: {flag} {blocker}/" in error and f"{blocker} is a file, not a folder" in error
    # Before the work: no fusing, no timing, no 30 s wait for a publisher.
    assert elapsed < 10


@pytest.mark.parametrize("command, message", [
    (["bench", "--seconds", "-1"], "--seconds -1: must be at least 0"),
    (["bench", "--warmup", "-3"], "--warmup -3: must be at least 0"),
    (["bench", "--min-iterations", "0"], "--min-iterations 0: must be at least 1"),
    (["calibrate", "--auto", "--ir", "a.png", "--vis", "b.png", "-o", "c.yaml", "--max-pairs", "0"],
     "--max-pairs 0: must be at least 1"),
    (["calibrate", "--auto", "--ir", "a.png", "--vis", "b.png", "-o", "c.yaml", "--workers", "0"],
     "--workers 0: must be at least 1"),
    (["run", str(REPO_ROOT / "configs" / "demo.yaml"), "--set", "limits.frames=-1"],
     "--set limits.frames: key 'limits.frames' must be at least 1 (or null for no limit), got -1"),
    (["run", str(REPO_ROOT / "configs" / "demo.yaml"), "--set", "stats_interval_s=0"],
     "key 'stats_interval_s' must be positive"),
])
def test_counts_and_times_that_cannot_work_are_refused(capsys, command, message):
    assert main(command) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("command, flag", [
    (["fuse", "--ir", str(REPO_ROOT / "samples" / "pairs" / "ir"), "--vis",
      str(REPO_ROOT / "samples" / "pairs" / "vis"), "-o", ""], "-o/--output"),
    (["export", "-o", " "], "-o/--output"),
    (["calibrate", "--auto", "--ir", "a.png", "--vis", "b.png", "-o", ""], "-o/--output"),
    (["eval", "--data", "x", "--json", ""], "--json"),
    (["run", str(REPO_ROOT / "configs" / "demo.yaml"), "--stats", ""], "--stats"),
])
def test_an_empty_output_path_is_refused_not_read_as_the_current_folder(tmp_path, monkeypatch,
                                                                        capsys, command, flag):
    # Python reads '' as '.': `fuse -o ''` wrote a folder's fused pairs into the current folder.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_status:  # argparse's usage error
        main(command)
    assert exit_status.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.endswith(f"error: argument {flag}: empty path; name the file or folder to write")
    assert list(tmp_path.iterdir()) == []
