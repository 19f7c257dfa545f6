"""`streamfuse import-weights`: convert the authors' public encoder/decoder pair to our format."""

from __future__ import annotations

import argparse
from pathlib import Path

from streamfuse.checkpoint import import_authors_weights, save_checkpoint
from streamfuse.outputs import check_writable_file, output_path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "import-weights", help="convert the authors' DIDFuse checkpoint pair",
        description="Read the authors' public encoder and decoder checkpoints (loaded with "
        "weights_only=True) and write one StreamFuse checkpoint.",
    )
    parser.add_argument("--encoder", required=True, type=Path, help="the authors' encoder file (cov1..cov4)")
    parser.add_argument("--decoder", required=True, type=Path, help="the authors' decoder file (cov5..cov7)")
    parser.add_argument("-o", "--output", required=True, type=output_path, help="StreamFuse checkpoint to write (.pt)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_writable_file(args.output, "-o")
    model = import_authors_weights(args.encoder, args.decoder)
    metadata = {
        "source": "authors' public checkpoints",
        "encoder_file": args.encoder.name,
        "decoder_file": args.decoder.name,
        "training": "DIDFuse authors (IJCAI 2020 public code)",
    }
    path = save_checkpoint(model, args.output, metadata)
    print(f"wrote {path}")
    return 0
