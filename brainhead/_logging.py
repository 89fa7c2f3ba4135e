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
    log = _QuarterLog(desc, total)
    for item in items:
        yield item
        log.advance(1)
    log.close()


class _QuarterLog:
    """Log lines at the start, at each quarter (when the length is known) and the end."""

    def __init__(self, desc: str, total: int | None):
        import time

        self.desc, self.total, self.n, self.mark = desc, total, 0, 0.25
        self.start = time.monotonic()
        logger.info("%s: started (%s steps)", desc, total if total is not None else "?")

    def advance(self, n: int, what: str | None = None) -> None:
        import time

        self.n += n
        total = self.total
        if total and self.n < total and self.n / total >= self.mark:
            logger.info("%s: %d/%d done (%.1f s)%s", self.desc, self.n, total,
                        time.monotonic() - self.start, f", {what}" if what else "")
            while self.n / total >= self.mark:
                self.mark += 0.25

    def close(self) -> None:
        import time

        logger.info("%s: %d steps done in %.1f s", self.desc, self.n,
                    time.monotonic() - self.start)


class ProgressBar:
    """A progress bar advanced by hand, for steps that happen inside other functions.

    The same bar and log lines as :func:`progress`, for work whose steps are not one
    loop of the caller (ridge folds inside a layer fit, then the layer's permutations):
    the caller passes :meth:`advance` down as a callback. ``what`` names the step that
    just ended; the bar shows it, and the quarter lines of the log carry it.

    Examples
    --------
    >>> with ProgressBar("sub-01 trained", total=3) as bar:
    ...     for fold in range(3):
    ...         bar.advance(what=f"ridge fold {fold + 1}/3")
    """

    def __init__(self, desc: str, total: int):
        from tqdm.auto import tqdm

        self._bar = tqdm(desc=desc, total=total, leave=False,
                         disable=bool(os.environ.get("BRAINHEAD_NO_PROGRESS")))
        self._log = _QuarterLog(desc, total)

    def advance(self, n: int = 1, what: str | None = None) -> None:
        """Count ``n`` finished steps; ``what`` says which."""
        if what is not None:
            self._bar.set_postfix_str(what, refresh=False)
        self._bar.update(n)
        self._log.advance(n, what)

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc) -> bool:
        self._bar.close()
        if exc[0] is None:
            self._log.close()
        return False


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
