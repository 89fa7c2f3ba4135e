"""Logging and progress bars shared by every brainhead step."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

logger = logging.getLogger("brainhead")

T = TypeVar("T")


def setup_logging(log_file: str | os.PathLike | None = None, level: int = logging.INFO) -> None:
    """Send brainhead's log to stderr and, when given, to a (Snakemake) log file."""
    logger.setLevel(level)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
               for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(fmt)
        logger.addHandler(handler)
    if log_file is not None:
        handler = logging.FileHandler(log_file, mode="w")
        handler.setFormatter(fmt)
        logger.addHandler(handler)


def progress(iterable: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    """Wrap a long loop in a tqdm bar and log its progress.

    The bar goes to stderr (the terminal), silent when ``BRAINHEAD_NO_PROGRESS`` is set;
    the log (and so the rule's log file) gets a line when the loop starts, at each
    quarter of it (when its length is known) and when it ends, with the elapsed time.
    ``desc`` says what is done to which subject, e.g. ``"sub-01: runs"``.
    """
    from tqdm.auto import tqdm

    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    disable = bool(os.environ.get("BRAINHEAD_NO_PROGRESS"))
    bar = tqdm(iterable, desc=desc, total=total, disable=disable, leave=False)
    return _logged(bar, desc, total)


def _logged(items: Iterable[T], desc: str, total: int | None) -> Iterator[T]:
    import time

    start = time.monotonic()
    logger.info("%s: started (%s steps)", desc, total if total is not None else "?")
    n, mark = 0, 0.25
    for item in items:
        yield item
        n += 1
        if total and n < total and n / total >= mark:
            logger.info("%s: %d/%d done (%.1f s)", desc, n, total, time.monotonic() - start)
            while n / total >= mark:
                mark += 0.25
    logger.info("%s: %d steps done in %.1f s", desc, n, time.monotonic() - start)


class log_to:
    """Context manager: copy brainhead's log into ``log_file`` for one step.

    Snakemake's ``run:`` blocks execute inside the scheduler process, so each job adds
    its own handler and removes it when done, leaving nothing behind.
    """

    def __init__(self, log_file: str | os.PathLike):
        self.log_file = log_file
        self.handler: logging.Handler | None = None

    def __enter__(self):
        os.makedirs(os.path.dirname(os.path.abspath(self.log_file)), exist_ok=True)
        self.handler = logging.FileHandler(self.log_file, mode="w")
        self.handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(self.handler)
        logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc):
        if exc[0] is not None:
            logger.error("step failed: %s", exc[1])
        logger.removeHandler(self.handler)
        self.handler.close()
        return False
