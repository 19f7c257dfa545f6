"""Early checks that an output can be written, so a job fails before its work instead of after it."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from streamfuse.errors import StreamFuseError


def output_path(text: str) -> Path:
    """argparse ``type`` of an output option: a path, refusing an empty one, which Python would
    read as the current folder (``-o ''`` wrote a folder's fused pairs into it)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty path; name the file or folder to write")
    return Path(text)


def check_writable_folder(folder: str | Path, flag: str) -> Path:
    """Create ``folder`` if it is missing and prove a file can be made in it; otherwise raise a
    one-line StreamFuseError naming ``flag`` (e.g. ``-o`` or ``sinks.folder.path``) and the fix."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise StreamFuseError(f"{flag} {folder}: this is a file, not a folder; name a folder")
    _probe(folder, flag, folder)
    return folder


def check_writable_file(path: str | Path, flag: str) -> Path:
    """Prove ``path`` can be written (creating its missing folders) without touching an existing
    file there; otherwise raise a one-line StreamFuseError naming ``flag`` and the fix."""
    path = Path(path)
    if path.is_dir():
        raise StreamFuseError(f"{flag} {path}: this is a folder; name a file in it")
    if path.exists() and not os.access(path, os.W_OK):
        raise StreamFuseError(f"{flag} {path}: the file is read-only; name another file or make it writable")
    _probe(path.parent, flag, path)
    return path


def _probe(folder: Path, flag: str, named: Path) -> None:
    blocker = next((parent for parent in (folder, *folder.parents) if parent.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise StreamFuseError(f"{flag} {named}: {blocker} is a file, not a folder; name a path in a folder")
    # Permission bits alone do not tell (root, read-only mounts, /proc): make and remove a file.
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".streamfuse-probe-"):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise StreamFuseError(f"{flag} {named}: cannot write in {folder} ({reason}); "
                              "name a path in a writable folder") from None
