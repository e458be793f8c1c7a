"""Keep a serving process's resident memory flat under sustained load (serving processes only).

glibc's malloc gives each thread that allocates its own arena (up to 8 per core). Requests run in
anyio's pool of up to 40 worker threads, so a busy server spreads its small allocations over dozens
of arenas, each holding on to freed pages: resident memory creeps up for minutes under a soak
without any object being leaked. Two arenas are enough for one event loop plus worker threads
that mostly wait on the GIL.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

logger = logging.getLogger("slotfill.service")

M_ARENA_MAX = -8  # from glibc's <malloc.h>
ARENAS = 2


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas (``mallopt(M_ARENA_MAX, arenas)``); False where there is no glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl (Alpine) has no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt(M_ARENA_MAX, arenas) == 1
