"""The `streamfuse` command: one sub-command per module, registered below."""

from __future__ import annotations

import argparse
import importlib
import sys

from streamfuse import __version__
from streamfuse.errors import StreamFuseError

# Each module defines `register(subparsers)`, which adds its parser and sets `func`.
COMMAND_MODULES: list[str] = [
    "streamfuse.commands.bench",
    "streamfuse.commands.calibrate",
    "streamfuse.commands.eval",
    "streamfuse.commands.export",
    "streamfuse.commands.fuse",
    "streamfuse.commands.record",
    "streamfuse.commands.run",
    "streamfuse.commands.train",
    "streamfuse.commands.view",
    "streamfuse.commands.weights",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamfuse", description="Fuse infrared and visible images and video with DIDFuse."
    )
    parser.add_argument("--version", action="version", version=f"streamfuse {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except StreamFuseError as error:
        print(f"streamfuse {args.command}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        # A path the system refused (no such folder, no permission, disk full): name it, in one
        # line; the commands' own checks give the more specific messages.
        where = f"{error.filename}: " if error.filename else ""
        print(f"streamfuse {args.command}: error: {where}{error.strerror or error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"streamfuse {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
