"""How many threads a fit may use: torch intra-op threads and the BLAS/OpenMP pools.

On a machine with few cores, or one shared with other jobs, extra threads of a
small network or of gradient-boosted trees mostly spin-wait: a BiLSTM ``train``
on a busy 2-core machine took over 9 minutes with 2 torch threads against
338 s with 1 (issue 13). :func:`default_threads` is therefore 1 on machines with
at most 2 cores, and half the cores (at most 8) above that.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from ephys2tx.errors import InputError

__all__ = ["MAX_THREADS", "available_cores", "default_threads", "limit_threads", "resolve_threads"]

MAX_THREADS = 256


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS reports it)."""
    if hasattr(os, "sched_getaffinity"):
        return max(len(os.sched_getaffinity(0)), 1)
    return os.cpu_count() or 1


def default_threads(cores: int | None = None) -> int:
    """1 with at most 2 cores; else half the cores, at most 8."""
    cores = available_cores() if cores is None else int(cores)
    return 1 if cores <= 2 else min(cores // 2, 8)


def resolve_threads(threads: int | None = None) -> int:
    """``threads``, checked (1 to :data:`MAX_THREADS`), or :func:`default_threads` when None."""
    n = default_threads() if threads is None else threads
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_THREADS:
        raise InputError(f"--threads must be a whole number from 1 to {MAX_THREADS}, got {threads!r}.")
    return n


@contextmanager
def limit_threads(threads: int | None = None, *, torch: bool = False) -> Iterator[int]:
    """Run the block with at most ``threads`` torch, BLAS and OpenMP threads each.

    Parameters
    ----------
    threads : int, optional
        Default :func:`default_threads`.
    torch : bool
        Also set torch's intra-op threads (imports torch). Without it, torch is
        still limited if it is already imported; a model that needs torch says so.

    Yields
    ------
    int
        The thread count applied. The previous settings are restored after the block.
    """
    n = resolve_threads(threads)
    from threadpoolctl import threadpool_limits

    torch_module = None
    if torch or "torch" in sys.modules:
        import torch as torch_module
    before = None if torch_module is None else torch_module.get_num_threads()
    try:
        if torch_module is not None:
            torch_module.set_num_threads(n)
        with threadpool_limits(limits=n):
            yield n
    finally:
        if torch_module is not None:
            torch_module.set_num_threads(before)
