"""Letting glibc's malloc keep freed memory, for the commands that run PyTorch on the CPU in a batch.

glibc serves every request above 32 MB with a fresh ``mmap`` and unmaps it when it is freed, so
each full-size feature map PyTorch allocates (84 MB at 640x512) has its pages faulted in again,
call after call: the eager engine ran 1.56x (fp32) and 1.71x (bf16) faster at 640x512 with that
turned off (``bench/allocator_env.py``), for 0.3-0.6 GB more peak memory. It is a setting of
the whole process, so only the commands that own their process and run PyTorch on many pairs
(``streamfuse fuse`` on images, ``streamfuse eval``, ``streamfuse train``) turn it on; the
library, ``streamfuse run`` and ``streamfuse bench`` do not.
"""

from __future__ import annotations

import ctypes

# mallopt parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
# Freed memory at the top of the heap is returned to the system only above this (2 GiB - 1).
KEEP_UP_TO_BYTES = 2**31 - 1


def keep_freed_memory() -> bool:
    """Make this process's glibc malloc take large blocks from its heap and keep freed memory
    for reuse (``mallopt(M_MMAP_MAX, 0)``, a 2 GiB trim threshold). Returns whether it did: False
    where the C library has no ``mallopt`` (macOS, Windows) or refuses it."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_UP_TO_BYTES))
