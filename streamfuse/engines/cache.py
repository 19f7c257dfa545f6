"""On-disk caches of built engines: where they live and the digest that keys them."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import nn


def cache_root(cache_dir: str | Path | None, engine: str) -> Path:
    """``cache_dir/engine``; ``cache_dir`` defaults to ``$STREAMFUSE_CACHE`` or ``~/.cache/streamfuse``."""
    if cache_dir is None:
        cache_dir = os.environ.get("STREAMFUSE_CACHE") or Path.home() / ".cache" / "streamfuse"
    path = Path(cache_dir) / engine
    path.mkdir(parents=True, exist_ok=True)
    return path


def network_digest(net: nn.Module, *parts: object) -> str:
    """SHA-256 (first 24 hex digits) of ``net``'s tensors (names, dtypes, shapes, values), its
    ``repr`` (layers and fusion settings) and ``parts`` (shape, precision, device, versions):
    a built engine may be reused only when all of these match."""
    digest = hashlib.sha256(repr(net).encode())
    for name, tensor in sorted(net.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    for part in parts:
        digest.update(repr(part).encode())
    return digest.hexdigest()[:24]
