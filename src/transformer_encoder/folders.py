"""Output folders that appear whole or not at all: a refused or failed run leaves nothing behind."""

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def staged_folder(destination: Path):
    """Yield a fresh folder beside `destination` to write into; it becomes `destination` (new or empty) when the
    block completes, and is removed if the block fails."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}-", dir=destination.parent))
    try:
        yield staging
        if destination.exists():
            destination.rmdir()
        os.replace(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
