"""streamfuse.allocator: glibc's malloc keeps large freed blocks on its heap once told to."""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys

import pytest

# In a child process: this one's allocator stays as it is for the other tests.
PROBE = r"""
import ctypes, json, sys
import numpy as np
from streamfuse.allocator import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks",
                "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
mapped_before = libc.mallinfo2().hblkhd
block = np.ones(100 * 2**20, np.uint8)  # 100 MiB: above glibc's largest mmap threshold
mapped = libc.mallinfo2().hblkhd - mapped_before
del block
print(json.dumps({"applied": applied, "mapped_mib": mapped / 2**20,
                  "heap_free_mib": libc.mallinfo2().fordblks / 2**20}))
"""


def _has_mallinfo2() -> bool:
    try:
        return hasattr(ctypes.CDLL(None), "mallinfo2")
    except OSError:
        return False


def _probe(mode: str) -> dict:
    result = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                            check=True)
    return json.loads(result.stdout)


@pytest.mark.skipif(not _has_mallinfo2(), reason="needs glibc >= 2.33 (mallinfo2) to look at "
                    "the allocator; elsewhere keep_freed_memory returns False and changes nothing")
def test_keep_freed_memory_serves_large_blocks_from_the_heap_and_keeps_them():
    default, kept = _probe("default"), _probe("keep")
    assert default["mapped_mib"] >= 100  # glibc's default: a fresh mapping, unmapped when freed
    assert kept["applied"] is True
    assert kept["mapped_mib"] == 0
    assert kept["heap_free_mib"] >= 100  # freed, and kept for the next map of that size
