"""Thread limits of one pipeline step.

Snakemake runs the ``run:`` blocks of local jobs inside its own process, several at a
time, and torch and the BLAS libraries each default to one thread per core. Jobs that
each start that many threads oversubscribe the cores that Snakemake meant to share out:
the align step of a demo sEEG subject took 87 s with torch's 2 threads on a busy
2-core machine, 25 s with 1. :func:`limit_threads` caps both at the rule's ``threads``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def limit_threads(n_threads: int | None) -> Iterator[None]:
    """Cap torch's intra-op threads and the BLAS/OpenMP pools at ``n_threads``.

    Both are process-wide settings: concurrent jobs of one Snakemake process should
    declare the same ``threads``. The previous torch setting is restored on exit.

    Parameters
    ----------
    n_threads : int or None
        None leaves every library as it is.
    """
    if n_threads is None:
        yield
        return
    if int(n_threads) < 1:
        raise ValueError(f"n_threads must be >= 1, got {n_threads!r}")
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(int(n_threads))
    try:
        with threadpool_limits(limits=int(n_threads)):
            yield
    finally:
        torch.set_num_threads(before)
