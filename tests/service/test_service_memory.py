"""A serving process caps glibc's malloc arenas, so its memory does not creep up under load."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from service_testlib import REPO


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_serving_process_limits_malloc_arenas() -> None:
    """In a serving process, threads that allocate share two arenas instead of getting one each.

    glibc reports its arenas in malloc_info(); count them after 16 threads, alive at the same time,
    allocated and freed."""
    script = textwrap.dedent("""
        import ctypes, sys, threading
        from service.app import configure_process
        from service.settings import Settings

        if sys.argv[1] == "serving":
            configure_process(Settings())

        together = threading.Barrier(16)

        def churn():
            # All 16 threads are alive at once (an exited thread's arena is reused by the next one).
            together.wait()
            blocks = [bytearray(2000) for _ in range(2000)]
            together.wait()
            del blocks

        threads = [threading.Thread(target=churn) for _ in range(16)]
        for thread in threads: thread.start()
        for thread in threads: thread.join()
        libc = ctypes.CDLL("libc.so.6")
        libc.open_memstream.restype = ctypes.c_void_p
        libc.open_memstream.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_size_t)]
        libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
        libc.fclose.argtypes = [ctypes.c_void_p]
        size, pointer = ctypes.c_size_t(), ctypes.c_void_p()
        stream = libc.open_memstream(ctypes.byref(pointer), ctypes.byref(size))
        libc.malloc_info(0, stream)
        libc.fclose(stream)
        print(ctypes.string_at(pointer.value, size.value).decode().count("<heap nr="))
    """)
    counts = {}
    for mode in ("plain", "serving"):
        result = subprocess.run([sys.executable, "-c", script, mode], cwd=REPO, capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, result.stderr
        counts[mode] = int(result.stdout.strip())
    assert counts["serving"] <= 2 < 4 <= counts["plain"], counts
