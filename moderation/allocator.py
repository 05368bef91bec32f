"""How a model process's C allocator treats the memory PyTorch frees: keep it for the next batch, or give it back.

PyTorch allocates CPU tensors with the C library's ``malloc`` and has no caching allocator of its own on the CPU.
glibc serves every block above its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and unmaps it again on
``free``, trims the heap's free top back to the OS, and gives threads arenas of their own whose heaps hold at most
64 MiB. A forward pass allocates its activations anew, so on glibc's defaults every batch faults its working set
in again, one 4 KiB page at a time, and the kernel zeroes each page first. Measured on this project's models on a
2-core CPU (docs/BENCHMARKS.md): 1.2 to 2.3 million page faults per 640 posts, 16-25% of the models' CPU time
spent in the kernel. ``reuse`` turns that off: no ``mmap`` for large blocks, no trimming below 2 GiB of free
heap, one arena for all threads, so a batch reuses the pages the batch before it freed. The cost is that the
process keeps its peak heap: the largest batch's working set stays resident, which a long-running worker needs
again anyway.

The settings must be made before the process starts its threads: a thread keeps the arena it first allocated
from. Only glibc has these knobs; elsewhere (macOS, musl) ``reuse`` changes nothing.

:func:`freeze_loaded_objects` is the same idea for Python's own heap: what a model process loaded at start-up
lives as long as the process, so the cyclic garbage collector need not walk it again at every full collection.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import platform

from moderation.settings import HostAllocator

log = logging.getLogger(__name__)

# glibc's mallopt parameters (malloc.h) and the values ``reuse`` gives them.
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX, M_ARENA_MAX = -1, -2, -4, -8
REUSE = (
    (M_MMAP_MAX, 0),  # every block from the heap, so a freed block is reused, never unmapped
    (M_TRIM_THRESHOLD, 2**31 - 1),  # trim the heap only past 2 GiB of free top (mallopt takes an int)
    (M_TOP_PAD, 64 << 20),  # grow the heap 64 MiB at a time
    (M_ARENA_MAX, 1),  # threads share the main heap: other arenas' heaps hold 64 MiB and mmap what is larger
)


def configure_allocator(mode: HostAllocator) -> bool:
    """Apply ``mode`` to this process's allocator; True if it changed anything (``reuse`` on glibc)."""
    if mode == "system":
        return False
    if platform.libc_ver()[0] != "glibc":
        log.info("MODERATION_HOST_ALLOCATOR=reuse needs glibc; this C library keeps its own defaults")
        return False
    libc = ctypes.CDLL(None)
    refused = [param for param, value in REUSE if libc.mallopt(param, value) != 1]
    if refused:
        log.warning("glibc refused mallopt parameters %s; those keep their defaults", refused)
    return len(refused) < len(REUSE)


def freeze_loaded_objects() -> None:
    """Collect once, then move every object alive now out of the garbage collector's generations (``gc.freeze``).

    Call it once the models are loaded. Their modules, tokenizers and configs are most of a worker's Python
    objects, and every full collection walked them all again, triggered by the objects each batch creates. With
    the models and image decode stubbed, one thread's host path went from about 4,200 to 5,400 posts/s by
    reference on a 2-core CPU (docs/BENCHMARKS.md). Frozen objects are never freed; nothing loaded at start-up is
    meant to be.
    """
    gc.collect()
    gc.freeze()
