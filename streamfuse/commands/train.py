"""`streamfuse train`: train DIDFuse from a YAML config (defaults: the paper's schedule)."""

from __future__ import annotations

import argparse

from streamfuse.allocator import keep_freed_memory
from streamfuse.config import load_yaml, parse_overrides, from_mapping
from streamfuse.train import TrainConfig, train


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train the network on IR/visible pairs",
        description="Train DIDFuse (paper eq. 1-5). Every setting lives in the YAML config; "
        "--set overrides single keys. State is saved every epoch; --resume continues a run.",
    )
    parser.add_argument("config", nargs="?", help="YAML training config (e.g. configs/train.yaml); defaults are the paper's")
    parser.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE", help="override a config key, e.g. optim.epochs=10")
    parser.add_argument("--resume", action="store_true", help="continue the run in out_dir from its last completed epoch")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.config:
        config = load_yaml(TrainConfig, args.config, args.overrides)
    else:
        config = from_mapping(TrainConfig, parse_overrides(args.overrides), "--set")
    keep_freed_memory()  # batches of full-size maps and their gradients: see streamfuse.allocator
    model_path = train(config, resume=args.resume)
    print(f"weights written to {model_path}")
    return 0
