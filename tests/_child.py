"""A test module run again as a child process, for the SIGKILL-then-resume tests."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def child_process(script: str | Path, root: Path) -> Iterator[subprocess.Popen]:
    """Run ``python script root`` from the repository root (one thread, no progress
    bars), output captured; on exit the child is killed if it still runs."""
    here = Path(script).resolve()
    env = {**os.environ, "BRAINHEAD_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(here), str(root)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=here.parents[1])
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
