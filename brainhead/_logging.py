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
    """Wrap a long loop in a tqdm bar; silent when ``BRAINHEAD_NO_PROGRESS`` is set."""
    from tqdm.auto import tqdm

    disable = bool(os.environ.get("BRAINHEAD_NO_PROGRESS"))
    return iter(tqdm(iterable, desc=desc, total=total, disable=disable, leave=False))
