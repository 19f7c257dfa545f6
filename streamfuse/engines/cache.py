"""On-disk caches of built engines: where they live and the digest that keys them."""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from pathlib import Path
from typing import Callable, TypeVar

import torch
from torch import nn

T = TypeVar("T")


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


class ShapeCache(OrderedDict):
    """Built engines by input shape, the least recently used dropped beyond ``capacity`` (a
    folder of many image sizes must not keep one compiled model per size alive)."""

    def __init__(self, capacity: int = 8):
        super().__init__()
        self.capacity = capacity

    def get_or_build(self, shape: tuple[int, ...], build: Callable[[], T]) -> T:
        if shape in self:
            self.move_to_end(shape)
        else:
            self[shape] = build()
            while len(self) > self.capacity:
                self.popitem(last=False)
        return self[shape]
